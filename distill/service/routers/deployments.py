"""Cold start in the service: deploy a released job, upload/list/delete its captures, build the next job
from them, promote or roll back the deployment. The deployment itself is served by `gateway.py`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select

from distill.serving.capture import DeleteRequest, delete_captures
from distill.service import deployments as logic
from distill.service import jobs, paging
from distill.service.db import Deployment, Job, User
from distill.service.deps import JobDep, SessionDep, UserDep, permit
from distill.service.problems import problem_responses
from distill.service.schemas import (
    CapturePage, CapturesDeleted, CapturesKept, ColdStartOut, DeploymentOut, DeploymentPage, LineageOut,
)

router = APIRouter(tags=["deployments"])
Owner = permit("deploy")


class CaptureSettings(BaseModel):
    enabled: bool = Field(False, description="capture real inputs (redacted; requests may opt out)")
    rate: float = Field(1.0, ge=0.0, le=1.0, description="the share of requests kept")
    retention_days: int = Field(30, ge=1, le=3650, description="captures older than this are purged")


class DeploymentIn(BaseModel):
    capture: CaptureSettings = Field(default_factory=CaptureSettings)


class SwitchIn(BaseModel):
    job_id: str = Field(description="the released job whose bundle takes the traffic")
    percent: int = Field(100, ge=1, le=100, description="100 switches over; less splits the traffic")
    force: str | None = Field(None, description="promote although v2 was not better on real inputs; the reason is recorded")


def _deployment(session, user: User, deployment_id: str) -> Deployment:
    row = session.get(Deployment, deployment_id)
    if row is None or not logic.can_use(user, row):
        raise HTTPException(404, f"no deployment {deployment_id}")
    return row


def _data_dir(request: Request) -> Path:
    return request.app.state.data_dir


@router.post("/v1/jobs/{job_id}/deployment", status_code=201, response_model=DeploymentOut, operation_id="deployJob",
             responses=problem_responses(401, 403, 404, 409, 422))
def deploy(request: Request, job: JobDep, session: SessionDep, body: DeploymentIn | None = None, user: User = Owner) -> dict:
    """Serve the job's released, verified bundle under /v1/deployments/<id>/ (OpenAI-compatible). A job is
    deployed once: deploying it again is a 409 naming its deployment."""
    settings = (body or DeploymentIn()).capture
    row = logic.create_deployment(session, user, job, _data_dir(request), capture=settings.enabled,
                                  rate=settings.rate, retention_days=settings.retention_days)
    return logic.deployment_summary(row)


@router.get("/v1/deployments", response_model=DeploymentPage, operation_id="listDeployments",
            responses=problem_responses(401, 422))
def list_deployments(session: SessionDep, user: UserDep,
                     cursor: Annotated[str | None, Query(description=paging.CURSOR_DESCRIPTION)] = None,
                     limit: Annotated[int, Query(ge=1, le=500, description=paging.LIMIT_DESCRIPTION)] = 100) -> dict:
    """The deployments of the caller's tenant (every one for admins), newest first."""
    query = select(Deployment)
    if user.role != "admin":
        query = query.where(Deployment.tenant_id == user.tenant_id)
    page, more = paging.newest_first(session, query, Deployment, cursor, limit)
    return {"deployments": [logic.deployment_summary(r) for r in page], "next_cursor": more}


@router.get("/v1/deployments/{deployment_id}", response_model=DeploymentOut, operation_id="getDeployment",
            responses=problem_responses(401, 404))
def show_deployment(deployment_id: str, session: SessionDep, user: UserDep) -> dict:
    return logic.deployment_summary(_deployment(session, user, deployment_id))


@router.post("/v1/deployments/{deployment_id}/promote", response_model=DeploymentOut, operation_id="promoteDeployment",
             responses=problem_responses(401, 403, 404, 409, 422))
async def promote(request: Request, deployment_id: str, body: SwitchIn, session: SessionDep, user: User = Owner) -> dict:
    """Send traffic to another released job of the tenant, through its release gate and (for a cold-start
    job) the comparison with the serving model on its held-out real inputs."""
    row = _deployment(session, user, deployment_id)
    target = session.get(Job, body.job_id)
    if target is None or target.tenant_id != row.tenant_id:
        raise HTTPException(404, f"no job {body.job_id}")
    await run_in_threadpool(logic.switch, session, row, "promote", target, _data_dir(request),
                            percent=body.percent, force=body.force)
    request.app.state.gateway.forget(row.id)
    return logic.deployment_summary(row)


@router.post("/v1/deployments/{deployment_id}/rollback", response_model=DeploymentOut, operation_id="rollBackDeployment",
             responses=problem_responses(401, 403, 404, 422))
def rollback(request: Request, deployment_id: str, session: SessionDep, user: User = Owner) -> dict:
    row = _deployment(session, user, deployment_id)
    logic.switch(session, row, "rollback", None, _data_dir(request))
    request.app.state.gateway.forget(row.id)
    return logic.deployment_summary(row)


# --- captures ---


@router.post("/v1/jobs/{job_id}/captures", status_code=201, response_model=CapturesKept, operation_id="uploadCaptures",
             responses=problem_responses(401, 403, 404, 413, 422))
def upload_captures(request: Request, job: JobDep, session: SessionDep, file: Annotated[UploadFile, File(description="a capture log (JSONL)")],
                    user: User = Owner) -> dict:
    """Append a capture log in the standalone server's format; every line is checked (bad lines come back
    with their line numbers, nothing is kept) and redacted again."""
    data = file.file.read(logic.MAX_CAPTURE_UPLOAD_BYTES + 1)
    kept = logic.ingest_captures(data, _data_dir(request), job.id, file.filename or "captures.jsonl")
    jobs.add_event(session, job.id, "info", f"{kept} captured requests uploaded", {"captures": kept})
    session.commit()
    return {"kept": kept}


@router.get("/v1/jobs/{job_id}/captures", response_model=CapturePage, operation_id="listCaptures",
            responses=problem_responses(401, 404, 422))
def list_captures(request: Request, job: JobDep, request_id: str | None = None, since: datetime | None = None,
                  until: datetime | None = None, cursor: Annotated[str | None, Query(description=paging.CURSOR_DESCRIPTION)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000, description=paging.LIMIT_DESCRIPTION)] = 100) -> dict:
    """The newest captures first: each page holds older ones than the page before (oldest first within a page)."""
    path = logic.capture_path(_data_dir(request), job.id)
    before = paging.decode_cursor(cursor, str, str) if cursor is not None else None
    lines, more = logic.list_captures(path, request_id=request_id, since=since, until=until, limit=limit, before=before)
    return {"captures": lines, "count": len(lines), "next_cursor": paging.encode_cursor(*more) if more else None}


@router.post("/v1/jobs/{job_id}/captures/delete", response_model=CapturesDeleted, operation_id="deleteCaptures",
             responses=problem_responses(401, 403, 404, 422))
def delete_by_range(request: Request, job: JobDep, body: DeleteRequest, user: User = Owner) -> dict:
    """Delete captures by request ids and/or a date range [since, until)."""
    return {"deleted": delete_captures(logic.capture_path(_data_dir(request), job.id), body)}


@router.delete("/v1/jobs/{job_id}/captures/{request_id}", response_model=CapturesDeleted, operation_id="deleteCapture",
               responses=problem_responses(401, 403, 404))
def delete_one(request: Request, job: JobDep, request_id: str, user: User = Owner) -> dict:
    deleted = delete_captures(logic.capture_path(_data_dir(request), job.id), DeleteRequest(request_ids=[request_id]))
    if not deleted:
        raise HTTPException(404, f"no capture {request_id}")
    return {"deleted": deleted}


# --- the next job ---


@router.post("/v1/jobs/{job_id}/coldstart", status_code=202, response_model=ColdStartOut, operation_id="startColdStart",
             responses=problem_responses(401, 403, 404, 409))
def coldstart(request: Request, job: JobDep, session: SessionDep, user: User = Owner) -> dict:
    """Build the next job from this job's captures (as `distill coldstart`); it shows up as a new job."""
    app = request.app
    nxt = logic.start_coldstart(app.state.sessions, session, user, job, _data_dir(request), app.state.executor.wake)
    return {**jobs.job_summary(nxt), "parent_job": job.id}


@router.get("/v1/jobs/{job_id}/lineage", response_model=LineageOut, operation_id="getLineage",
            responses=problem_responses(401, 404))
def lineage(job: JobDep) -> dict:
    found = logic.lineage(job)
    if found is None:
        raise HTTPException(404, f"job {job.id} is not a cold-start job (or its dataset is not built yet)")
    return found
