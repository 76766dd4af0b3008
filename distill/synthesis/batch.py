"""Batch mode: the OpenAI Batch API and Anthropic Message Batches, at the batch discount.

A round collects the next request of every unfinished record (so a multi-step spec runs one round per
step), submits them in chunks within the provider's limits, polls until every batch has finished, and
stores each result in the cache by custom id. Whatever did not come back (an expired or cancelled
batch, an errored item) is simply still missing when the records are walked again, so the next round
resubmits exactly that. Batch ids go to `RUN/generate/batches.json` the moment a batch is created, so
a restarted distill polls and ingests the batches it already paid for instead of submitting again.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Callable

from distill.providers.protocol import ProviderFault, TeacherReply, TeacherRequest
from distill.files import write_json_atomic
from distill.synthesis.engine import Engine
from distill.synthesis.records import Pending
from distill.synthesis.spending import SpendingCap

REQUEST_OVERHEAD_BYTES = 512  # per batch line beyond the messages: ids, method, parameters, JSON syntax


class BatchBook:
    """`batches.json`: every batch submitted for this run, its custom ids' cache keys, and whether its
    results are already in the cache."""

    def __init__(self, path: Path):
        self.path = path
        self.batches: list[dict[str, Any]] = json.loads(path.read_text())["batches"] if path.exists() else []

    def add(self, batch_id: str, provider: str, keys: dict[str, str]) -> None:
        self.batches.append({"id": batch_id, "provider": provider, "keys": keys, "ingested": False})
        self.save()

    def open_batches(self) -> list[dict[str, Any]]:
        return [batch for batch in self.batches if not batch["ingested"]]

    def mark_ingested(self, batch_id: str, status: str) -> None:
        for batch in self.batches:
            if batch["id"] == batch_id:
                batch.update(ingested=True, status=status)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, {"batches": self.batches})


class BatchRunner:
    """Runs records through a batch-capable provider (OpenAIProvider, AnthropicProvider)."""

    def __init__(self, engine: Engine, book: BatchBook, *, poll_s: float,
                 on_status: Callable[[str], None] = lambda message: None):
        self.engine = engine
        self.provider: Any = engine.provider  # the batch methods are not part of the Provider protocol
        self.book = book
        self.poll_s = poll_s
        self.on_status = on_status
        self.submissions: dict[str, int] = {}  # cache key -> times submitted in this process

    async def run(self, indices: list[int]) -> None:
        cap = self.engine.cap
        assert isinstance(cap, SpendingCap), "batch mode runs in one process, with its own cap"
        await self._collect(cap, self.book.open_batches())  # batches a previous process submitted
        remaining = list(indices)
        while remaining:
            pendings: list[Pending] = []
            unfinished = []
            for index in remaining:
                outcome = self.engine.walker.advance(index)
                if isinstance(outcome, Pending):
                    pendings.append(outcome)
                    unfinished.append(index)
                else:
                    self.engine.finish_row(outcome, cached=False)
            remaining = unfinished
            if not pendings:
                return
            if cap.exhausted:
                self.engine.tally.stopped_by_cap = True
                return
            self._give_up_on_repeats(pendings)
            pendings = self._within_cap(cap, [p for p in pendings if p.key not in self.engine.walker.faults])
            submitted = [await self._submit(chunk) for chunk in self._chunks(pendings)]
            await self._collect(cap, submitted)
            if self.engine.tally.stopped_by_cap:
                return

    def _within_cap(self, cap: SpendingCap, pendings: list[Pending]) -> list[Pending]:
        """The pendings whose worst-case batch cost fits under the cap together."""
        fits = []
        for pending in pendings:
            if not cap.try_reserve(self.engine.worst_case_usd(pending.request, batch=True)):
                self.engine.tally.stopped_by_cap = True
                break
            fits.append(pending)
        return fits

    def _give_up_on_repeats(self, pendings: list[Pending]) -> None:
        """A request submitted max_retries + 1 times without a result fails its record."""
        for pending in pendings:
            times = self.submissions.get(pending.key, 0)
            if times > self.engine.max_retries:
                self.engine.walker.faults[pending.key] = f"provider error: no batch result after {times} submissions"

    def _chunks(self, pendings: list[Pending]) -> list[list[Pending]]:
        limit_requests, limit_bytes = self.provider.max_batch_requests, self.provider.max_batch_bytes
        chunks: list[list[Pending]] = [[]]
        size = 0
        for pending in pendings:
            request_bytes = REQUEST_OVERHEAD_BYTES + sum(len(m.content.encode()) for m in pending.request.messages) \
                + len(json.dumps(pending.request.json_schema or {}))
            if chunks[-1] and (len(chunks[-1]) >= limit_requests or size + request_bytes > limit_bytes * 0.95):
                chunks.append([])
                size = 0
            chunks[-1].append(pending)
            size += request_bytes
        return [chunk for chunk in chunks if chunk]

    async def _submit(self, chunk: list[Pending]) -> dict[str, Any]:
        requests: list[TeacherRequest] = [p.request for p in chunk]
        batch_id = await self.provider.submit_batch(requests)
        self.book.add(batch_id, self.provider.name, {p.request.custom_id: p.key for p in chunk})
        for pending in chunk:
            self.submissions[pending.key] = self.submissions.get(pending.key, 0) + 1
        self.engine.tally.requests += len(chunk)
        self.on_status(f"submitted batch {batch_id} ({len(chunk):,} requests)")
        return self.book.batches[-1]

    async def _collect(self, cap: SpendingCap, batches: list[dict[str, Any]]) -> None:
        """Poll until each batch has finished, then store its results; their cost is booked against the cap."""
        spent_before = self.engine.tally.spent_usd
        await self._poll(batches)
        cap.settle_all(self.engine.tally.spent_usd - spent_before)

    async def _poll(self, batches: list[dict[str, Any]]) -> None:
        waiting = list(batches)
        while waiting:
            still = []
            for batch in waiting:
                state = await self.provider.batch_state(batch["id"])
                if not state.finished:
                    still.append(batch)
                    continue
                self._ingest(batch, await self.provider.batch_results(batch["id"]))
                self.book.mark_ingested(batch["id"], state.status)
                self.on_status(f"batch {batch['id']} {state.status}: {state.succeeded:,} answered, "
                               f"{state.errored:,} errored, {state.unfinished:,} not run")
            waiting = still
            if waiting:
                await asyncio.sleep(self.poll_s)

    def _ingest(self, batch: dict[str, Any], results: dict[str, TeacherReply | ProviderFault]) -> None:
        for custom_id, outcome in results.items():
            key = batch["keys"].get(custom_id)
            if key is None:
                continue  # not ours (a custom id from another run's batch cannot occur, but never guess)
            if isinstance(outcome, TeacherReply):
                cost = self.engine.price.cost(outcome.input_tokens, outcome.output_tokens, batch=True)
                self.engine.store(key, outcome, cost)
            elif not outcome.retryable:
                self.engine.walker.faults[key] = f"provider error: {outcome.reason}"
            # A retryable item error stays missing and is resubmitted in the next round.
