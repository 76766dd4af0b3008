"""What every route depends on: the database session, the caller (from `Authorization: Bearer`), what
they may do (permissions.authorize), and the job the caller asked for (404 when it belongs to a tenant they cannot see)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from distill.service.accounts import authenticate
from distill.service.db import Job, User
from distill.service.permissions import authorize


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


# The document's security scheme (Swagger UI's Authorize, generated clients' token); checked below, so
# that every way of getting it wrong is the same 401.
bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="an API token: `Authorization: Bearer dst_...`")


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def current_user(session: SessionDep, credentials: BearerCredentials) -> User:
    user = authenticate(session, credentials.credentials.strip()) if credentials else None
    if user is None:
        raise HTTPException(401, "missing, malformed, unknown or revoked token; send Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})
    return user


UserDep = Annotated[User, Depends(current_user)]


def permit(action: str):
    """A dependency: the caller, when `permissions.authorize` lets them do `action` (else 403)."""
    def check(user: UserDep, session: SessionDep) -> User:
        authorize(session, user, action)
        return user

    return Depends(check)


def find_visible_job(session, user, job_id: str) -> Job:
    """The job, or 404 when it does not exist or belongs to a tenant the user cannot see."""
    job = session.get(Job, job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    authorize(session, user, "read", job)
    return job


def visible_job(job_id: str, user: UserDep, session: SessionDep) -> Job:
    return find_visible_job(session, user, job_id)


JobDep = Annotated[Job, Depends(visible_job)]
Admin = permit("administer")
Reviewer = permit("review")
Customer = permit("submit")
