"""Pages for everyone: log in and out, the jobs list (a reviewer's queue), submitting a spec (checked
before it is submitted, problems shown at their line), and the job page with its live events and
downloads. Downloads and the event stream come from the same service functions the API's routes call,
with the job the session may see."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from distill.errors import DistillError
from distill.service import downloads, jobs, quotas, runner
from distill.service.events import AfterQuery, LastEventId, event_stream
from distill.service.db import Tenant
from distill.service.deps import SessionDep
from distill.service.uploads import MAX_UPLOAD_BYTES, UploadError, find_spec_file, problem_json
from distill.service.web.render import render
from distill.service.web.sessions import (
    COOKIE, LIFETIME, LOGIN_COOKIE, Csrf, PageCanceller, PageCustomer, PageJob, PageRetrier, PageStreamedJob, PageUser, WebSessionDep,
    end_session,
    set_cookie, start_session,
)
from distill.service.web.documents import FIGURE, report_with_charts
from distill.service.web.views import job_view

router = APIRouter(prefix="/ui", include_in_schema=False)


@router.get("/login")
def login_page(request: Request, next: str = "/ui/"):
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", {"next": _local(next), "login_csrf": token})
    set_cookie(response, request, LOGIN_COOKIE, token, max_age=3600)
    return response


@router.post("/login")
def login(request: Request, session: SessionDep, token: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "/ui/"):
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(csrf.encode(), expected.encode()):
        raise HTTPException(403, "the login form's CSRF token is missing or wrong; reload the login page")
    started = start_session(session, token)
    if started is None:
        fresh = secrets.token_urlsafe(32)
        response = render(request, "login.html", {"next": _local(next), "login_csrf": fresh,
                                                  "error": "unknown, revoked or malformed token"}, status_code=401)
        set_cookie(response, request, LOGIN_COOKIE, fresh, max_age=3600)
        return response
    response = RedirectResponse(_local(next), status_code=303)
    set_cookie(response, request, COOKIE, started[1], max_age=int(LIFETIME.total_seconds()))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


def _local(url: str) -> str:
    """Only redirect within the app (no open redirect to another site)."""
    return url if url.startswith("/ui/") and not url.startswith("//") else "/ui/"


@router.post("/logout", dependencies=[Csrf])
def logout(row: WebSessionDep, session: SessionDep):
    end_session(session, row)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/")
def jobs_list(request: Request, user: PageUser, session: SessionDep, status: str | None = None):
    found = [jobs.job_summary(job, detail=True) for job in jobs.list_jobs(session, user, status or None)[0]]
    tenants = {t.id: t.name for t in session.query(Tenant)} if user.role != "customer" else {}
    return render(request, "jobs.html", {"jobs": found, "tenants": tenants, "status": status or "",
                                         "statuses": jobs.STATUSES})


@router.get("/submit")
def submit_page(request: Request, user: PageCustomer):
    return render(request, "submit.html", {"spec_text": "", "spec_path": "", "check": None})


async def _read_upload(spec_text: str, archive: UploadFile | None) -> tuple[bytes, str, str | None]:
    """(data, filename, spec text override): an archive with the editor's text replacing its spec, or the text alone."""
    if archive is not None and archive.filename:
        data = await archive.read(MAX_UPLOAD_BYTES + 1)
        return data, archive.filename, spec_text if spec_text.strip() else None
    if not spec_text.strip():
        raise UploadError(_problem("paste a spec, or choose a spec file or a spec folder archive"))
    return spec_text.encode(), "spec.yaml", None


def _problem(message: str):
    from distill.errors import Problem

    return Problem(message, key="spec")


def check_result(request: Request, session, user, data: bytes, filename: str, spec_path: str | None,
                 spec_text: str | None) -> dict:
    """Run every submission check in a scratch folder; the located problems, the spec's text and the estimate."""
    data_dir = request.app.state.data_dir
    folder = jobs.job_folder(data_dir, f"check_{secrets.token_hex(8)}")
    tenant = session.get(Tenant, user.tenant_id)
    try:
        spec_file, checked, remaining = jobs.check_upload(session, tenant, data, filename, spec_path or None, folder,
                                                          data_dir, spec_text)
        return {"ok": True, "problems": [], "text": spec_file.read_text(encoding="utf-8", errors="replace"),
                "file": spec_file.name, "estimate": checked.estimate_usd, "remaining": remaining,
                "records": checked.loaded.spec.records, "warnings": checked.warnings}
    except DistillError as exc:
        problems = [problem_json(p, data_dir) for p in exc.problems]
        text, name = spec_text, None
        try:
            found = find_spec_file(folder / "spec", spec_path or None)
            text, name = found.read_text(encoding="utf-8", errors="replace"), found.name
        except (DistillError, OSError):
            pass
        return {"ok": False, "problems": problems, "text": text or "", "file": name, "estimate": None}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _lines(check: dict) -> list[dict]:
    """The spec's lines, each with the problems located on it (problems in other files listed apart)."""
    at: dict[int, list[dict]] = {}
    for problem in check["problems"]:
        if problem["line"] and (check["file"] is None or Path(problem["file"] or "").name == check["file"]):
            at.setdefault(problem["line"], []).append(problem)
    return [{"number": i, "text": line, "problems": at.get(i, [])} for i, line in enumerate(check["text"].splitlines(), 1)]


@router.post("/submit/check", dependencies=[Csrf])
async def check(request: Request, user: PageCustomer, session: SessionDep, spec_text: Annotated[str, Form()] = "",
                spec_path: Annotated[str, Form()] = "", archive: Annotated[UploadFile | None, File()] = None):
    """The checks a submission gets, without submitting: a partial for the submit page."""
    try:
        data, filename, override = await _read_upload(spec_text, archive)
        result = check_result(request, session, user, data, filename, spec_path, override)
    except DistillError as exc:
        result = {"ok": False, "problems": [problem_json(p, request.app.state.data_dir) for p in exc.problems],
                  "text": spec_text, "file": None, "estimate": None}
    if request.headers.get("x-partial"):
        return render(request, "_check.html", {"check": result, "lines": _lines(result)})
    return render(request, "submit.html", {"spec_text": result["text"], "spec_path": spec_path, "check": result,
                                           "lines": _lines(result)})


@router.post("/submit", dependencies=[Csrf])
async def submit(request: Request, user: PageCustomer, session: SessionDep, spec_text: Annotated[str, Form()] = "",
                 spec_path: Annotated[str, Form()] = "", archive: Annotated[UploadFile | None, File()] = None):
    try:
        quotas.check_submission(session, user.tenant_id, request.app.state.limits)
        data, filename, override = await _read_upload(spec_text, archive)
        job = jobs.submit_job(session, user, data, filename, spec_path or None, request.app.state.data_dir, override)
    except DistillError as exc:
        result = {"ok": False, "problems": [problem_json(p, request.app.state.data_dir) for p in exc.problems],
                  "text": spec_text, "file": None, "estimate": None}
        return render(request, "submit.html", {"spec_text": spec_text, "spec_path": spec_path, "check": result,
                                               "lines": _lines(result)},
                      status_code=429 if isinstance(exc, quotas.QuotaExceeded) else 422)
    request.app.state.executor.wake()
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job: PageJob, session: SessionDep):
    return render(request, "job.html", job_view(session, job))


@router.get("/jobs/{job_id}/status")
def job_status(request: Request, job: PageJob, session: SessionDep):
    """The live part of the job page (timeline, progress, download), refreshed on every event."""
    return render(request, "_status.html", job_view(session, job))


@router.get("/jobs/{job_id}/events/stream")
def job_events(request: Request, streamed: PageStreamedJob, after: AfterQuery = 0, last_event_id: LastEventId = None):
    return event_stream(request, streamed, last_event_id if last_event_id is not None else after)


@router.post("/jobs/{job_id}/cancel", dependencies=[Csrf])
def cancel(request: Request, job: PageJob, user: PageCanceller, session: SessionDep):
    jobs.cancel_job(session, job)
    request.app.state.executor.wake()
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


@router.post("/jobs/{job_id}/retry", dependencies=[Csrf])
def retry(request: Request, job: PageJob, user: PageRetrier, session: SessionDep):
    try:
        jobs.retry_job(session, job)
    except jobs.NotRetryable:
        pass  # retried already (another tab): the job page shows where it is
    request.app.state.executor.wake()
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


@router.get("/jobs/{job_id}/bundle")
def bundle(job: PageJob):
    return downloads.bundle(job)


@router.get("/jobs/{job_id}/report")
def report(job: PageJob, format: Literal["html", "md", "json"] = "html"):
    return downloads.report(job, format)


@router.get("/jobs/{job_id}/cards/{which}")
def card(job: PageJob, which: Literal["model", "dataset"]):
    return downloads.card(job, which)


@router.get("/jobs/{job_id}/eval/{name}")
def eval_file(job: PageJob, name: Literal["report.html", "bpb_curve.png", "scores.png", "probes.png"]):
    """The eval report page (its charts inlined) and each chart."""
    downloads.released(job)
    report_path = runner.eval_report(Path(job.run_dir), "html")
    if report_path is None or not (report_path.parent / name).is_file():
        raise HTTPException(404, f"the job has no {name}")
    if name != "report.html":
        return FileResponse(report_path.parent / name)
    # The report is rendered by the eval stage with its texts escaped, and runs no script either way. In its
    # sandbox its origin is opaque, so its own image requests would carry no session cookie: its charts
    # come inlined, and it may load nothing else.
    return HTMLResponse(report_with_charts(report_path), headers={
        "Content-Security-Policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"})


@router.get("/jobs/{job_id}/figures/{name}")
def figure(job: PageJob, name: str):
    """A chart the released bundle carries (figures/NAME), for the model card shown on the job page."""
    bundle = runner.bundle_dir(Path(job.run_dir))
    if bundle is None or not FIGURE.match(f"figures/{name}") or not (bundle / "figures" / name).is_file():
        raise HTTPException(404, f"the bundle has no figure {name}")
    return FileResponse(bundle / "figures" / name, media_type="image/png")
