"""Jobs: submit a spec upload, list, show (status, cost, progress per stage), events (paged and as a live
Server-Sent Events stream), cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from sse_starlette.sse import EventSourceResponse

from distill.service import jobs, paging, quotas
from distill.service.db import User
from distill.service.events import AfterQuery, LastEventId, event_stream, read_events
from distill.service.deps import (
    BearerCredentials, Customer, JobDep, SessionDep, UserDep, current_user, find_visible_job, permit,
)
from distill.service.problems import problem_responses
from distill.service.schemas import EventPage, JobOut, JobPage, JobStatus
from distill.service.uploads import MAX_UPLOAD_BYTES

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def streamed_job(request: Request, job_id: str, credentials: BearerCredentials) -> str:
    """The id of a job the caller may see, checked in one short session of its own (one worker thread,
    no connection held between dependency steps): an event stream holds no connection, neither while it
    waits for events nor while it waits to start."""
    with request.app.state.sessions() as session:
        return find_visible_job(session, current_user(session, credentials), job_id).id


StreamedJob = Annotated[str, Depends(streamed_job)]


@router.post("", status_code=201, response_model=JobOut, operation_id="submitJob",
             responses=problem_responses(401, 402, 403, 413, 422, 429))
def submit(request: Request, session: SessionDep, file: Annotated[UploadFile, File(description="a spec YAML, or a tar/tar.gz/zip of a spec folder")],
           spec_path: Annotated[str | None, Form(description="the spec's path inside an archive")] = None,
           user: User = Customer) -> JobOut:
    """Submit a spec: validated like `distill validate`; problems come back as a located list. Past a tenant's
    quota (jobs waiting, submissions a minute): 429 naming the limit, with Retry-After."""
    quotas.check_submission(session, user.tenant_id, request.app.state.limits)
    data = file.file.read(MAX_UPLOAD_BYTES + 1)
    job = jobs.submit_job(session, user, data, file.filename or "", spec_path, request.app.state.data_dir)
    request.app.state.executor.wake()
    return JobOut(**jobs.job_summary(job, detail=True))


@router.get("", response_model=JobPage, operation_id="listJobs", responses=problem_responses(401, 422))
def list_jobs(session: SessionDep, user: UserDep, status: JobStatus | None = None,
              cursor: Annotated[str | None, Query(description=paging.CURSOR_DESCRIPTION)] = None,
              limit: Annotated[int, Query(ge=1, le=500, description=paging.LIMIT_DESCRIPTION)] = 100) -> JobPage:
    """The jobs the caller may see, newest first, a page at a time."""
    page, more = jobs.list_jobs(session, user, status, limit, cursor)
    return JobPage(jobs=[JobOut(**jobs.job_summary(job)) for job in page], next_cursor=more)


@router.get("/{job_id}", response_model=JobOut, operation_id="getJob", responses=problem_responses(401, 404))
def show(job: JobDep) -> JobOut:
    return JobOut(**jobs.job_summary(job, detail=True))


@router.post("/{job_id}/cancel", response_model=JobOut, operation_id="cancelJob", responses=problem_responses(401, 403, 404))
def cancel(request: Request, job: JobDep, session: SessionDep, user: User = permit("cancel")) -> JobOut:
    jobs.cancel_job(session, job)
    request.app.state.executor.wake()
    return JobOut(**jobs.job_summary(job))


@router.post("/{job_id}/retry", response_model=JobOut, operation_id="retryJob", responses=problem_responses(401, 403, 404, 409))
def retry(request: Request, job: JobDep, session: SessionDep, user: User = permit("retry")) -> JobOut:
    """Retry a failed job from its failed stage; earlier stages' work and the review's sign-off are kept.
    409 when the job has not failed."""
    jobs.retry_job(session, job)
    request.app.state.executor.wake()
    return JobOut(**jobs.job_summary(job))


@router.get("/{job_id}/events", response_model=EventPage, operation_id="listJobEvents",
            responses=problem_responses(401, 404, 422))
def events(job: JobDep, session: SessionDep, after: AfterQuery = 0,
           limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> EventPage:
    page = read_events(session, job.id, after, limit)
    return EventPage(events=page, next_after=page[-1].id if page else after)


@router.get("/{job_id}/events/stream", response_class=EventSourceResponse, operation_id="streamJobEvents",
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "one SSE message per event"}, **problem_responses(401, 404, 422)})
async def stream(request: Request, streamed: StreamedJob, after: AfterQuery = 0,
                 last_event_id: LastEventId = None) -> EventSourceResponse:
    """The job's events as Server-Sent Events (resumes after `Last-Event-ID`, else after `after`); ends
    when the job has finished. A comment line every 15 s keeps proxies from closing an idle stream."""
    return event_stream(request, streamed, last_event_id if last_event_id is not None else after)

