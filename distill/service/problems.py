"""One error body for the whole API, and the statuses each operation documents.

Every error answers the problems object (`ProblemsOut`): `detail` says what went wrong and
`problems` locates it (file/line/key; empty when there is nothing to locate). Spec and upload errors,
request validation (422) and the `HTTPException`s of the routes (401, 403, 404, 409) all take that
shape, so a client reads every error one way. `problem_responses(...)` is what a route's decoration
names in `responses=`; the OpenAPI document then lists the real body for each status.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from distill.errors import ConfigError


class ProblemOut(BaseModel):
    file: str | None = None
    line: int | None = None
    column: int | None = None
    key: str | None = None
    message: str
    hint: str | None = None


class ProblemsOut(BaseModel):
    """Every error's body: `detail` says what went wrong, `problems` locates it (empty when nothing is located)."""

    detail: str
    problems: list[ProblemOut]


class NotFound(ConfigError):
    """What the request names does not exist (404)."""


class Conflict(ConfigError):
    """The request conflicts with an existing object or with the object's state (409)."""


MEANING = {
    401: "missing, malformed, unknown or revoked token (send `Authorization: Bearer <token>`)",
    402: "the plan's estimate does not fit in what is left of the tenant's spending cap",
    403: "the caller's role may not take this action",
    404: "no such object, or one that belongs to a tenant the caller cannot see",
    409: "conflicts with an existing object or with the object's state (not released yet, not awaiting review, ...)",
    413: "the upload is too large",
    416: "the requested byte range is outside the file",
    422: "the request is invalid; each problem names its field (`key`) or the spec's file, line and key",
    429: "over one of the tenant's quotas (the problem names it; `Retry-After` says when to try again)",
}


UNPARSED_BODY = "There was an error parsing the body"


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the problems body it really sends."""
    return {status: {"model": ProblemsOut, "description": MEANING[status]} for status in statuses}


def problems_body(detail: str, problems: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"detail": detail, "problems": problems or []}


async def http_problem(request: Request, exc: HTTPException) -> JSONResponse:
    """A route's `HTTPException` (and Starlette's 404/405) as the problems object, keeping its headers."""
    headers = getattr(exc, "headers", None)
    if exc.status_code in (204, 304):  # answers without a body
        return Response(status_code=exc.status_code, headers=headers)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 400 and detail == UNPARSED_BODY:  # FastAPI's answer to a body that is not JSON
        problem = {"key": "body", "message": "the body is not valid JSON", "hint": "send a JSON object (UTF-8)"}
        return JSONResponse(problems_body("the request is invalid", [problem]), status_code=422, headers=headers)
    return JSONResponse(problems_body(detail), status_code=exc.status_code, headers=headers)


def use_problems_in_document(document: dict[str, Any]) -> dict[str, Any]:
    """The finishing touch on the OpenAPI document, for every route (those added later too): FastAPI's
    default 422 body is not what the service sends, so each 422 names the problems object; every
    operation that needs a token lists its 401; uploaded files say `format: binary`."""
    problems = {"$ref": "#/components/schemas/ProblemsOut"}
    for operation in (op for item in document["paths"].values() for op in item.values()):
        responses = operation["responses"]
        if "422" in responses:
            responses["422"] = {"description": MEANING[422], "content": {"application/json": {"schema": problems}}}
        if operation.get("security") and "401" not in responses:
            responses["401"] = {"description": MEANING[401], "content": {"application/json": {"schema": problems}}}
    schemas = document["components"]["schemas"]
    for default in ("HTTPValidationError", "ValidationError"):
        schemas.pop(default, None)
    for field in (f for schema in schemas.values() for f in schema.get("properties", {}).values()):
        if field.get("contentMediaType") == "application/octet-stream":
            field["format"] = "binary"  # an uploaded file, in the form generators read (OpenAPI 3.0's)
    return document
