"""The reviewer's pages: one job's records with filters, a record view that marks each finding's span
with its reason, accept / reject / edit with a reason (keyboard shortcuts in app.js), bulk decisions on
everything the filter matches (the count confirmed first), undo, the sign-off page (draw, grade, see the
bound, sign), and the audit log with its chain verified. Actions call `service.reviewing`, the same
functions the review API's routes call, so the audit log and the job's state change exactly as over the
API; who may act is `permissions.authorize`'s answer, as for the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse

from distill.errors import DistillError, scrub_text
from distill.review import actions
from distill.review.actions import Query
from distill.review.audit import read_log, verify_log
from distill.review.decisions import review_policy
from distill.review.agreement import agreement_check
from distill.review.signoff import (
    defect_bound, judge_absent, needed_sample_size, read_sample, read_signoff, required_sample_size,
)
from distill.review.store import review_dir
from distill.service import reviewing
from distill.service.deps import SessionDep
from distill.service.web.render import render
from distill.service.web.sessions import Csrf, PageJob, PageReviewer

router = APIRouter(prefix="/ui/jobs/{job_id}", include_in_schema=False)
FILTERS = ("status", "decision", "reason", "category", "stage", "q")
LIST_LIMIT = 300  # records listed per page of the list


def _query(params, prefix: str = "") -> Query:
    """The filter from a page's query string, or from an action form's hidden `f_` fields."""
    return Query(**{k: params.get(prefix + k) or None for k in FILTERS})


def _back(job_id: str, form, message: str, record: int | str | None = None, page: str = "review") -> RedirectResponse:
    """Back to the page the action came from, with its filter and the action's outcome."""
    keep = {k: form.get(f"f_{k}") for k in FILTERS if form.get(f"f_{k}")}
    if record not in (None, ""):
        keep["record"] = record
    keep["msg"] = message
    return RedirectResponse(f"/ui/jobs/{job_id}/{page}?{urlencode(keep)}", status_code=303)


def _act(job_id: str, params, record, action, page: str = "review") -> RedirectResponse:
    """Run one review action; its outcome (or why it was refused) comes back as the page's message."""
    try:
        message = action()
    except (DistillError, HTTPException) as exc:  # an unknown status in a hand-made URL, a job not awaiting review
        message = f"refused: {exc.detail if isinstance(exc, HTTPException) else scrub_text(exc.problems[0].message)}"
    return _back(job_id, params, message, record() if callable(record) else record, page)


def _spans(record, field: str) -> list[tuple[int, int, str]]:
    return [(f.span[0], f.span[1], f.code, f"{f.code} ({f.category}, {f.action}): {f.detail}")
            for f in record.reasons if f.field == field]


REJECT_REASONS = ("unsafe for the audience", "personal data", "off task", "low quality", "duplicate")  # keys 1-5


def _listing(found: list, page: int) -> tuple[list, int, int]:
    """One page of the record list: (records, the page number, the number of pages)."""
    pages = max(1, -(-len(found) // LIST_LIMIT))
    page = min(max(page, 1), pages)
    return found[(page - 1) * LIST_LIMIT:page * LIST_LIMIT], page, pages


def _review_context(job, everything: list, query: Query, record: int | None, page: int) -> dict:
    found = actions.find(everything, query)
    ids = [r.id for r in found]
    current = next((r for r in everything if r.id == record), None) if record is not None else (found[0] if found else None)
    at = ids.index(current.id) if current is not None and current.id in ids else None
    if record is not None and at is not None and page < 1:
        page = at // LIST_LIMIT + 1  # the list page that holds the record shown
    listed, page, pages = _listing(found, page)
    context = actions.record_context(Path(job.run_dir), current.id) if current else {}
    return {
        **context, "records": listed, "page": page, "pages": pages, "records_per_page": LIST_LIMIT,
        "total": len(found), "all_count": len(everything),
        "current": current, "progress": actions.progress(everything), "reject_reasons": REJECT_REASONS,
        "prev_id": ids[at - 1] if at else None, "next_id": ids[at + 1] if at is not None and at + 1 < len(ids) else None,
        "codes": sorted({c for r in everything for c in r.codes}),
        "categories": sorted({f.category for r in everything for f in r.reasons}),
        "stages": sorted({f.stage for r in everything for f in r.reasons}),
        "decisions": sorted({r.decision for r in everything}),
        "text_spans": _spans(current, "text") if current else [], "prompt_spans": _spans(current, "prompt") if current else [],
    }


@router.get("/review")
def review_page(request: Request, job: PageJob, user: PageReviewer, record: int | None = None, bulk: str | None = None,
                msg: str = "", page: int = 0):
    params = request.query_params
    try:
        everything = reviewing.find_records(Path(job.run_dir))
        query = _query(params)
    except DistillError as exc:
        return render(request, "review.html", {"job": job, "not_ready": scrub_text(exc.problems[0].message), "msg": msg})
    filters = {k: params.get(k) or "" for k in FILTERS}
    return render(request, "review.html", {
        "job": job, **_review_context(job, everything, query, record, page),
        "filters": filters, "filter_qs": urlencode({k: v for k, v in filters.items() if v}),
        "bulk": bulk if bulk in ("accept", "reject") else None, "msg": msg, "reviewable": job.status == "awaiting_review",
        "not_checked": judge_absent(review_dir(job.run_dir)),
    })


@router.post("/review/decide", dependencies=[Csrf])
async def decide(request: Request, job: PageJob, user: PageReviewer, record: Annotated[int, Form()],
                 decision: Annotated[str, Form()], reason: Annotated[str, Form()] = ""):
    """Decide one record (a reason is optional to accept); with `advance`, then open the next pending record
    the filter matches."""
    params = await request.form()
    shown: list[int | None] = [record]

    def act() -> str:
        if decision == "reject" and not reason.strip():
            return "refused: say why you reject the record (type a reason or press 1-5 for a common one)"
        reviewing.decide(job, user, [record], decision, reason.strip())
        if params.get("advance"):
            following = actions.next_pending(reviewing.current_view(Path(job.run_dir)), record, _query(params, prefix="f_"))
            shown[0] = following.id if following is not None else record
        return f"record {record}: {decision}ed" + (f" ({reason.strip()})" if reason.strip() else "")

    return _act(job.id, params, lambda: shown[0], act)


@router.post("/review/edit", dependencies=[Csrf])
async def edit(request: Request, job: PageJob, user: PageReviewer, record: Annotated[int, Form()],
               text: Annotated[str, Form()], reason: Annotated[str, Form()] = ""):
    params = await request.form()

    def act() -> str:
        reviewing.edit(job, user, record, text, reason)
        return f"record {record}: edited and checked again ({reason})"

    return _act(job.id, params, record, act)


@router.post("/review/bulk", dependencies=[Csrf])
async def bulk(request: Request, job: PageJob, user: PageReviewer, decision: Annotated[str, Form()],
               expected: Annotated[int, Form()], reason: Annotated[str, Form()] = ""):
    """Decide every record the filter matches; refused when the count changed since it was confirmed."""
    params = await request.form()

    def act() -> str:
        _, count = reviewing.decide(job, user, _query(params, prefix="f_"), decision, reason, expected=expected)
        return f"{count} records: {decision}ed ({reason})"

    return _act(job.id, params, None, act)


@router.post("/review/undo", dependencies=[Csrf])
async def undo(request: Request, job: PageJob, user: PageReviewer, reason: Annotated[str, Form()] = ""):
    params = await request.form()

    def act() -> str:
        entry = reviewing.undo(job, user, reason)
        if entry is None:
            return "nothing of yours to undo"
        return f"undone: your last action on record{'s' if len(entry['ids']) != 1 else ''} {', '.join(map(str, entry['ids']))}"

    return _act(job.id, params, params.get("record"), act)


@router.get("/signoff")
def signoff_page(request: Request, job: PageJob, user: PageReviewer, msg: str = ""):
    run_dir = Path(job.run_dir)
    defective = [int(v) for v in request.query_params.getlist("defective") if v.isdigit()]
    try:
        everything = {r.id: r for r in reviewing.find_records(run_dir)}
        policy = review_policy(run_dir)
    except DistillError as exc:
        return render(request, "signoff.html", {"job": job, "not_ready": scrub_text(exc.problems[0].message), "msg": msg})
    folder = review_dir(run_dir)
    sample = read_sample(folder)
    records = [everything[i] for i in (sample or {}).get("ids", []) if i in everything]
    marked = sorted(set(defective) & {r.id for r in records})
    kept = [r.id for r in everything.values() if actions.trainable(r)]
    census = bool(records) and {r.id for r in records} == set(kept)
    bound = defect_bound(len(marked), len(records), policy.signoff.confidence, len(records) if census else None)[0] if records else None
    return render(request, "signoff.html", {
        "job": job, "sample": sample, "records": records, "defective": marked, "bound": bound, "policy": policy.signoff,
        "census": census, "kept": len(kept), "sample_size": required_sample_size(folder, policy),
        "needed": needed_sample_size(policy.signoff.max_defect_rate, policy.signoff.confidence),
        "pending": sum(r.status == "pending" for r in everything.values()), "signoff": read_signoff(folder), "msg": msg,
        "reviewable": job.status == "awaiting_review", "not_checked": judge_absent(folder),
        "agreement": agreement_check(run_dir, policy, judge_ran=judge_absent(folder) is None),
    })


@router.post("/signoff/sample", dependencies=[Csrf])
def draw_sample(job: PageJob, user: PageReviewer, seed: Annotated[str, Form()] = ""):
    def act() -> str:
        drawn, _ = reviewing.sample(job, user, None, int(seed) if seed.strip().isdigit() else None)
        return f"drew {len(drawn['ids'])} records (seed {drawn['seed']})"

    return _act(job.id, {}, None, act, page="signoff")


@router.post("/signoff", dependencies=[Csrf])
async def sign(request: Request, job: PageJob, user: PageReviewer, session: SessionDep):
    form = await request.form()
    defective = [int(v) for v in form.getlist("defective") if str(v).isdigit()]

    def act() -> str:
        out = reviewing.sign_off(session, job, user, defective, request.app.state.executor)
        verdict = "accepted: the job continues" if out["accepted"] else "refused"
        return (f"sign-off {verdict} ({out['defects']} defective of {out['n']}; upper bound {out['upper_bound']:.1%}, "
                f"limit {out['max_defect_rate']:.1%})")

    return _act(job.id, {}, None, act, page="signoff")


@router.get("/audit")
def audit_page(request: Request, job: PageJob, user: PageReviewer):
    folder = review_dir(Path(job.run_dir))
    problems = verify_log(folder)
    return render(request, "audit.html", {"job": job, "entries": read_log(folder), "problems": problems})
