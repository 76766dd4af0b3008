"""Review a job's dataset: list records with filters, show one with its findings (customers of the
tenant may read); accept / reject / edit with a reason, decide every record matching a query, undo,
draw the sample and sign off (reviewers assigned to the tenant, and admins). Every action lands in the
run's hash-chained audit log under the reviewer's identity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from distill.review.audit import read_log, verify_log
from distill.review.store import review_dir
from distill.service import paging, reviewing
from distill.service.db import User
from distill.service.deps import JobDep, Reviewer, SessionDep
from distill.service.problems import problem_responses
from distill.service.schemas import (
    ActionOut, AuditEntryOut, AuditOut, BulkIn, DecisionIn, EditIn, RecordDetail, RecordPage, ReviewQuery, SampleIn,
    SampleOut, SignoffIn, SignoffOut, UndoIn,
)

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["review"])


def _action(entry: dict | None, affected: int) -> ActionOut:
    if entry is None:
        return ActionOut(entry=None, affected=0)
    return ActionOut(entry=AuditEntryOut(**{k: entry[k] for k in ("seq", "action", "reviewer", "ids", "note", "hash")}),
                     affected=affected)


@router.get("/records", response_model=RecordPage, operation_id="listRecords", responses=problem_responses(401, 404, 409, 422))
def list_records(job: JobDep, query: Annotated[ReviewQuery, Depends()], offset: Annotated[int, Query(ge=0)] = 0,
                 cursor: Annotated[str | None, Query(description=paging.CURSOR_DESCRIPTION)] = None,
                 limit: Annotated[int, Query(ge=1, le=500, description=paging.LIMIT_DESCRIPTION)] = 50) -> RecordPage:
    """Records matching the filters in id order; `total` counts them all. Page with `cursor` (or `offset`)."""
    found = sorted(reviewing.find_records(Path(job.run_dir), query), key=lambda r: r.id)
    after = paging.decode_cursor(cursor, int)[0] if cursor is not None else None
    rest = found if after is None else [r for r in found if r.id > after]
    page = rest[offset:offset + limit]
    more = paging.encode_cursor(page[-1].id) if len(rest) > offset + limit else None
    return RecordPage(records=[reviewing.record_out(r) for r in page], total=len(found), offset=offset, next_cursor=more)


@router.get("/records/{record_id}", response_model=RecordDetail, operation_id="getRecord",
            responses=problem_responses(401, 404, 409, 422))
def show_record(job: JobDep, record_id: int) -> RecordDetail:
    return reviewing.record_detail(reviewing.find_record(job, record_id))


@router.post("/review/decisions", response_model=ActionOut, operation_id="decideRecords",
             responses=problem_responses(401, 403, 404, 409, 422))
def decide_records(job: JobDep, body: DecisionIn, user: User = Reviewer) -> ActionOut:
    return _action(*reviewing.decide(job, user, body.ids, body.decision, body.reason))


@router.post("/review/bulk", response_model=ActionOut, operation_id="decideMatchingRecords",
             responses=problem_responses(401, 403, 404, 409, 422))
def decide_query(job: JobDep, body: BulkIn, user: User = Reviewer) -> ActionOut:
    """Accept or reject every record the query matches (not just one page); with `expected`, 409 and nothing
    decided when the query no longer matches that many records."""
    return _action(*reviewing.decide(job, user, body.query, body.decision, body.reason, expected=body.expected))


@router.post("/records/{record_id}/edit", response_model=ActionOut, operation_id="editRecord",
             responses=problem_responses(401, 403, 404, 409, 422))
def edit_record(job: JobDep, record_id: int, body: EditIn, user: User = Reviewer) -> ActionOut:
    return _action(reviewing.edit(job, user, record_id, body.text, body.reason, prompt=body.prompt), 1)


@router.post("/review/undo", response_model=ActionOut, operation_id="undoLastDecision",
             responses=problem_responses(401, 403, 404, 409, 422))
def undo_last(job: JobDep, body: UndoIn, user: User = Reviewer) -> ActionOut:
    """Undo your own last decision or edit that is not undone yet."""
    entry = reviewing.undo(job, user, body.reason)
    return _action(entry, len(entry["ids"]) if entry else 0)


@router.post("/review/sample", response_model=SampleOut, operation_id="drawReviewSample",
             responses=problem_responses(401, 403, 404, 409, 422))
def draw(job: JobDep, body: SampleIn, user: User = Reviewer) -> SampleOut:
    drawn, records = reviewing.sample(job, user, body.size, body.seed)
    return SampleOut(seed=drawn["seed"], ids=drawn["ids"], records=[reviewing.record_out(r) for r in records])


@router.post("/review/signoff", response_model=SignoffOut, operation_id="signOffReview",
             responses=problem_responses(401, 403, 404, 409, 422))
def sign(request: Request, job: JobDep, body: SignoffIn, session: SessionDep, user: User = Reviewer) -> SignoffOut:
    """Grade the drawn sample; an accepted sign-off lets the job continue to training by itself."""
    decision = reviewing.sign_off(session, job, user, body.defective, request.app.state.executor)
    return SignoffOut(accepted=decision["accepted"], n=decision["n"], defects=decision["defects"],
                      upper_bound=decision["upper_bound"], max_defect_rate=decision["max_defect_rate"], job_status=job.status)


@router.get("/review/audit", response_model=AuditOut, operation_id="verifyAuditLog", responses=problem_responses(401, 403, 404))
def audit(job: JobDep, user: User = Reviewer) -> AuditOut:
    folder = review_dir(Path(job.run_dir))
    problems = verify_log(folder)
    return AuditOut(intact=not problems, problems=problems, entries=len(read_log(folder)))
