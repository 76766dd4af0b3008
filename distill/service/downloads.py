"""What a released job offers for download, for the API's routes (routers/downloads.py) and the web pages
alike: the bundle (with its sha256), the eval report, the model and dataset cards, and the reviewed
dataset. Before the release gate has passed each is a 409."""

from __future__ import annotations

from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import FileResponse

from distill.rundir import file_sha256, write_atomic
from distill.service import runner
from distill.service.db import Tenant

NOT_YET = "the job has not been released yet (it is {status}); downloads open once the release gate passes"


def released(job) -> Path:
    """The job's bundle archive, or 409 before the release."""
    archive = runner.bundle_archive(Path(job.run_dir))
    if archive is None:
        raise HTTPException(409, NOT_YET.format(status=job.status))
    return archive


def sha256(path: Path) -> str:
    sidecar = path.with_name(path.name + ".sha256")  # computed once per bundle
    if not sidecar.is_file() or sidecar.stat().st_mtime < path.stat().st_mtime:
        write_atomic(sidecar, file_sha256(path))
    return sidecar.read_text().strip()


def bundle(job) -> FileResponse:
    archive = released(job)
    return FileResponse(archive, media_type="application/gzip", filename=archive.name,
                        headers={"X-Content-SHA256": sha256(archive)})


def report(job, format: str) -> FileResponse:
    released(job)
    path = runner.eval_report(Path(job.run_dir), format)
    if path is None:
        raise HTTPException(404, f"the job has no {format} eval report")
    return FileResponse(path, filename=path.name)


def card(job, which: str) -> FileResponse:
    released(job)
    path = runner.card(Path(job.run_dir), which)
    if path is None:
        raise HTTPException(404, f"the bundle has no {which} card")
    return FileResponse(path, media_type="text/markdown", filename=path.name)


def dataset(session, job) -> FileResponse:
    released(job)
    if not session.get(Tenant, job.tenant_id).dataset_download:
        raise HTTPException(403, "this tenant's policy does not allow downloading the dataset")
    return FileResponse(runner.dataset_archive(Path(job.run_dir)), media_type="application/jsonl", filename="dataset.jsonl")
