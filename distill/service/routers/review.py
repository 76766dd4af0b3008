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
from distill.service import reviewing
from distill.service.db import User
from distill.service.deps import JobDep, Reviewer, SessionDep
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


@router.get("/records", response_model=RecordPage)
def list_records(job: JobDep, query: Annotated[ReviewQuery, Depends()], offset: Annotated[int, Query(ge=0)] = 0,
                 limit: Annotated[int, Query(ge=1, le=500)] = 50) -> RecordPage:
    found = reviewing.find_records(Path(job.run_dir), query)
    return RecordPage(records=[reviewing.record_out(r) for r in found[offset:offset + limit]], total=len(found), offset=offset)


@router.get("/records/{record_id}", response_model=RecordDetail)
def show_record(job: JobDep, record_id: int) -> RecordDetail:
    return reviewing.record_detail(reviewing.find_record(job, record_id))


@router.post("/review/decisions", response_model=ActionOut)
def decide_records(job: JobDep, body: DecisionIn, user: User = Reviewer) -> ActionOut:
    return _action(*reviewing.decide(job, user, body.ids, body.decision, body.reason))


@router.post("/review/bulk", response_model=ActionOut)
def decide_query(job: JobDep, body: BulkIn, user: User = Reviewer) -> ActionOut:
    """Accept or reject every record the query matches (not just one page); with `expected`, 409 when the
    query no longer matches that many records."""
    return _action(*reviewing.decide(job, user, body.query, body.decision, body.reason, expected=body.expected))


@router.post("/records/{record_id}/edit", response_model=ActionOut)
def edit_record(job: JobDep, record_id: int, body: EditIn, user: User = Reviewer) -> ActionOut:
    return _action(reviewing.edit(job, user, record_id, body.text, body.reason, prompt=body.prompt), 1)


@router.post("/review/undo", response_model=ActionOut)
def undo_last(job: JobDep, body: UndoIn, user: User = Reviewer) -> ActionOut:
    """Undo your own last decision or edit that is not undone yet."""
    entry = reviewing.undo(job, user, body.reason)
    return _action(entry, len(entry["ids"]) if entry else 0)


@router.post("/review/sample", response_model=SampleOut)
def draw(job: JobDep, body: SampleIn, user: User = Reviewer) -> SampleOut:
    drawn, records = reviewing.sample(job, user, body.size, body.seed)
    return SampleOut(seed=drawn["seed"], ids=drawn["ids"], records=[reviewing.record_out(r) for r in records])


@router.post("/review/signoff", response_model=SignoffOut)
def sign(request: Request, job: JobDep, body: SignoffIn, session: SessionDep, user: User = Reviewer) -> SignoffOut:
    """Grade the drawn sample; an accepted sign-off lets the job continue to training by itself."""
    decision = reviewing.sign_off(session, job, user, body.defective, request.app.state.executor)
    return SignoffOut(accepted=decision["accepted"], n=decision["n"], defects=decision["defects"],
                      upper_bound=decision["upper_bound"], max_defect_rate=decision["max_defect_rate"], job_status=job.status)


@router.get("/review/audit", response_model=AuditOut)
def audit(job: JobDep, user: User = Reviewer) -> AuditOut:
    folder = review_dir(Path(job.run_dir))
    problems = verify_log(folder)
    return AuditOut(intact=not problems, problems=problems, entries=len(read_log(folder)))
