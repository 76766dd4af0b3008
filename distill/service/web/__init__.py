"""The web app served by `distill serve` under /ui/: server-rendered Jinja pages (autoescaped), one
stylesheet and one small script, no build step. Pages call the same service functions as the API
routes (`distill.service.jobs`, `reviewing`, `accounts`, `runner`) with the same permission checks;
a browser logs in with an API token and then holds a session cookie (`sessions.py`).

    pages_jobs.py    jobs list / reviewer queue, submit (with checking before submitting), job page,
                     live events, downloads
    pages_review.py  records with filters, record view with highlighted findings, decisions, bulk,
                     undo, sign-off, audit log
    pages_admin.py   tenants, caps, users, tokens
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from distill.service.problems import http_problem
from distill.service.web.render import render
from distill.service.web.sessions import LoginNeeded

HERE = Path(__file__).parent


def install(app: FastAPI) -> None:
    from distill.service.web import pages_admin, pages_jobs, pages_review

    app.add_api_route("/", _to_app, include_in_schema=False)  # a browser opening the server finds the app
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (pages_jobs, pages_review, pages_admin):
        app.include_router(module.router)
    app.add_middleware(PageHeaders)
    app.add_exception_handler(LoginNeeded, _to_login)
    app.add_exception_handler(StarletteHTTPException, _error_page)


def _to_app() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


# Pages load only their own script and stylesheet: an injected <script> would not run even if some text
# escaped escaping. Frames only from here (the eval report), and no other site may frame the app.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; frame-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")


class PageHeaders:
    """Security headers on every /ui/ response (plain ASGI, so the event stream is not buffered)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/ui/"):
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in ((b"content-security-policy", CSP), (b"x-content-type-options", "nosniff"),
                                    (b"referrer-policy", "same-origin"), (b"x-frame-options", "SAMEORIGIN")):
                    if name not in names:
                        headers.append((name, value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _to_login(request: Request, exc: LoginNeeded) -> RedirectResponse:
    from urllib.parse import quote

    return RedirectResponse(f"/ui/login?next={quote(exc.next_url, safe='')}", status_code=303)


async def _error_page(request: Request, exc: StarletteHTTPException):
    """Pages answer errors as HTML; the API answers its problems object."""
    if not request.url.path.startswith("/ui/") or request.url.path.startswith("/ui/static/"):
        return await http_problem(request, exc)
    return render(request, "error.html", {"status": exc.status_code, "detail": exc.detail}, status_code=exc.status_code)
