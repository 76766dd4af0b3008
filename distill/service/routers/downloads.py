"""Downloads: the released bundle (tar.gz, sha256 in `X-Content-SHA256`, HTTP Range), the eval report,
the model and dataset cards, and (when the tenant's policy allows it) the reviewed dataset. Before the
release gate has passed every download is a 409."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

from distill.service import downloads
from distill.service.deps import JobDep, SessionDep
from distill.service.problems import problem_responses

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["downloads"])
BINARY = {"type": "string", "format": "binary"}
FILE_HEADERS = {
    "Content-Disposition": {"description": "attachment; filename=...", "schema": {"type": "string"}},
    "Accept-Ranges": {"description": "bytes: `Range` requests resume a download", "schema": {"type": "string"}},
}
SHA256 = {"X-Content-SHA256": {"description": "the sha256 of the whole archive (hex)", "schema": {"type": "string"}}}
RANGE_ERRORS = {  # Starlette's answers to a bad `Range` header
    400: {"description": "malformed `Range` header", "content": {"text/plain": {"schema": {"type": "string"}}}},
    416: {"description": "the `Range` is outside the file (`Content-Range: bytes */SIZE`)",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
}


def _file(description: str, *media_types: str, headers: dict | None = None) -> dict[int | str, dict]:
    """The document's entries for a file download: its media types as binary with the headers it sends,
    a byte range of it (206), and the answers to a bad `Range`."""
    ranged = {"Content-Range": {"description": "bytes FIRST-LAST/SIZE", "schema": {"type": "string"}}, **(headers or {})}
    return {200: {"description": description, "content": {media: {"schema": BINARY} for media in media_types},
                  "headers": {**FILE_HEADERS, **(headers or {})}},
            206: {"description": "the requested byte range(s)", "headers": ranged,
                  "content": {media: {"schema": BINARY} for media in (*media_types, "multipart/byteranges")}},
            **RANGE_ERRORS}


BUNDLE = {**_file("the release bundle (tar.gz)", "application/gzip", headers=SHA256), **problem_responses(401, 404, 409)}


@router.get("/bundle", response_class=FileResponse, operation_id="downloadBundle", responses=BUNDLE)
def bundle(job: JobDep) -> FileResponse:
    """The release bundle as tar.gz; `Range: bytes=...` resumes a download; check it with `distill verify`."""
    return downloads.bundle(job)


REPORT = _file("the eval report: html, md or json (eval.json)", "text/html", "text/markdown")
REPORT[200]["content"]["application/json"] = REPORT[206]["content"]["application/json"] = {"schema": {"type": "object"}}


@router.get("/report", response_class=FileResponse, operation_id="downloadReport",
            responses={**REPORT, **problem_responses(401, 404, 409, 422)})
def report(job: JobDep, format: Literal["html", "md", "json"] = "html") -> FileResponse:
    return downloads.report(job, format)


@router.get("/cards/{which}", response_class=FileResponse, operation_id="downloadCard",
            responses={**_file("the model or dataset card (Markdown)", "text/markdown"), **problem_responses(401, 404, 409, 422)})
def card(job: JobDep, which: Literal["model", "dataset"]) -> FileResponse:
    return downloads.card(job, which)


@router.get("/dataset", response_class=FileResponse, operation_id="downloadDataset",
            responses={**_file("the reviewed dataset (JSON Lines)", "application/jsonl"), **problem_responses(401, 403, 404, 409)})
def dataset(job: JobDep, session: SessionDep) -> FileResponse:
    """The reviewed dataset as JSONL, when the tenant's policy allows customers to download it."""
    return downloads.dataset(session, job)
