"""Review queries over a job's run directory: filter the reviewed view, and act on every record a query
matches. The actions themselves are the review package's (`decide`, `edit`, `undo`, `draw_sample`,
`sign_off`), so the CLI and the API write the same audit log."""

from __future__ import annotations

from pathlib import Path

from distill.errors import Problem
from distill.review.decisions import decide, review_policy
from distill.review.signoff import draw_sample, required_sample_size, sign_off
from distill.review.store import ReviewedRecord, build_view, review_dir, view_digest
from distill.service.problems import Conflict
from distill.service.runner import StampedCache, file_stamp
from distill.service.schemas import RecordDetail, RecordOut, ReviewQuery


def reviewer_identity(user) -> str:
    """The name in the audit log: the user's name and id (ids are never reused)."""
    return f"{user.name} <{user.id}>"


def require_review(run_dir: Path) -> None:
    if not (review_dir(run_dir) / "state.json").is_file():
        raise Conflict(Problem("the job's dataset has not been reviewed yet; wait until the job reaches awaiting_review"))


def matches(record: ReviewedRecord, query: ReviewQuery) -> bool:
    if query.status and record.status != query.status:
        return False
    if query.decision and record.decision != query.decision:
        return False
    if query.reason and not any(c == query.reason or c.startswith(query.reason + ".") for c in record.codes):
        return False
    if query.category and not any(f.category == query.category for f in record.reasons):
        return False
    if query.q:
        needle = query.q.casefold()
        return needle in record.text.casefold() or needle in record.prompt.casefold()
    return True


_VIEWS = StampedCache(keep=16)
VIEW_FILES = ("dataset/dataset_info.json", "dataset/state.json", "review/state.json", "review/records.jsonl",
              "review/corpus.json", "review/judge.jsonl", "review/audit.jsonl")


def current_view(run_dir: Path) -> list[ReviewedRecord]:
    """The reviewed view, rebuilt only when one of the files it is made from changed (listing pages of
    records must not reload the dataset each time). Callers must not modify the records."""
    stamp = file_stamp(*(run_dir / name for name in VIEW_FILES))
    return _VIEWS.get(run_dir, stamp, lambda: build_view(run_dir))


def find_records(run_dir: Path, query: ReviewQuery) -> list[ReviewedRecord]:
    require_review(run_dir)
    return [r for r in current_view(Path(run_dir)) if matches(r, query)]


def record_out(record: ReviewedRecord) -> RecordOut:
    return RecordOut(id=record.id, status=record.status, decision=record.decision, automatic=record.automatic,
                     codes=list(dict.fromkeys(record.codes)), prompt=record.prompt, text=record.text,
                     human=record.human, edited=record.edited)


def record_detail(record: ReviewedRecord) -> RecordDetail:
    return RecordDetail(**record_out(record).model_dump(), findings=[f.to_json() for f in record.reasons],
                        original_text=record.original_text if record.original_text != record.text else None)


def decide_query(run_dir: Path, query: ReviewQuery, decision: str, *, reviewer: str, note: str) -> tuple[dict | None, int]:
    """Accept or reject every record the query matches (all pages), in one audit entry."""
    ids = [r.id for r in find_records(run_dir, query)]
    if not ids:
        return None, 0
    return decide(run_dir, ids, decision, reviewer=reviewer, note=note), len(ids)


def sample(run_dir: Path, size: int | None, seed: int | None, *, reviewer: str) -> tuple[dict, list[ReviewedRecord]]:
    require_review(run_dir)
    kept = {r.id: r for r in build_view(run_dir) if r.status in ("kept", "redacted")}
    drawn = draw_sample(review_dir(run_dir), list(kept), size or required_sample_size(review_dir(run_dir), review_policy(run_dir)),
                        reviewer=reviewer, seed=seed)
    return drawn, [kept[i] for i in drawn["ids"]]


def signoff(run_dir: Path, defective: list[int], *, reviewer: str) -> dict:
    require_review(run_dir)
    view = build_view(run_dir)
    return sign_off(review_dir(run_dir), review_policy(run_dir), reviewer=reviewer, defective=defective,
                    view_digest=view_digest(view), pending=sum(r.status == "pending" for r in view),
                    kept_ids=[r.id for r in view if r.status in ("kept", "redacted")])
