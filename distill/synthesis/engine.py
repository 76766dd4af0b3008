"""The online engine: many records in flight, at the provider's limit, never paying twice.

Workers take record indices in order. Each walks its record through the cache (`RecordWalker`), sends
the one request the record needs next, stores the answer, and walks again until the row is finished.
Every request passes the `RateLimiter` (requests and tokens per minute, client side, so the provider
rarely has to say 429); a 429 pauses everyone for its Retry-After, said on stderr, up to
`max_retry_wait_s` (a Retry-After past it fails the request at once, with the reason: the record is sent
again by the next run); 5xx, timeouts and connection errors are retried with jittered exponential backoff;
a request that keeps failing fails its record with the reason and the run goes on.

The spending cap is hard (`distill.synthesis.spending`): before a request is sent, its worst case (every
prompt byte a token, and the whole max_tokens at the output price) is reserved against the cap, and a
request whose reservation does not fit is not sent; its record stays unfinished for a resumed run. So
concurrent requests can never overshoot the cap together. When the first requests all fail the same way and none has succeeded (a
wrong key, a forbidden or unknown model), the engine stops after a few instead of sending all N.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from distill.keys import keys_in_use, redact_secrets
from distill.providers.protocol import Provider, ProviderFault, TeacherReply
from distill.synthesis.cache import AnswerCache
from distill.synthesis.cost import CHARS_PER_TOKEN, Price
from distill.synthesis.records import Pending, RecordWalker
from distill.synthesis.spending import Cap, SpendingCap

TPM_BURST_SECONDS = 10  # the token bucket holds this many seconds' worth of tokens per minute
SAME_FAILURE_LIMIT = 3  # identical non-retryable failures, with no success yet, that stop the run
MESSAGE_OVERHEAD_TOKENS = 8  # per message: role and framing tokens the provider adds


class Limiter(Protocol):
    """What every request passes before it is sent. `RateLimiter` is the one-process limiter; a
    distributed executor passes one that asks a budget shared by all its processes
    (`distill.scale.ray_budget.SharedLimiter`)."""

    async def acquire(self, estimated_tokens: int) -> None:
        """Return when one request estimated at `estimated_tokens` may be sent."""

    def correct(self, estimated_tokens: int, actual_tokens: int) -> None:
        """The request used `actual_tokens` (0 when it failed), not the estimate."""

    def pause(self, seconds: float) -> None:
        """The provider said 429: nobody sends anything for `seconds`."""


class RateLimiter:
    """Client-side limits shared by all workers: requests per minute (evenly spaced) and tokens per
    minute (a bucket charged with an estimate before sending and corrected with the real usage after)."""

    def __init__(self, rpm: int | None, tpm: int | None):
        self.interval = 60.0 / rpm if rpm else 0.0
        self.tpm = tpm
        self.next_slot = 0.0
        self.paused_until = 0.0
        self.tokens = float(tpm * TPM_BURST_SECONDS / 60) if tpm else 0.0
        self.stamp = time.monotonic()

    async def acquire(self, estimated_tokens: int) -> None:
        while True:
            now = time.monotonic()
            wait = self.paused_until - now
            if wait <= 0 and self.tpm:
                self._refill(now)
                if self.tokens < min(estimated_tokens, self.tpm * TPM_BURST_SECONDS / 60):
                    wait = (estimated_tokens - self.tokens) * 60 / self.tpm
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        if self.tpm:
            self.tokens -= estimated_tokens
        if self.interval:
            # Reserve the next evenly spaced slot: requests leave at the limit's pace, never in bursts.
            slot = max(now, self.next_slot)
            self.next_slot = slot + self.interval
            if slot > now:
                await asyncio.sleep(slot - now)

    def correct(self, estimated_tokens: int, actual_tokens: int) -> None:
        if self.tpm:
            self.tokens += estimated_tokens - actual_tokens

    def pause(self, seconds: float) -> None:
        """A 429: nobody sends anything for `seconds`, and the request pacing restarts after the pause."""
        until = time.monotonic() + seconds
        self.paused_until = max(self.paused_until, until)
        self.next_slot = max(self.next_slot, until)

    def _refill(self, now: float) -> None:
        capacity = self.tpm * TPM_BURST_SECONDS / 60
        self.tokens = min(capacity, self.tokens + (now - self.stamp) * self.tpm / 60)
        self.stamp = now


@dataclass
class Backoff:
    base_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform over [0.5, 1.5] x base x 2^attempt, capped."""
        return min(self.cap_s, self.base_s * 2 ** attempt) * random.uniform(0.5, 1.5)


@dataclass
class Tally:
    """What this run did, for the progress bar and the summary."""

    done: int = 0
    failed: int = 0
    from_cache: int = 0  # records finished without sending anything
    requests: int = 0  # requests sent (retries included)
    retries: int = 0
    rate_limited: int = 0
    spent_usd: float = 0.0  # paid in this run
    stopped_by_cap: bool = False
    failures: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    answered: int = 0  # requests the provider answered (usable or not)
    aborted: str | None = None  # why the run stopped early: every request failed the same way


class Engine:
    def __init__(self, walker: RecordWalker, provider: Provider, cache: AnswerCache, *, price: Price,
                 concurrency: int, limiter: Limiter, timeout_s: float, max_retries: int,
                 spent_before: float = 0.0, max_cost_usd: float | None = None, cap: Cap | None = None,
                 backoff: Backoff | None = None, on_row: Callable[[dict[str, Any], bool], None] = lambda row, cached: None,
                 max_retry_wait_s: float = 60.0, say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)):
        self.walker, self.provider, self.cache, self.price = walker, provider, cache, price
        self.concurrency, self.limiter = concurrency, limiter
        self.timeout_s, self.max_retries = timeout_s, max_retries
        # Spending: the one-process cap on `max_cost_usd` (None: no cap), of which earlier runs of this run
        # directory spent `spent_before`; or `cap`, shared with other processes.
        self.cap: Cap = cap or SpendingCap(max_cost_usd, spent_before)
        self.backoff = backoff or Backoff()
        self.on_row = on_row
        self.max_retry_wait_s, self.say = max_retry_wait_s, say
        self.said_wait_until = 0.0  # the end of the last pause announced (one line per pause, not per request)
        self.tally = Tally()
        self.same_failures: dict[str, int] = {}  # non-retryable failure kind -> count, before any success

    @property
    def stopped(self) -> bool:
        return self.tally.stopped_by_cap or self.tally.aborted is not None

    def worst_case_usd(self, request: Any, *, batch: bool = False) -> float:
        """The most `request` can cost: every prompt byte a token, and all of max_tokens written."""
        prompt = sum(len(m.content.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for m in request.messages)
        out = int(request.params.get("max_tokens") or 0)
        return self.price.cost(prompt, out, batch=batch, logprob_tokens=out if request.params.get("logprobs") else 0)

    async def reserve(self, usd: float) -> bool:
        """Hold `usd` of the cap for a request about to be sent. False: not sent, because the cap is reached
        (the run stops there) or the run was stopped while the request waited for room."""
        if not await self.cap.reserve(usd):
            self.tally.stopped_by_cap = True
            return False
        if self.stopped:
            await self.cap.settle(usd, 0.0)
            return False
        return True

    async def run(self, indices: list[int]) -> None:
        queue = iter(indices)

        async def worker() -> None:
            for index in queue:  # a shared iterator: each index is taken by exactly one worker
                if self.stopped:
                    return
                await self._finish_record(index)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def _finish_record(self, index: int) -> None:
        sent_any = False
        while isinstance(outcome := self.walker.advance(index), Pending):
            sent_any = True
            if not await self._send(outcome):
                return  # not sent (cap or abort): the record stays unfinished and a resumed run continues it
        self.finish_row(outcome, cached=not sent_any)

    def finish_row(self, row: dict[str, Any], *, cached: bool) -> None:
        if row["status"] == "ok":
            self.tally.done += 1
        else:
            self.tally.failed += 1
            kind = row["failure_reason"].split(": ", 1)[-1].split(":")[0][:40]
            self.tally.failures[kind] = self.tally.failures.get(kind, 0) + 1
        self.tally.from_cache += cached
        self.on_row(row, cached)

    async def _send(self, pending: Pending) -> bool:
        """Answer one request into the cache (usable or not), or record why it kept failing. False: not
        sent, because its worst case does not fit under the cap or the run was stopped."""
        request = pending.request
        estimate = sum(len(m.content) for m in request.messages) // CHARS_PER_TOKEN + int(request.params.get("max_tokens", 0))
        worst = self.worst_case_usd(request)
        for attempt in range(self.max_retries + 1):
            if self.stopped or not await self.reserve(worst):
                return False
            await self.limiter.acquire(estimate)
            self.tally.requests += 1
            try:
                reply = await asyncio.wait_for(self.provider.complete(request), self.timeout_s)
            except (ProviderFault, asyncio.TimeoutError) as exc:
                await self.cap.settle(worst, 0.0)  # a failed request is not billed
                self.limiter.correct(estimate, 0)
                fault = exc if isinstance(exc, ProviderFault) else ProviderFault(
                    f"timed out after {self.timeout_s:g} s", retryable=True)
                if fault.retry_after is not None:
                    self.tally.rate_limited += 1
                    fault = self._obey_retry_after(fault)
                if not fault.retryable or attempt == self.max_retries:
                    tries = f" (after {attempt + 1} attempts)" if fault.retryable else ""
                    reason = redact_secrets(f"provider error: {fault.reason}{tries}", extra=keys_in_use())
                    self.walker.faults[pending.key] = reason
                    return self._count_failure(fault, reason)
                self.tally.retries += 1
                await asyncio.sleep(fault.retry_after if fault.retry_after is not None else self.backoff.delay(attempt))
                continue
            self.tally.answered += 1
            self.limiter.correct(estimate, reply.input_tokens + reply.output_tokens)
            cost = self.price.cost(reply.input_tokens, reply.output_tokens,
                                   logprob_tokens=reply.output_tokens if request.params.get("logprobs") else 0)
            self.store(pending.key, reply, cost)
            await self.cap.settle(worst, cost)
            return True
        return True

    def _obey_retry_after(self, fault: ProviderFault) -> ProviderFault:
        """Pause everyone for the Retry-After the provider asked for, and say so; a wait past
        `max_retry_wait_s` is not waited: the request fails with the reason instead."""
        wait = fault.retry_after or 0.0
        if wait > self.max_retry_wait_s:
            return ProviderFault(f"{fault.reason} (the teacher asks to wait {wait:,.0f} s, more than "
                                 f"teacher.max_retry_wait_s = {self.max_retry_wait_s:g} s: not waited; the next run "
                                 "sends it again)", retryable=False)
        self.limiter.pause(wait)
        until = time.monotonic() + wait
        if wait >= 1 and until > self.said_wait_until + 1:
            self.said_wait_until = until
            self.say(f"teacher rate limit (HTTP 429): waiting {wait:,.0f} s as its Retry-After asks")
        return fault

    def _count_failure(self, fault: ProviderFault, reason: str) -> bool:
        """Stop the run when the first requests all fail the same non-retryable way (a bad key, a forbidden or
        unknown model): sending the rest would only fail the same way. True: the record may finish as failed."""
        if fault.retryable or self.tally.answered:
            return True
        kind = reason.split(" (after", 1)[0]
        self.same_failures[kind] = self.same_failures.get(kind, 0) + 1
        if self.same_failures[kind] >= SAME_FAILURE_LIMIT and self.tally.aborted is None:
            self.tally.aborted = f"the first {SAME_FAILURE_LIMIT} requests all failed the same way: {kind}"
        return self.tally.aborted is None

    def store(self, key: str, reply: TeacherReply, cost: float) -> None:
        """Put a paid answer into the cache: usable, or remembered with why it cannot be used."""
        self.tally.spent_usd += cost
        reason = unusable_reason(reply)
        if reason is None:
            self.cache.put(key, reply, cost)
        else:
            self.cache.put_unusable(key, reply, cost, reason)


def unusable_reason(reply: TeacherReply) -> str | None:
    if reply.finish_reason == "length":
        return f"truncated: the output hit max_tokens ({reply.output_tokens} tokens)"
    if reply.finish_reason == "refusal":
        return f"refused: {reply.text[:200]}"
    if reply.finish_reason == "error":
        return f"provider error: {reply.text[:200]}"
    if not reply.text.strip():
        return "empty output"
    return None
