"""Live job events for many listeners, without a database connection per listener.

Workers write events to the `events` table (from other processes, so nothing in this process is told).
One `EventNotifier` per API process polls that table for rows newer than the last it saw (one short
query every `POLL_S`, on one pooled connection for a few milliseconds) and hands each new event to the
listeners of its job, each an asyncio queue. A stream route reads its backlog once with a short session,
subscribes, and then waits on its queue: an open stream holds no connection, so a thousand browser tabs
cost a thousand queues, not a thousand connections (the pool is sized for requests, see docs/service.md).

A listener that falls more than `QUEUE_SIZE` events behind (a client that stopped reading) is marked
lagged and reads what it missed from the table again; the notifier never waits for a listener.

On PostgreSQL a transaction that took a lower event id can commit after one with a higher id; the
notifier would pass over it. Every writer here commits each event at once, so the window is a few
milliseconds; a listener that reconnects with `Last-Event-ID` reads from the table and catches up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Header, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from sse_starlette.sse import EventSourceResponse

from distill.service.db import Event, Job
from distill.service.schemas import EventOut

log = logging.getLogger("distill.service")
POLL_S = 0.25
QUEUE_SIZE = 1000
BACKLOG_PAGE = 500
MAX_EVENT_ID = 2**63 - 1  # the largest id the events table can hold (SQLite and PostgreSQL bigint)
TERMINAL = ("succeeded", "failed", "cancelled")


def event_out(row: Event) -> EventOut:
    from distill.service.jobs import iso

    return EventOut(id=row.id, time=iso(row.time), type=row.type, message=row.message, data=row.data)


def read_events(session, job_id: str, after: int, limit: int) -> list[EventOut]:
    rows = session.scalars(select(Event).where(Event.job_id == job_id, Event.id > after).order_by(Event.id).limit(limit))
    return [event_out(e) for e in rows]


def latest_events(session, job_id: str, count: int) -> list[EventOut]:
    """The job's newest `count` events, oldest first."""
    rows = session.scalars(select(Event).where(Event.job_id == job_id).order_by(Event.id.desc()).limit(count))
    return [event_out(e) for e in reversed(list(rows))]


@dataclass(eq=False)
class Listener:
    job_id: str
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    lagged: bool = False  # it missed events (its queue was full): read them from the table


class EventNotifier:
    """Polls the events table and fans new events out to every listener of their job."""

    def __init__(self, sessions: sessionmaker, *, poll_s: float = POLL_S):
        self.sessions = sessions
        self.poll_s = poll_s
        self.listeners: dict[str, set[Listener]] = {}
        self.watchers: list[Callable[[str, EventOut], None]] = []  # told of every new event (the metrics)
        self.last_id = 0
        self._task: asyncio.Task | None = None

    @property
    def open_streams(self) -> int:
        return sum(len(group) for group in self.listeners.values())

    async def start(self) -> None:
        self.last_id = await asyncio.to_thread(self._newest_id)
        self._task = asyncio.create_task(self._run(), name="distill-event-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def subscribe(self, job_id: str) -> Listener:
        listener = Listener(job_id)
        self.listeners.setdefault(job_id, set()).add(listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        group = self.listeners.get(listener.job_id, set())
        group.discard(listener)
        if not group:
            self.listeners.pop(listener.job_id, None)

    async def _run(self) -> None:
        while True:
            try:
                rows = await asyncio.to_thread(self._fetch, self.last_id)
            except Exception:  # a database hiccup must not end every stream: say so, try again
                log.exception("event notifier poll failed")
                rows = []
            for job_id, event in rows:
                self.last_id = max(self.last_id, event.id)
                self._hand_out(job_id, event)
            await asyncio.sleep(self.poll_s)

    def _hand_out(self, job_id: str, out: EventOut) -> None:
        for watch in self.watchers:
            watch(job_id, out)
        for listener in self.listeners.get(job_id, ()):
            if listener.lagged:
                continue
            try:
                listener.queue.put_nowait(out)
            except asyncio.QueueFull:
                listener.lagged = True

    def _newest_id(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.max(Event.id))) or 0

    def _fetch(self, after: int) -> list[tuple[str, EventOut]]:
        with self.sessions() as session:
            rows = session.scalars(select(Event).where(Event.id > after).order_by(Event.id).limit(1000))
            return [(e.job_id, event_out(e)) for e in rows]


def job_finished(session, job_id: str) -> bool:
    return session.get(Job, job_id).status in TERMINAL


async def follow(notifier: EventNotifier, job_id: str, after: int) -> AsyncIterator[EventOut]:
    """The job's events after `after`, then each new one as it is written; ends after the job's terminal
    status event. Database reads are short and run in a thread; waiting holds no connection (and
    takes no query: the notifier's one poll serves every listener)."""
    listener = notifier.subscribe(job_id)  # before reading the backlog, so nothing falls between the two
    try:
        since = after
        while True:
            backlog, finished = await asyncio.to_thread(_backlog, notifier.sessions, job_id, since)
            for event in backlog:
                since = event.id
                yield event
            if len(backlog) == BACKLOG_PAGE:
                continue  # more to read
            if finished:
                return
            listener.lagged = False
            while not (listener.lagged and listener.queue.empty()):  # lagged: what it missed is in the table
                event = await listener.queue.get()  # every way a job ends writes a status event
                if event.id <= since:
                    continue
                since = event.id
                yield event
                if event.type == "status" and (event.data or {}).get("status") in TERMINAL:
                    return
    finally:
        notifier.unsubscribe(listener)


def _backlog(sessions: sessionmaker, job_id: str, since: int) -> tuple[list[EventOut], bool]:
    with sessions() as session:
        return read_events(session, job_id, since, BACKLOG_PAGE), job_finished(session, job_id)


# The stream's parameters and response, for the API's route and the job page alike.
AfterQuery = Annotated[int, Query(ge=0, le=MAX_EVENT_ID, description="events with a larger id than this")]
LastEventId = Annotated[int | None, Header(ge=0, le=MAX_EVENT_ID, description="the id of the last event received; "
                                           "the stream resumes after it (browsers send it when they reconnect)")]


def event_stream(request: Request, job_id: str, after: int) -> EventSourceResponse:
    async def generate():
        async with aclosing(follow(request.app.state.notifier, job_id, after)) as events:  # unsubscribes on disconnect
            async for event in events:
                yield {"id": str(event.id), "event": event.type, "data": event.model_dump_json()}

    return EventSourceResponse(generate(), ping=15)
