"""Cursor pagination for every list the API answers: a page carries `next_cursor` (null on the last
page) and the client passes it back as `?cursor=`. A cursor is the sort key of the page's last item,
opaque to clients (base64url JSON), so pages stay stable while new items arrive."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session

from distill.errors import ConfigError, Problem

LIMIT_DESCRIPTION = "items on a page"
CURSOR_DESCRIPTION = "the `next_cursor` of the previous page; leave out for the first page"


def encode_cursor(*key: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> list[Any]:
    """The key a cursor holds, checked against `types`; a 422 naming `cursor` for anything else."""
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if not (isinstance(key, list) and len(key) == len(types) and all(type(v) is t for v, t in zip(key, types))):
        raise _bad_cursor()
    return key


def _bad_cursor() -> ConfigError:
    return ConfigError(Problem("not a cursor this list gave out", key="query.cursor",
                               hint="pass the next_cursor of the previous page, or leave cursor out to start again"))


def time_cursor(time: datetime, item_id: str) -> str:
    """For lists ordered by (created_at, id), newest first."""
    return encode_cursor(_utc(time).isoformat(), item_id)


def read_time_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    time, item_id = decode_cursor(cursor, str, str)
    try:
        return _utc(datetime.fromisoformat(time)), item_id
    except ValueError:
        raise _bad_cursor() from None


def _utc(time: datetime) -> datetime:
    """Times are stored in UTC (SQLite hands them back without the zone)."""
    return time if time.tzinfo else time.replace(tzinfo=timezone.utc)


def newest_first(session: Session, query: Select, model: Any, cursor: str | None, limit: int) -> tuple[list[Any], str | None]:
    """One page of `query`'s `model` rows, newest first by (created_at, id), from `cursor` on; and the cursor
    of the next page (None on the last)."""
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    if (before := read_time_cursor(cursor)) is not None:
        query = query.where((model.created_at < before[0]) | ((model.created_at == before[0]) & (model.id < before[1])))
    found = list(session.scalars(query))
    page = found[:limit]
    return page, time_cursor(page[-1].created_at, page[-1].id) if len(found) > limit else None
