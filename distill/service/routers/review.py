"""Review a job's dataset: list records with filters, show one with its findings (customers of the
tenant may read); accept / reject / edit with a reason, decide every record matching a query, undo,
draw the sample and sign off (reviewers assigned to the tenant, and admins). Every action lands in the
run's hash-chained audit log under the reviewer's identity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from distill.review.audit import read_log, verify_log
from distill.review.decisions import decide, edit, undo
from distill.review.store import review_dir
from distill.service import jobs, paging, reviewing
from distill.service.db import User
from distill.service.deps import JobDep, Reviewer, SessionDep
from distill.service.problems import problem_responses
from distill.service.schemas import (
    ActionOut, AuditEntryOut, AuditOut, BulkIn, DecisionIn, EditIn, RecordDetail, RecordPage, ReviewQuery, SampleIn,
    SampleOut, SignoffIn, SignoffOut, UndoIn,
)

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["review"])
REVIEWABLE = ("awaiting_review",)


def _action(entry: dict | None, affected: int) -> ActionOut:
    if entry is None:
        return ActionOut(entry=None, affected=0)
    return ActionOut(entry=AuditEntryOut(**{k: entry[k] for k in ("seq", "action", "reviewer", "ids", "note", "hash")}),
                     affected=affected)


def _reviewable(job) -> Path:
    if job.status not in REVIEWABLE:
        raise HTTPException(409, f"the job is {job.status}; review actions are taken while it is awaiting_review")
    return Path(job.run_dir)


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
    found = [r for r in reviewing.find_records(Path(job.run_dir), ReviewQuery()) if r.id == record_id]
    if not found:
        raise HTTPException(404, f"no reviewed record {record_id} in job {job.id}")
    return reviewing.record_detail(found[0])


@router.post("/review/decisions", response_model=ActionOut, operation_id="decideRecords",
             responses=problem_responses(401, 403, 404, 409, 422))
def decide_records(job: JobDep, body: DecisionIn, user: User = Reviewer) -> ActionOut:
    entry = decide(_reviewable(job), body.ids, body.decision, reviewer=reviewing.reviewer_identity(user), note=body.reason)
    return _action(entry, len(body.ids))


@router.post("/review/bulk", response_model=ActionOut, operation_id="decideMatchingRecords",
             responses=problem_responses(401, 403, 404, 409, 422))
def decide_query(job: JobDep, body: BulkIn, user: User = Reviewer) -> ActionOut:
    """Accept or reject every record the query matches (not just one page)."""
    entry, count = reviewing.decide_query(_reviewable(job), body.query, body.decision,
                                          reviewer=reviewing.reviewer_identity(user), note=body.reason)
    return _action(entry, count)


@router.post("/records/{record_id}/edit", response_model=ActionOut, operation_id="editRecord",
             responses=problem_responses(401, 403, 404, 409, 422))
def edit_record(job: JobDep, record_id: int, body: EditIn, user: User = Reviewer) -> ActionOut:
    entry = edit(_reviewable(job), record_id, body.text, prompt=body.prompt, reviewer=reviewing.reviewer_identity(user),
                 note=body.reason)
    return _action(entry, 1)


@router.post("/review/undo", response_model=ActionOut, operation_id="undoLastDecision",
             responses=problem_responses(401, 403, 404, 409, 422))
def undo_last(job: JobDep, body: UndoIn, user: User = Reviewer) -> ActionOut:
    """Undo your own last decision or edit that is not undone yet."""
    entry = undo(_reviewable(job), reviewer=reviewing.reviewer_identity(user), note=body.reason)
    return _action(entry, len(entry["ids"]) if entry else 0)


@router.post("/review/sample", response_model=SampleOut, operation_id="drawReviewSample",
             responses=problem_responses(401, 403, 404, 409, 422))
def draw(job: JobDep, body: SampleIn, user: User = Reviewer) -> SampleOut:
    drawn, records = reviewing.sample(_reviewable(job), body.size, body.seed, reviewer=reviewing.reviewer_identity(user))
    return SampleOut(seed=drawn["seed"], ids=drawn["ids"], records=[reviewing.record_out(r) for r in records])


@router.post("/review/signoff", response_model=SignoffOut, operation_id="signOffReview",
             responses=problem_responses(401, 403, 404, 409, 422))
def sign(request: Request, job: JobDep, body: SignoffIn, session: SessionDep, user: User = Reviewer) -> SignoffOut:
    """Grade the drawn sample; an accepted sign-off lets the job continue to training by itself."""
    decision = reviewing.signoff(_reviewable(job), body.defective, reviewer=reviewing.reviewer_identity(user))
    jobs.add_event(session, job.id, "review", f"sign-off {'accepted' if decision['accepted'] else 'refused'} "
                   f"({decision['defects']} defective of {decision['n']})", {"reviewer": reviewing.reviewer_identity(user)})
    session.commit()
    if decision["accepted"]:
        jobs.resume_after_signoff(session, job)
        request.app.state.executor.wake()
    return SignoffOut(accepted=decision["accepted"], n=decision["n"], defects=decision["defects"],
                      upper_bound=decision["upper_bound"], max_defect_rate=decision["max_defect_rate"], job_status=job.status)


@router.get("/review/audit", response_model=AuditOut, operation_id="verifyAuditLog", responses=problem_responses(401, 403, 404))
def audit(job: JobDep, user: User = Reviewer) -> AuditOut:
    folder = review_dir(Path(job.run_dir))
    problems = verify_log(folder)
    return AuditOut(intact=not problems, problems=problems, entries=len(read_log(folder)))
