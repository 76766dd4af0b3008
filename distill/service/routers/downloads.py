"""Downloads: the released bundle (tar.gz, sha256 in `X-Content-SHA256`, HTTP Range), the eval report,
the model and dataset cards, and (when the tenant's policy allows it) the reviewed dataset. Before the
release gate has passed every download is a 409."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

from distill.service import downloads
from distill.service.deps import JobDep, SessionDep

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["downloads"])


@router.get("/bundle", response_class=FileResponse, responses={409: {"description": "not released yet"}})
def bundle(job: JobDep) -> FileResponse:
    """The release bundle as tar.gz; `Range: bytes=...` resumes a download; check it with `distill verify`."""
    return downloads.bundle(job)


@router.get("/report", response_class=FileResponse)
def report(job: JobDep, format: Literal["html", "md", "json"] = "html") -> FileResponse:
    return downloads.report(job, format)


@router.get("/cards/{which}", response_class=FileResponse)
def card(job: JobDep, which: Literal["model", "dataset"]) -> FileResponse:
    return downloads.card(job, which)


@router.get("/dataset", response_class=FileResponse)
def dataset(job: JobDep, session: SessionDep) -> FileResponse:
    """The reviewed dataset as JSONL, when the tenant's policy allows customers to download it."""
    return downloads.dataset(session, job)
