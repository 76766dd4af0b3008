"""Jobs: the record of one submitted spec, its status machine, its events, cancel, spending caps.

    validating -> queued -> generating -> reviewing -> awaiting_review -> training -> evaluating
               -> releasing -> succeeded          (or failed with an error object, or cancelled)

A job is one run directory underneath (`DATA/jobs/<id>/runs/<spec-name>/main`); the row points at it
and holds only what the service knows: owner, status, the cap applied, the plan's estimate, events.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from distill.errors import DistillError, Problem, scrub_text
from distill.service import paging, runner, webhooks
from distill.service.accounts import new_id, visible_tenants
from distill.service.base_models import bring_job_model
from distill.service.db import Event, Job, Tenant, User, utcnow
from distill.service.uploads import extract_upload, find_spec_file, teacher_problems

ACTIVE = ("generating", "reviewing", "training", "evaluating", "releasing")
RUNNABLE = ("queued", *ACTIVE)  # what an executor picks up (a dead executor's jobs resume from their run dir)
TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ("validating", "queued", *ACTIVE[:2], "awaiting_review", *ACTIVE[2:], *TERMINAL)


class SpendingCapError(DistillError):
    """The plan's estimate does not fit in what is left of the tenant's spending cap."""

    title = "over the spending cap"


def job_folder(data_dir: Path, job_id: str) -> Path:
    return Path(data_dir).resolve() / "jobs" / job_id


def add_event(session: Session, job_id: str, type: str, message: str, data: dict[str, Any] | None = None) -> None:
    session.add(Event(job_id=job_id, type=type, message=message, data=data))


def set_status(session: Session, job: Job, status: str, message: str = "", **data: Any) -> None:
    """Move a job to `status` with an event; terminal states also stamp finished_at."""
    job.status = status
    if status in TERMINAL:
        job.finished_at = utcnow()
    add_event(session, job.id, "status", message or f"job is {status}", {"status": status, **data})
    webhooks.record_state_change(session, job, status)
    session.commit()


def tenant_spent(session: Session, data_dir: Path, tenant_id: str) -> float:
    """What the tenant's jobs have spent so far, read from their run directories."""
    jobs = session.scalars(select(Job).where(Job.tenant_id == tenant_id))
    return sum(runner.spent_usd(Path(job.run_dir)) for job in jobs)


def check_upload(session: Session, tenant: Tenant, data: bytes, filename: str, spec_path: str | None,
                 folder: Path, data_dir: Path, spec_text: str | None = None) -> tuple[Path, runner.CheckedSpec, float | None]:
    """Unpack an upload into `folder/spec` and run every check a submission gets (the spec's own checks,
    the tenant's allowed key variables, its spending cap). Returns the spec file, the checked spec and
    what is left of the cap (None: no cap); raises UploadError/SpecError/SpendingCapError, located.
    `spec_text` (the web app's spec editor) replaces the spec file's text after unpacking."""
    extract_upload(data, filename, folder / "spec")
    spec_file = find_spec_file(folder / "spec", spec_path)
    if spec_text is not None:
        spec_file.write_text(spec_text, encoding="utf-8")
    bring_job_model(session, tenant.id, spec_file)
    # one pass: the spec's own checks, every path it names confined to the upload, and the tenant's rules
    checked = runner.check_and_plan(spec_file, server=True,
                                    more=lambda loaded: teacher_problems(loaded.spec, tenant.allowed_key_envs, spec_file))
    remaining = None
    if tenant.spending_cap_usd is not None:
        remaining = tenant.spending_cap_usd - tenant_spent(session, data_dir, tenant.id)
        if checked.estimate_usd is None or checked.estimate_usd > remaining:
            estimate = "unknown (no price for the model)" if checked.estimate_usd is None else f"${checked.estimate_usd:,.2f}"
            raise SpendingCapError(Problem(f"the plan's estimated cost {estimate} exceeds what is left of the tenant's "
                                           f"spending cap (${remaining:,.2f})", file=str(spec_file), key="records",
                                           hint="submit fewer records or ask the operator to raise the cap"))
    return spec_file, checked, remaining


def submit_job(session: Session, user: User, data: bytes, filename: str, spec_path: str | None, data_dir: Path,
               spec_text: str | None = None) -> Job:
    """Unpack and validate an upload and queue its job; raises UploadError/SpecError/SpendingCapError with
    located problems (nothing is kept of a refused upload)."""
    tenant = session.get(Tenant, user.tenant_id)
    job_id = new_id("job")
    folder = job_folder(data_dir, job_id)
    try:
        spec_file, checked, remaining = check_upload(session, tenant, data, filename, spec_path, folder, data_dir, spec_text)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    spec = checked.loaded.spec
    job = Job(id=job_id, tenant_id=tenant.id, created_by=user.id, spec_name=spec.name, spec_file=str(spec_file),
              run_dir=str(runner.run_dir_for(folder / "runs", spec.name)), status="validating",
              estimate_usd=checked.estimate_usd, max_cost_usd=remaining)
    session.add(job)
    session.flush()
    add_event(session, job.id, "status", "spec received; validating", {"status": "validating"})
    add_event(session, job.id, "info", f"spec valid; plan estimate {_usd(checked.estimate_usd)}",
              {"estimate_usd": checked.estimate_usd, "warnings": checked.warnings})
    set_status(session, job, "queued", "job queued")
    return job


def list_jobs(session: Session, user: User, status: str | None = None, limit: int = 100,
              cursor: str | None = None) -> tuple[list[Job], str | None]:
    """A page of the jobs the user may see (their tenant's; a reviewer's assigned tenants'; every job for
    admins), newest first, from `cursor` on; and the next page's cursor (None on the last)."""
    query = select(Job)
    tenants = visible_tenants(session, user)
    if tenants is not None:
        query = query.where(Job.tenant_id.in_(tenants))
    if status:
        query = query.where(Job.status == status)
    return paging.newest_first(session, query, Job, cursor, limit)


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


def cancel_job(session: Session, job: Job) -> Job:
    """Queued or waiting jobs stop at once; a running job's executor stops its worker and marks it."""
    if job.status in TERMINAL:
        return job
    if job.status in ("validating", "queued", "awaiting_review") and job.lease_owner is None:
        set_status(session, job, "cancelled", "job cancelled")
    else:
        job.cancel_requested = True
        add_event(session, job.id, "info", "cancel requested")
        session.commit()
    return job


class NotRetryable(DistillError):
    """Only a failed job can be retried."""

    title = "cannot retry"


def retry_job(session: Session, job: Job) -> Job:
    """Queue a failed job again: it resumes at the stage that failed, every earlier stage's work and the
    review's sign-off kept (each stage resumes from its files). Raises NotRetryable unless it failed."""
    moved = session.execute(update(Job).where(Job.id == job.id, Job.status == "failed")
                            .values(status="queued", error=None, finished_at=None, worker_deaths=0, cancel_requested=False)
                            .execution_options(synchronize_session=False)).rowcount
    if not moved:
        session.rollback()
        session.refresh(job)
        raise NotRetryable(Problem(f"the job is {job.status}; only a failed job can be retried", key="status"))
    add_event(session, job.id, "status", "job retried: it resumes at the stage that failed, earlier stages' work and "
              "the sign-off kept", {"status": "queued"})
    session.commit()
    session.refresh(job)
    return job


def resume_after_signoff(session: Session, job: Job) -> bool:
    """A job waiting for review continues once the policy's sign-off exists. The sign-off request and
    every executor may all see it at once; a conditional update lets exactly one of them move the job,
    so the event is written once."""
    if job.status != "awaiting_review" or not runner.signed_off(Path(job.run_dir)):
        return False
    return transition(session, job, "awaiting_review", "queued", "dataset signed off; training continues")


def transition(session: Session, job: Job, current: str, status: str, message: str) -> bool:
    """Move a job from `current` to `status` with an event, unless someone else moved it first: the
    database checks `current` in the same statement, so of several sessions racing, exactly one wins."""
    moved = session.execute(update(Job).where(Job.id == job.id, Job.status == current).values(status=status)
                            .execution_options(synchronize_session=False)).rowcount
    if moved:
        add_event(session, job.id, "status", message, {"status": status})
        webhooks.record_state_change(session, job, status)
    session.commit()
    session.refresh(job)
    return bool(moved)


def iso(value: datetime | None) -> str | None:
    """Times are stored in UTC (SQLite hands them back without the zone)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat(timespec="seconds")


def public_error(job: Job) -> dict[str, Any] | None:
    """A failed job's error as its tenant may see it: spec files relative to the upload, no other server
    path, no Python class name (a code like `SpecError` becomes `spec_error`)."""
    if not job.error:
        return job.error
    folder = Path(job.run_dir).parents[2] / "spec"
    error = dict(job.error)
    error["code"] = re.sub(r"(?<!^)(?=[A-Z])", "_", str(error.get("code", ""))).lower()
    if error["code"] == "internal_error":
        error["message"] = f"an internal error (the server's worker log for {job.id} has the details)"
    else:
        error["message"] = scrub_text(error.get("message"), folder)
    error["problems"] = [{**p, "message": scrub_text(p.get("message"), folder), "hint": scrub_text(p.get("hint"), folder)}
                         for p in error.get("problems") or []]
    return error


def job_summary(job: Job, *, detail: bool = False) -> dict[str, Any]:
    run_dir = Path(job.run_dir)
    out = {
        "id": job.id, "tenant_id": job.tenant_id, "spec_name": job.spec_name, "status": job.status,
        "error": public_error(job), "created_at": iso(job.created_at), "finished_at": iso(job.finished_at),
        "estimate_usd": job.estimate_usd, "max_cost_usd": job.max_cost_usd, "cost_usd": runner.spent_usd(run_dir),
        "cancel_requested": job.cancel_requested,
    }
    if detail:
        out["progress"] = runner.progress(run_dir)
    return out

