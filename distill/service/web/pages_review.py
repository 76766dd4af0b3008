"""The reviewer's pages: one job's records with filters, a record view that marks each finding's span
with its reason, accept / reject / edit with a reason (keyboard shortcuts in app.js), bulk decisions on
everything the filter matches (the count confirmed first), undo, the sign-off page (draw, grade, see the
bound, sign), and the audit log with its chain verified. Actions call the review API's own route
functions, so the audit log and the job's state change exactly as over the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from distill.errors import DistillError, scrub_text
from distill.review.audit import read_log, verify_log
from distill.review.decisions import review_policy
from distill.review.signoff import defect_bound, judge_absent, needed_sample_size, read_sample, read_signoff
from distill.review.store import review_dir
from distill.service import reviewing
from distill.service.deps import SessionDep
from distill.service.routers import review as review_api
from distill.service.schemas import BulkIn, DecisionIn, EditIn, ReviewQuery, SampleIn, SignoffIn, UndoIn
from distill.service.web.render import render
from distill.service.web.sessions import Csrf, PageJob, PageUser, require_role

router = APIRouter(prefix="/ui/jobs/{job_id}", include_in_schema=False)
FILTERS = ("status", "decision", "reason", "category", "q")
LIST_LIMIT = 300


def _query(params, prefix: str = "") -> ReviewQuery:
    """The filter from a page's query string, or from an action form's hidden `f_` fields."""
    return ReviewQuery(**{k: params.get(prefix + k) or None for k in FILTERS})


def _back(job_id: str, form, message: str, record: int | str | None = None, page: str = "review") -> RedirectResponse:
    """Back to the page the action came from, with its filter and the action's outcome."""
    keep = {k: form.get(f"f_{k}") for k in FILTERS if form.get(f"f_{k}")}
    if record not in (None, ""):
        keep["record"] = record
    keep["msg"] = message
    return RedirectResponse(f"/ui/jobs/{job_id}/{page}?{urlencode(keep)}", status_code=303)


def _reason_text(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())


def _act(job_id: str, params, record, action, page: str = "review") -> RedirectResponse:
    """Run one review action; its outcome (or why it was refused) comes back as the page's message."""
    try:
        message = action()
    except ValidationError as exc:
        message = f"refused: {_reason_text(exc)}"
    except (DistillError, HTTPException) as exc:
        message = f"refused: {exc.detail if isinstance(exc, HTTPException) else scrub_text(exc.problems[0].message)}"
    return _back(job_id, params, message, record, page)


def _spans(record, field: str) -> list[tuple[int, int, str]]:
    return [(f.span[0], f.span[1], f.code, f"{f.code} ({f.category}, {f.action}): {f.detail}")
            for f in record.reasons if f.field == field]


@router.get("/review")
def review_page(request: Request, job: PageJob, user: PageUser, record: int | None = None, bulk: str | None = None,
                msg: str = ""):
    require_role(user, "admin", "reviewer")
    run_dir = Path(job.run_dir)
    params = request.query_params
    query = _query(params)
    try:
        everything = reviewing.find_records(run_dir, ReviewQuery())
    except DistillError as exc:
        return render(request, "review.html", {"job": job, "not_ready": scrub_text(exc.problems[0].message), "msg": msg})
    found = [r for r in everything if reviewing.matches(r, query)]
    ids = [r.id for r in found]
    current = next((r for r in everything if r.id == record), None) if record is not None else (found[0] if found else None)
    at = ids.index(current.id) if current is not None and current.id in ids else None
    filters = {k: params.get(k) or "" for k in FILTERS}
    return render(request, "review.html", {
        "job": job, "records": found[:LIST_LIMIT], "total": len(found), "all_count": len(everything), "current": current,
        "prev_id": ids[at - 1] if at else None, "next_id": ids[at + 1] if at is not None and at + 1 < len(ids) else None,
        "filters": filters, "filter_qs": urlencode({k: v for k, v in filters.items() if v}),
        "codes": sorted({c for r in everything for c in r.codes}),
        "categories": sorted({f.category for r in everything for f in r.reasons}),
        "decisions": sorted({r.decision for r in everything}),
        "text_spans": _spans(current, "text") if current else [], "prompt_spans": _spans(current, "prompt") if current else [],
        "bulk": bulk if bulk in ("accept", "reject") else None, "msg": msg, "reviewable": job.status == "awaiting_review",
        "not_checked": judge_absent(review_dir(run_dir)),
    })


@router.post("/review/decide", dependencies=[Csrf])
async def decide(request: Request, job: PageJob, user: PageUser, record: Annotated[int, Form()],
                 decision: Annotated[str, Form()], reason: Annotated[str, Form()] = ""):
    require_role(user, "admin", "reviewer")
    params = await request.form()

    def act() -> str:
        review_api.decide_records(job, DecisionIn(ids=[record], decision=decision, reason=reason), user)
        return f"record {record}: {decision}ed ({reason})"

    return _act(job.id, params, record, act)


@router.post("/review/edit", dependencies=[Csrf])
async def edit(request: Request, job: PageJob, user: PageUser, record: Annotated[int, Form()],
               text: Annotated[str, Form()], reason: Annotated[str, Form()] = ""):
    require_role(user, "admin", "reviewer")
    params = await request.form()

    def act() -> str:
        review_api.edit_record(job, record, EditIn(text=text, reason=reason), user)
        return f"record {record}: edited and checked again ({reason})"

    return _act(job.id, params, record, act)


@router.post("/review/bulk", dependencies=[Csrf])
async def bulk(request: Request, job: PageJob, user: PageUser, decision: Annotated[str, Form()],
               expected: Annotated[int, Form()], reason: Annotated[str, Form()] = ""):
    """Decide every record the filter matches; refused when the count changed since it was confirmed."""
    require_role(user, "admin", "reviewer")
    params = await request.form()
    query = _query(params, prefix="f_")

    def act() -> str:
        count = len(reviewing.find_records(Path(job.run_dir), query))
        if count != expected:
            return f"refused: the filter now matches {count} records, not the {expected} you confirmed; check again"
        out = review_api.decide_query(job, BulkIn(query=query, decision=decision, reason=reason), user)
        return f"{out.affected} records: {decision}ed ({reason})"

    return _act(job.id, params, None, act)


@router.post("/review/undo", dependencies=[Csrf])
async def undo(request: Request, job: PageJob, user: PageUser, reason: Annotated[str, Form()] = ""):
    require_role(user, "admin", "reviewer")
    params = await request.form()

    def act() -> str:
        out = review_api.undo_last(job, UndoIn(reason=reason), user)
        if out.entry is None:
            return "nothing of yours to undo"
        return f"undone: your last action on record{'s' if out.affected != 1 else ''} {', '.join(map(str, out.entry.ids))}"

    return _act(job.id, params, params.get("record"), act)


@router.get("/signoff")
def signoff_page(request: Request, job: PageJob, user: PageUser, msg: str = ""):
    require_role(user, "admin", "reviewer")
    run_dir = Path(job.run_dir)
    defective = [int(v) for v in request.query_params.getlist("defective") if v.isdigit()]
    try:
        everything = {r.id: r for r in reviewing.find_records(run_dir, ReviewQuery())}
        policy = review_policy(run_dir)
    except DistillError as exc:
        return render(request, "signoff.html", {"job": job, "not_ready": scrub_text(exc.problems[0].message), "msg": msg})
    folder = review_dir(run_dir)
    sample = read_sample(folder)
    records = [everything[i] for i in (sample or {}).get("ids", []) if i in everything]
    marked = sorted(set(defective) & {r.id for r in records})
    kept = [r.id for r in everything.values() if r.status in ("kept", "redacted")]
    census = bool(records) and {r.id for r in records} == set(kept)
    bound = defect_bound(len(marked), len(records), policy.signoff.confidence, len(records) if census else None)[0] if records else None
    return render(request, "signoff.html", {
        "job": job, "sample": sample, "records": records, "defective": marked, "bound": bound, "policy": policy.signoff,
        "census": census, "kept": len(kept),
        "needed": needed_sample_size(policy.signoff.max_defect_rate, policy.signoff.confidence),
        "pending": sum(r.status == "pending" for r in everything.values()), "signoff": read_signoff(folder), "msg": msg,
        "reviewable": job.status == "awaiting_review", "not_checked": judge_absent(folder),
    })


@router.post("/signoff/sample", dependencies=[Csrf])
def draw_sample(job: PageJob, user: PageUser, seed: Annotated[str, Form()] = ""):
    require_role(user, "admin", "reviewer")

    def act() -> str:
        out = review_api.draw(job, SampleIn(seed=int(seed) if seed.strip().isdigit() else None), user)
        return f"drew {len(out.ids)} records (seed {out.seed})"

    return _act(job.id, {}, None, act, page="signoff")


@router.post("/signoff", dependencies=[Csrf])
async def sign(request: Request, job: PageJob, user: PageUser, session: SessionDep):
    require_role(user, "admin", "reviewer")
    form = await request.form()
    defective = [int(v) for v in form.getlist("defective") if str(v).isdigit()]

    def act() -> str:
        out = review_api.sign(request, job, SignoffIn(defective=defective), session, user)
        verdict = "accepted: the job continues" if out.accepted else "refused"
        return (f"sign-off {verdict} ({out.defects} defective of {out.n}; upper bound {out.upper_bound:.1%}, "
                f"limit {out.max_defect_rate:.1%})")

    return _act(job.id, {}, None, act, page="signoff")


@router.get("/audit")
def audit_page(request: Request, job: PageJob, user: PageUser):
    require_role(user, "admin", "reviewer")
    folder = review_dir(Path(job.run_dir))
    problems = verify_log(folder)
    return render(request, "audit.html", {"job": job, "entries": read_log(folder), "problems": problems})
