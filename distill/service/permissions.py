"""Who may do what to which job: the one rule, used by the API's dependencies (deps.py) and the web
pages' (web/sessions.py) alike.

A job is seen only by the users of its tenant, the reviewers assigned to that tenant, and admins; to
anyone else it does not exist (404, so job ids cannot be probed). What a user may do to a job they can
see depends on their role.
"""

from __future__ import annotations

from fastapi import HTTPException

from distill.service.accounts import can_see
from distill.service.db import Job, User

ROLES = {
    "read": ("admin", "reviewer", "customer"),  # a job, its events, its records, its downloads
    "submit": ("customer",),  # submit or check a spec for the user's own tenant
    "cancel": ("admin", "customer"),
    "retry": ("admin", "customer"),  # run a failed job again from its failed stage
    "webhooks": ("admin", "customer"),  # a tenant's webhook endpoints and their deliveries
    "deploy": ("admin", "customer"),  # deploy a released student and manage its deployments
    "review": ("admin", "reviewer"),  # decide, edit, undo, sample, sign off, read the audit log
    "administer": ("admin",),  # tenants, users, tokens
}


def permitted(user: User | None, action: str) -> bool:
    """Whether the user's role may do `action` at all (pages ask it to show or hide a button)."""
    return user is not None and user.role in ROLES[action]


def authorize(session, user: User, action: str, job: Job | None = None) -> None:
    """Return when `user` may do `action` (to `job`, when given); raise 404 when the job is not theirs to
    see, 403 when their role may not do the action."""
    if job is not None and not can_see(session, user, job):
        raise HTTPException(404, f"no job {job.id}")
    if not permitted(user, action):
        raise HTTPException(403, f"this action needs the role {' or '.join(ROLES[action])}; you are {user.role}")
