"""What the batch APIs (OpenAI Batch, Anthropic Message Batches) report, in one shape for both."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from distill.providers.protocol import TeacherRequest

BatchStatus = Literal["in_progress", "ended", "expired", "cancelled", "failed"]


@dataclass(frozen=True)
class BatchState:
    """Where a submitted batch stands.

    `ended` means every request ran (each succeeded or errored); `expired` and `cancelled` batches
    finished only some: their results hold the finished ones, the rest never ran and can be
    resubmitted. `failed` means the provider rejected the batch as a whole (e.g. an invalid input file).
    """

    id: str
    status: BatchStatus
    total: int  # requests in the batch
    succeeded: int  # finished with an answer
    errored: int  # finished with an error

    @property
    def finished(self) -> bool:
        """True once the provider will not process anything more in this batch."""
        return self.status != "in_progress"

    @property
    def unfinished(self) -> int:
        """Requests that have not run (yet, or ever for an expired or cancelled batch)."""
        return self.total - self.succeeded - self.errored


def check_custom_ids(requests: list[TeacherRequest], pattern: str | None = None) -> None:
    """Batch APIs match results to requests by custom id: each must be present, unique (and fit `pattern`)."""
    ids = [request.custom_id for request in requests]
    bad = [i for i in ids if not i or (pattern is not None and not re.fullmatch(pattern, i))]
    if bad:
        raise ValueError(f"batch requests need a custom_id{f' matching {pattern}' if pattern else ''}; got {bad[:3]!r}")
    if len(set(ids)) != len(ids):
        raise ValueError("batch requests need unique custom_ids")
