"""Human review as one set of actions that the CLI (`distill review RUN ...`), the API routes and the web
pages all call: find records with a query, decide on ids or on everything a query matches (refused when
the count changed since the caller confirmed it), edit, undo, draw the sample and sign off.

The actions write the run's hash-chained audit log (decisions.py, signoff.py); the view they read is
`store.build_view`, or one the caller already holds (the service caches it per run).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from distill.errors import DistillError, RunDirError
from distill.review.decisions import apply_reason, decide as decide_ids, edit, record_json, review_policy, undo
from distill.review.signoff import draw_sample, required_sample_size
from distill.review.signoff import sign_off as grade_sample
from distill.review.store import ReviewedRecord, build_view, has_reason, review_dir, trainable, view_digest

__all__ = ["Query", "CountChanged", "trainable", "matches", "find", "find_one", "decide", "edit", "undo", "apply_reason",
           "sample", "sign_off", "progress", "next_pending", "record_context", "record_json", "require_review"]

STATUSES = ("kept", "redacted", "pending", "rejected")


@dataclass(frozen=True)
class Query:
    """Which records: every given filter must hold (none given: all records).

    status: kept, redacted, pending or rejected; decision: pass, redact, flag or reject (after human
    actions); reason: a reason code or prefix (`pii` matches `pii.email`); category: a finding's
    category; stage: a finding's stage (lexicon, judge, dedup...); q: case-insensitive text search in the
    prompt and the text; ids: only these record ids."""

    status: str | None = None
    decision: str | None = None
    reason: str | None = None
    category: str | None = None
    stage: str | None = None
    q: str | None = None
    ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise RunDirError(f"unknown status {self.status!r}: use one of {', '.join(STATUSES)}")

    def filters(self) -> dict[str, object]:
        """The filters given, for messages and audit notes."""
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


class CountChanged(DistillError):
    """A bulk decision confirmed for `expected` records now matches `found`: nothing was decided."""

    def __init__(self, found: int, expected: int):
        super().__init__(f"the query now matches {found} records, not the {expected} you confirmed; check again")
        self.found, self.expected = found, expected


def matches(record: ReviewedRecord, query: Query) -> bool:
    if query.ids is not None and record.id not in query.ids:
        return False
    if query.status and record.status != query.status:
        return False
    if query.decision and record.decision != query.decision:
        return False
    if query.reason and not has_reason(record, query.reason):
        return False
    if query.category and not any(f.category == query.category for f in record.reasons):
        return False
    if query.stage and not any(f.stage == query.stage for f in record.reasons):
        return False
    if query.q:
        needle = query.q.casefold()
        return needle in record.text.casefold() or needle in record.prompt.casefold()
    return True


def find(view: list[ReviewedRecord], query: Query) -> list[ReviewedRecord]:
    return [r for r in view if matches(r, query)]


def find_one(view: list[ReviewedRecord], record_id: int, where: object) -> ReviewedRecord:
    """The record with this id, or a located error naming `where` (the run or the job)."""
    found = next((r for r in view if r.id == record_id), None)
    if found is None:
        raise RunDirError(f"no reviewed record with id {record_id} in {where}")
    return found


def require_review(run_dir: Path) -> None:
    if not (review_dir(run_dir) / "state.json").is_file():
        raise RunDirError(f"{run_dir} has not been reviewed yet: run the review first (`distill review {run_dir}`)")


def decide(run_dir: Path, target: list[int] | Query, decision: Literal["accept", "reject"], *, reviewer: str,
           note: str = "", expected_count: int | None = None,
           view: list[ReviewedRecord] | None = None) -> tuple[dict | None, list[int]]:
    """Accept or reject the given ids, or every record the query matches, in one audit entry. With
    `expected_count`, refused (CountChanged) when the number of records differs from it, so a bulk
    decision never acts on records the caller did not see. Returns (audit entry or None, the ids)."""
    if decision not in ("accept", "reject"):
        raise RunDirError(f"decision must be accept or reject, not {decision!r}")
    if isinstance(target, Query):
        ids = [r.id for r in find(build_view(run_dir) if view is None else view, target)]
    else:
        ids = list(dict.fromkeys(target))
    if expected_count is not None and len(ids) != expected_count:
        raise CountChanged(len(ids), expected_count)
    if not ids:
        return None, []
    return decide_ids(run_dir, ids, decision, reviewer=reviewer, note=note), ids


def sample(run_dir: Path, *, reviewer: str, size: int | None = None,
           seed: int | None = None) -> tuple[dict, list[ReviewedRecord], int]:
    """Draw records to grade from the trainable ones (the policy's sample size, or its larger one when no
    judge ran and the policy asks for that, unless `size`); returns
    the draw, the drawn records and how many trainable records there were."""
    require_review(run_dir)
    kept = {r.id: r for r in build_view(run_dir) if trainable(r)}
    drawn = draw_sample(review_dir(run_dir), list(kept), size or required_sample_size(review_dir(run_dir), review_policy(run_dir)),
                        reviewer=reviewer, seed=seed)
    return drawn, [kept[i] for i in drawn["ids"]], len(kept)


def sign_off(run_dir: Path, defective: list[int], *, reviewer: str) -> dict:
    """Grade the drawn sample (`defective`: the sampled ids that should not be trained on) and sign off
    when the upper confidence bound on the defect rate is within the policy's limit."""
    require_review(run_dir)
    view = build_view(run_dir)
    return grade_sample(review_dir(run_dir), review_policy(run_dir), reviewer=reviewer, defective=list(defective),
                        view_digest=view_digest(view), pending=sum(r.status == "pending" for r in view),
                        kept_ids=[r.id for r in view if trainable(r)])


def progress(view: list[ReviewedRecord]) -> dict[str, int]:
    """How far the human review is: records decided by a person, still pending, and in all."""
    return {"decided": sum(r.human is not None for r in view), "pending": sum(r.status == "pending" for r in view),
            "total": len(view)}


def next_pending(view: list[ReviewedRecord], after: int | None, query: Query = Query()) -> ReviewedRecord | None:
    """The first pending record the query matches after id `after` (wrapping round), or None."""
    pending = [r for r in find(view, query) if r.status == "pending"]
    later = [r for r in pending if after is None or r.id > after]
    return (later or pending or [None])[0]


def record_context(run_dir: Path, record_id: int) -> dict[str, object]:
    """What a reviewer needs beside the text, for every spec kind: the variables sampled for the record
    and what the teacher was asked (the target step's last user message), from the generated dataset."""
    import datasets  # lazy: the CLI starts without it

    dataset = datasets.load_from_disk(str(Path(run_dir) / "dataset"))
    ids = dataset["id"]
    if record_id not in ids:
        return {"variables": {}, "teacher_prompt": ""}
    row = dataset[ids.index(record_id)]
    variables = json.loads(row.get("variables") or "{}")
    steps = json.loads(row.get("steps") or "[]")
    asked = [content for step in steps[-1:] for role, content in step.get("messages", []) if role == "user"]
    return {"variables": variables if isinstance(variables, dict) else {}, "teacher_prompt": asked[-1] if asked else ""}
