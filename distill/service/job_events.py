"""A job's events for the API's routes and the web pages alike: a page of them, and the live Server-Sent
Events stream (resumed from `Last-Event-ID`, ended when the job has finished)."""

from __future__ import annotations

import asyncio

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sse_starlette.sse import EventSourceResponse

from distill.service.db import Event, Job
from distill.service.jobs import TERMINAL, iso
from distill.service.schemas import EventOut


def events_after(session, job_id: str, after: int, limit: int) -> list[EventOut]:
    """The job's events after id `after`, oldest first (the API's pages and the job page read these)."""
    rows = session.scalars(select(Event).where(Event.job_id == job_id, Event.id > after).order_by(Event.id).limit(limit))
    return [EventOut(id=e.id, time=iso(e.time), type=e.type, message=e.message, data=e.data) for e in rows]


def event_stream(request, job: Job, after: int) -> EventSourceResponse:
    """The job's events as Server-Sent Events from `Last-Event-ID` (or `after`); ends when the job has finished."""
    last = int(request.headers.get("last-event-id") or after)
    sessions, job_id = request.app.state.sessions, job.id

    def poll(since: int) -> tuple[list[EventOut], str]:
        with sessions() as session:
            return events_after(session, job_id, since, 500), session.get(Job, job_id).status

    async def generate():
        since = last
        while True:
            page, status = await run_in_threadpool(poll, since)
            for event in page:
                since = event.id
                yield {"id": str(event.id), "event": event.type, "data": event.model_dump_json()}
            if not page and status in TERMINAL:
                return
            if not page:
                await asyncio.sleep(0.5)

    return EventSourceResponse(generate(), ping=15)
