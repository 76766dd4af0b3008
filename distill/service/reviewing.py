"""Review for the service: the job-level face of `distill.review.actions` that both the API routes
(routers/review.py) and the web pages (web/pages_review.py) call, so a decision made in the browser and
one made over the API take the same path and write the same audit log. Adds what a job adds: the
reviewer's identity, the job's state (actions only while it awaits review), a cached view, and the
sign-off moving the job on."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import HTTPException

from distill.errors import Problem
from distill.review import actions
from distill.review.actions import Query
from distill.review.store import ReviewedRecord, build_view, review_dir
from distill.service import jobs
from distill.service.problems import Conflict
from distill.service.runner import StampedCache, file_stamp
from distill.service.schemas import RecordDetail, RecordOut, ReviewQuery

REVIEWABLE = ("awaiting_review",)


def reviewer_identity(user) -> str:
    """The name in the audit log: the user's name and id (ids are never reused)."""
    return f"{user.name} <{user.id}>"


def require_review(run_dir: Path) -> None:
    if not (review_dir(run_dir) / "state.json").is_file():
        raise Conflict(Problem("the job's dataset has not been reviewed yet; wait until the job reaches awaiting_review"))


def query_of(query: ReviewQuery | None) -> Query:
    return Query() if query is None else Query(**{k: v or None for k, v in query.model_dump().items()})


_VIEWS = StampedCache(keep=16)
VIEW_FILES = ("dataset/dataset_info.json", "dataset/state.json", "review/state.json", "review/records.jsonl",
              "review/corpus.json", "review/judge.jsonl", "review/audit.jsonl")


def current_view(run_dir: Path) -> list[ReviewedRecord]:
    """The reviewed view, rebuilt only when one of the files it is made from changed (listing pages of
    records must not reload the dataset each time). Callers must not modify the records."""
    require_review(run_dir)
    run_dir = Path(run_dir)
    stamp = file_stamp(*(run_dir / name for name in VIEW_FILES))
    return _VIEWS.get(run_dir, stamp, lambda: build_view(run_dir))


def find_records(run_dir: Path, query: ReviewQuery | Query | None = None) -> list[ReviewedRecord]:
    return actions.find(current_view(run_dir), query if isinstance(query, Query) else query_of(query))


def find_record(job, record_id: int) -> ReviewedRecord:
    found = [r for r in current_view(Path(job.run_dir)) if r.id == record_id]
    if not found:
        raise HTTPException(404, f"no reviewed record {record_id} in job {job.id}")
    return found[0]


def record_out(record: ReviewedRecord) -> RecordOut:
    return RecordOut(id=record.id, status=record.status, decision=record.decision, automatic=record.automatic,
                     codes=list(dict.fromkeys(record.codes)), prompt=record.prompt, text=record.text,
                     human=record.human, edited=record.edited)


def record_detail(record: ReviewedRecord) -> RecordDetail:
    return RecordDetail(**record_out(record).model_dump(), findings=[f.to_json() for f in record.reasons],
                        original_text=record.original_text if record.original_text != record.text else None)


def reviewable(job) -> Path:
    """The job's run directory, or 409 when the job is not awaiting review."""
    if job.status not in REVIEWABLE:
        raise HTTPException(409, f"the job is {job.status}; review actions are taken while it is awaiting_review")
    return Path(job.run_dir)


def decide(job, user, target: list[int] | ReviewQuery | Query, decision: Literal["accept", "reject"], reason: str,
           expected: int | None = None) -> tuple[dict | None, int]:
    """Accept or reject ids, or every record a query matches (all pages); 409 when `expected` is given and
    the query's count changed since the caller saw it."""
    run_dir = reviewable(job)
    if isinstance(target, ReviewQuery):
        target = query_of(target)
    try:
        entry, ids = actions.decide(run_dir, target, decision, reviewer=reviewer_identity(user), note=reason,
                                    expected_count=expected, view=current_view(run_dir) if isinstance(target, Query) else None)
    except actions.CountChanged as exc:
        raise HTTPException(409, exc.problems[0].message) from None
    return entry, len(ids)


def edit(job, user, record_id: int, text: str, reason: str, prompt: str | None = None) -> dict:
    return actions.edit(reviewable(job), record_id, text, prompt=prompt, reviewer=reviewer_identity(user), note=reason)


def undo(job, user, reason: str) -> dict | None:
    """Undo the user's own last decision or edit that is not undone yet (None: nothing to undo)."""
    return actions.undo(reviewable(job), reviewer=reviewer_identity(user), note=reason)


def sample(job, user, size: int | None, seed: int | None) -> tuple[dict, list[ReviewedRecord]]:
    drawn, records, _ = actions.sample(reviewable(job), reviewer=reviewer_identity(user), size=size, seed=seed)
    return drawn, records


def sign_off(session, job, user, defective: list[int], executor) -> dict:
    """Grade the drawn sample; an accepted sign-off queues the job again (training follows by itself)."""
    decision = actions.sign_off(reviewable(job), defective, reviewer=reviewer_identity(user))
    jobs.add_event(session, job.id, "review", f"sign-off {'accepted' if decision['accepted'] else 'refused'} "
                   f"({decision['defects']} defective of {decision['n']})", {"reviewer": reviewer_identity(user)})
    session.commit()
    if decision["accepted"]:
        jobs.resume_after_signoff(session, job)
        executor.wake()
    return decision
