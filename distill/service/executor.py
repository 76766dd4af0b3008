"""The seam that runs jobs. `LocalExecutor` runs each job's stages in a worker child process, at most
`max_jobs` at a time. A distributed executor fits the same Protocol: it claims runnable jobs (a lease
in the jobs table, so several API processes on one database never run a job twice), runs them
somewhere, and renews the lease while they run.

Jobs whose lease ran out (their server was killed) are claimed again and resume from their run dir; so
are jobs whose worker died (killed, out of memory), up to `Limits.worker_attempts` deaths. The next job
is picked fairly between tenants, each under its running limit (`distill.service.quotas`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.orm import sessionmaker

from distill.service import jobs
from distill.service.db import Job, utcnow
from distill.service.quotas import Limits, pick_fairly, tenant_load

log = logging.getLogger("distill.service")
LEASE_S = 10.0
TICK_S = 0.5


class Executor(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def wake(self) -> None: ...  # something changed (a job was queued or cancelled): look now


@dataclass
class _Running:
    process: subprocess.Popen
    log: IO[bytes]


class LocalExecutor:
    def __init__(self, sessions: sessionmaker, database_url: str, *, max_jobs: int = 1, limits: Limits = Limits()):
        self.sessions = sessions
        self.database_url = database_url
        self.max_jobs = max_jobs
        self.limits = limits
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.running: dict[str, _Running] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="distill-executor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        for job_id, running in self.running.items():  # their jobs resume on the next start
            running.process.kill()
            running.process.wait()
            running.log.close()
            self._release(job_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # the loop must survive a database hiccup; say what happened
                log.exception("executor tick failed")
            self._wake.wait(TICK_S)
            self._wake.clear()

    def _tick(self) -> None:
        with self.sessions() as session:
            self._renew(session)
            self._reap(session)
            self._cancel(session)
            self._continue_signed_off(session)
            self._claim(session)

    def _renew(self, session) -> None:
        if self.running:
            session.execute(update(Job).where(Job.id.in_(list(self.running)), Job.lease_owner == self.owner)
                            .values(lease_until=utcnow() + timedelta(seconds=LEASE_S)))
            session.commit()

    def _reap(self, session) -> None:
        for job_id, running in list(self.running.items()):
            code = running.process.poll()
            if code is None:
                continue
            running.log.close()
            del self.running[job_id]
            job = session.get(Job, job_id)
            session.refresh(job)
            # Exit 0: the worker recorded the outcome itself; a job runnable again since (signed off while
            # this loop slept) is for the next claim, not a death.
            if code != 0 and job.status in jobs.RUNNABLE and not job.cancel_requested:
                self._worker_died(session, job, code)
            self._release(job_id)

    def _worker_died(self, session, job: Job, code: int) -> None:
        """A worker killed from outside (the OOM killer, kill -9): the job resumes from its stage's files
        on the next claim, until it has lost `worker_attempts` workers."""
        job.worker_deaths = (job.worker_deaths or 0) + 1
        attempts = self.limits.worker_attempts
        if job.worker_deaths < attempts:
            jobs.add_event(session, job.id, "error", f"the worker stopped unexpectedly (exit code {code}); the job "
                           f"resumes from its stage's files (attempt {job.worker_deaths + 1} of {attempts})",
                           {"exit_code": code, "worker_deaths": job.worker_deaths})
            session.commit()
            return
        job.error = {"code": "worker_died", "message": f"the job's worker stopped unexpectedly {job.worker_deaths} times "
                     f"(last exit code {code}); the job stopped retrying after {attempts} attempts",
                     "problems": [{"message": "the worker process died (killed, or out of memory) on every attempt",
                                   "key": "worker_attempts", "hint": "retry the job when the server has more memory"}]}
        jobs.set_status(session, job, "failed", f"the worker stopped unexpectedly {job.worker_deaths} times "
                        f"(last exit code {code}); no attempts left")

    def _cancel(self, session) -> None:
        for job in session.scalars(select(Job).where(Job.cancel_requested.is_(True), Job.status.not_in(jobs.TERMINAL))):
            running = self.running.pop(job.id, None)
            if running is not None:
                running.process.kill()  # every stage resumes from its files, so a hard stop loses nothing
                running.process.wait()
                running.log.close()
            elif job.lease_owner not in (None, self.owner) and job.lease_until and _aware(job.lease_until) > utcnow():
                continue  # another executor runs it and will stop it
            job.lease_owner = job.lease_until = None
            jobs.set_status(session, job, "cancelled", "job cancelled")

    def _continue_signed_off(self, session) -> None:
        for job in session.scalars(select(Job).where(Job.status == "awaiting_review")):
            jobs.resume_after_signoff(session, job)

    def _claim(self, session) -> None:
        free = self.max_jobs - len(self.running)
        if free <= 0:
            return
        now = utcnow()
        candidates = list(session.scalars(select(Job).where(
            Job.status.in_(jobs.RUNNABLE), Job.cancel_requested.is_(False),
            or_(Job.lease_until.is_(None), Job.lease_until < now))))
        running, served = tenant_load(session, now)
        for job in pick_fairly(candidates, running, served, free, self.limits.running):
            if claim(session, job.id, self.owner):
                session.refresh(job)
                self._launch(session, job)

    def _launch(self, session, job: Job) -> None:
        folder = Path(job.run_dir).parents[2]
        worker_log = open(folder / "worker.log", "ab")
        resumed = job.status != "queued"
        job.started_at = utcnow()
        jobs.add_event(session, job.id, "info", "job resumed from its run directory" if resumed else "job started")
        session.commit()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(self._worker_command(job.id), stdout=worker_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.running[job.id] = _Running(process, worker_log)

    def _worker_command(self, job_id: str) -> list[str]:
        return [sys.executable, "-m", "distill.service.worker", "--database-url", self.database_url, job_id]

    def _release(self, job_id: str) -> None:
        with self.sessions() as session:
            session.execute(update(Job).where(Job.id == job_id, Job.lease_owner == self.owner)
                            .values(lease_owner=None, lease_until=None))
            session.commit()


def make_executor(kind: str, sessions: sessionmaker, database_url: str, *, max_jobs: int = 1,
                  ray_address: str | None = None, limits: Limits = Limits()) -> Executor:
    """The executor `distill serve --executor KIND` asked for."""
    if kind == "ray":
        from distill.service.ray_executor import RayExecutor

        return RayExecutor(sessions, database_url, max_jobs=max_jobs, ray_address=ray_address, limits=limits)
    return LocalExecutor(sessions, database_url, max_jobs=max_jobs, limits=limits)


def claim(session, job_id: str, owner: str) -> bool:
    """Take a job's lease if nobody holds a live one: one conditional UPDATE, so of several executors
    racing for the job exactly one wins."""
    now = utcnow()
    claimed = session.execute(update(Job).where(Job.id == job_id, or_(Job.lease_until.is_(None), Job.lease_until < now))
                              .values(lease_owner=owner, lease_until=now + timedelta(seconds=LEASE_S))
                              .execution_options(synchronize_session=False))  # SQLite hands back naive times
    session.commit()
    return claimed.rowcount == 1


def _aware(value):
    from datetime import timezone

    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
