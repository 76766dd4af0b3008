"""The online engine: many records in flight, at the provider's limit, never paying twice.

Workers take record indices in order. Each walks its record through the cache (`RecordWalker`), sends
the one request the record needs next, stores the answer, and walks again until the row is finished.
Every request passes the `RateLimiter` (requests and tokens per minute, client side, so the provider
rarely has to say 429); a 429 pauses everyone for its Retry-After; 5xx, timeouts and connection errors
are retried with jittered exponential backoff; a request that keeps failing fails its record with the
reason and the run goes on. The spending cap stops new records from starting; records in flight finish.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from distill.providers.protocol import Provider, ProviderFault, TeacherReply
from distill.synthesis.cache import AnswerCache
from distill.synthesis.cost import CHARS_PER_TOKEN, Price
from distill.synthesis.records import Pending, RecordWalker

TPM_BURST_SECONDS = 10  # the token bucket holds this many seconds' worth of tokens per minute


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


class Engine:
    def __init__(self, walker: RecordWalker, provider: Provider, cache: AnswerCache, *, price: Price,
                 concurrency: int, limiter: Limiter, timeout_s: float, max_retries: int,
                 spent_before: float = 0.0, max_cost_usd: float | None = None, backoff: Backoff | None = None,
                 on_row: Callable[[dict[str, Any], bool], None] = lambda row, cached: None):
        self.walker, self.provider, self.cache, self.price = walker, provider, cache, price
        self.concurrency, self.limiter = concurrency, limiter
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.spent_before, self.max_cost_usd = spent_before, max_cost_usd
        self.backoff = backoff or Backoff()
        self.on_row = on_row
        self.tally = Tally()

    @property
    def over_cap(self) -> bool:
        return self.max_cost_usd is not None and self.spent_before + self.tally.spent_usd >= self.max_cost_usd

    async def run(self, indices: list[int]) -> None:
        queue = iter(indices)

        async def worker() -> None:
            for index in queue:  # a shared iterator: each index is taken by exactly one worker
                if self.over_cap:
                    self.tally.stopped_by_cap = True
                    return
                await self._finish_record(index)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))

    async def _finish_record(self, index: int) -> None:
        sent_any = False
        while isinstance(outcome := self.walker.advance(index), Pending):
            sent_any = True
            await self._send(outcome)
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

    async def _send(self, pending: Pending) -> None:
        """Answer one request into the cache (usable or not), or record why it kept failing."""
        request = pending.request
        estimate = sum(len(m.content) for m in request.messages) // CHARS_PER_TOKEN + int(request.params.get("max_tokens", 0))
        for attempt in range(self.max_retries + 1):
            await self.limiter.acquire(estimate)
            self.tally.requests += 1
            try:
                reply = await asyncio.wait_for(self.provider.complete(request), self.timeout_s)
            except (ProviderFault, asyncio.TimeoutError) as exc:
                self.limiter.correct(estimate, 0)
                fault = exc if isinstance(exc, ProviderFault) else ProviderFault(
                    f"timed out after {self.timeout_s:g} s", retryable=True)
                if fault.retry_after is not None:
                    self.tally.rate_limited += 1
                    self.limiter.pause(fault.retry_after)
                if not fault.retryable or attempt == self.max_retries:
                    tries = f" (after {attempt + 1} attempts)" if fault.retryable else ""
                    self.walker.faults[pending.key] = f"provider error: {fault.reason}{tries}"
                    return
                self.tally.retries += 1
                await asyncio.sleep(fault.retry_after if fault.retry_after is not None else self.backoff.delay(attempt))
                continue
            self.limiter.correct(estimate, reply.input_tokens + reply.output_tokens)
            self.store(pending.key, reply, self.price.cost(reply.input_tokens, reply.output_tokens))
            return

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
