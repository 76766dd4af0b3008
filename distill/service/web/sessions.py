"""Browser sessions: log in with an API token, get a session cookie; every form carries the session's
CSRF token (a synchronizer token kept in the session row and compared in constant time).

The cookie is 32 random bytes, HttpOnly, SameSite=Lax, and Secure when the page is served over TLS;
the database keeps only its sha256, like API tokens. Sessions last 12 hours, until logout, or until the
API token they were made from is revoked.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Form, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from distill.service.accounts import live_token, new_id, token_hash
from distill.service.db import Job, Token, User, WebSession, utcnow
from distill.service.deps import SessionDep, find_visible_job
from distill.service.permissions import authorize

COOKIE = "distill_session"
LOGIN_COOKIE = "distill_login_csrf"  # double-submit token for the login form (there is no session yet)
LIFETIME = timedelta(hours=12)


class LoginNeeded(Exception):
    """Raised by page dependencies without a valid session; answered with a redirect to the login page."""

    def __init__(self, next_url: str):
        self.next_url = next_url


def start_session(session: Session, token_text: str) -> tuple[WebSession, str] | None:
    """A new browser session for the owner of an API token; returns the row and the cookie value."""
    token = live_token(session, token_text.strip())
    if token is None:
        return None
    cookie = secrets.token_urlsafe(32)
    row = WebSession(id=new_id("ses"), user_id=token.user_id, sha256=token_hash(cookie), csrf=secrets.token_urlsafe(32),
                     expires_at=utcnow() + LIFETIME, token_id=token.id)
    session.add(row)
    session.commit()
    return row, cookie


def find_session(session: Session, cookie: str | None) -> WebSession | None:
    if not cookie or len(cookie) > 100:
        return None
    row = session.scalar(select(WebSession).where(WebSession.sha256 == token_hash(cookie)))
    if row is None or row.ended_at is not None:
        return None
    token = session.get(Token, row.token_id) if row.token_id else None
    if token is None or token.revoked_at is not None:  # a session lives no longer than its token
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
    return row if expires > utcnow() else None


def end_session(session: Session, row: WebSession) -> None:
    row.ended_at = utcnow()
    session.commit()


def set_cookie(response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="lax", path="/",
                        secure=request.url.scheme == "https")


def web_session(request: Request, session: SessionDep) -> WebSession:
    row = find_session(session, request.cookies.get(COOKIE))
    if row is None:
        raise LoginNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    request.state.csrf = row.csrf
    return row


WebSessionDep = Annotated[WebSession, Depends(web_session)]


def page_user(request: Request, row: WebSessionDep, session: SessionDep) -> User:
    user = session.get(User, row.user_id)
    if user is None:
        raise LoginNeeded("/ui/")
    request.state.user = user
    return user


PageUser = Annotated[User, Depends(page_user)]


def check_csrf(row: WebSessionDep, csrf: Annotated[str, Form()] = "") -> None:
    """Every form POST: the session's CSRF token must come back in the form (or 403)."""
    if not secrets.compare_digest(csrf.encode(), row.csrf.encode()):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page and try again")


Csrf = Depends(check_csrf)


def page_job(job_id: str, user: PageUser, session: SessionDep) -> Job:
    return find_visible_job(session, user, job_id)


PageJob = Annotated[Job, Depends(page_job)]


def page_permit(action: str):
    """A page dependency: the session's user, when `permissions.authorize` lets them do `action` (else 403)."""
    def check(user: PageUser, session: SessionDep) -> User:
        authorize(session, user, action)
        return user

    return Depends(check)


PageReviewer = Annotated[User, page_permit("review")]
PageCustomer = Annotated[User, page_permit("submit")]
PageAdmin = Annotated[User, page_permit("administer")]
PageCanceller = Annotated[User, page_permit("cancel")]
PageRetrier = Annotated[User, page_permit("retry")]


def page_streamed_job(request: Request, job_id: str) -> str:
    """The id of a job the browser's session may see, checked in one short session of its own: an event
    stream holds no connection, neither while it waits for events nor while it waits to start."""
    with request.app.state.sessions() as session:
        row = web_session(request, session)
        return page_job(job_id, page_user(request, row, session), session).id


PageStreamedJob = Annotated[str, Depends(page_streamed_job)]
