"""Per-tenant limits and fair scheduling between tenants.

A tenant may have at most `queued` jobs waiting to run, `running` jobs running at once, and submit at
most `per_minute` jobs a minute; a submission past a limit is refused with 429, a body naming the limit,
and `Retry-After`. The executor picks the next job from the tenant it served least recently (then the
tenant's oldest job), so one tenant's backlog never holds another tenant's job back.

The counts come from the jobs table, so they hold across every API process on one database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from distill.errors import DistillError, Problem
from distill.service.db import Job, utcnow

WAITING = ("validating", "queued")  # submitted and not started (a signed-off job queued again counts too)
BUSY = ("generating", "reviewing", "training", "evaluating", "releasing")


@dataclass(frozen=True)
class Limits:
    """The service's limits (`distill serve` flags). `worker_attempts`: how often a job's worker may die
    (killed, out of memory) before the job fails; each death resumes the job from its stage's files."""

    queued: int = 20
    running: int = 1
    per_minute: int = 10
    worker_attempts: int = 3


class QuotaExceeded(DistillError):
    """A tenant's limit refused a submission; answered 429 with `Retry-After: retry_after` seconds."""

    title = "quota exceeded"

    def __init__(self, problem: Problem, retry_after: int):
        super().__init__(problem)
        self.retry_after = retry_after


def check_submission(session: Session, tenant_id: str, limits: Limits) -> None:
    """Raise QuotaExceeded when one more job from this tenant would pass its queued or per-minute limit."""
    waiting = session.scalar(select(func.count()).select_from(Job)
                             .where(Job.tenant_id == tenant_id, Job.status.in_(WAITING))) or 0
    if waiting >= limits.queued:
        raise QuotaExceeded(Problem(f"the tenant already has {waiting} jobs waiting to run; the limit is {limits.queued}",
                                    key="quota.queued", hint="wait for some to start, or cancel some"), retry_after=60)
    since = utcnow() - timedelta(minutes=1)
    recent = list(session.scalars(select(Job.created_at).where(Job.tenant_id == tenant_id, Job.created_at > since)
                                  .order_by(Job.created_at)))
    if len(recent) >= limits.per_minute:
        oldest = _aware(recent[-limits.per_minute])
        wait = max(1, math.ceil((oldest + timedelta(minutes=1) - utcnow()).total_seconds()))
        raise QuotaExceeded(Problem(f"the tenant submitted {len(recent)} jobs in the last minute; the limit is "
                                    f"{limits.per_minute} a minute", key="quota.per_minute",
                                    hint=f"submit again in {wait} s"), retry_after=wait)


def pick_fairly(candidates: list[Job], running: dict[str, int], served: dict[str, datetime], free: int,
                limit_running: int) -> list[Job]:
    """Up to `free` jobs to start: each time from the tenant served least recently among those under their
    running limit (`running`: jobs each tenant runs now; `served`: when each last had a job started), that
    tenant's oldest job. Jobs that already ran a stage (resumed, or signed off) come before new ones."""
    running, served, chosen = dict(running), dict(served), []
    queue = sorted(candidates, key=lambda job: (job.status == "queued" and job.started_at is None, _aware(job.created_at)))
    never = datetime.min.replace(tzinfo=timezone.utc)
    while len(chosen) < free:
        open_ = [job for job in queue if job not in chosen and running.get(job.tenant_id, 0) < limit_running]
        if not open_:
            break
        job = min(open_, key=lambda j: (served.get(j.tenant_id, never), queue.index(j)))
        chosen.append(job)
        running[job.tenant_id] = running.get(job.tenant_id, 0) + 1
        served[job.tenant_id] = utcnow()
    return chosen


def tenant_load(session: Session, now: datetime) -> tuple[dict[str, int], dict[str, datetime]]:
    """Per tenant: how many of its jobs run now (a live lease), and when one of its jobs last started."""
    running = dict(session.execute(select(Job.tenant_id, func.count()).where(Job.lease_until > now, Job.status.in_(("queued", *BUSY)))
                                   .group_by(Job.tenant_id)).all())
    served = {tenant: _aware(when) for tenant, when in session.execute(
        select(Job.tenant_id, func.max(Job.started_at)).where(Job.started_at.is_not(None)).group_by(Job.tenant_id)).all()}
    return running, served


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
