"""Keyset pages, newest (or oldest) first: the cursor is the (time, id) of the last row given,
opaque to clients, so pages stay stable while new rows arrive."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_

from app.core.errors import FieldError, ValidationFailed


def encode_cursor(at: datetime, last_id: uuid.UUID) -> str:
    """The cursor that continues after this row."""
    raw = json.dumps([at.isoformat(), str(last_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The row a cursor continues after; 422 for one this API did not give out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, last_id = json.loads(raw)
        if not isinstance(at, str) or not isinstance(last_id, str):
            raise TypeError("cursor parts are not text")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive cursor time")
        # In UTC here, so a time that has none (year 1 at +01:00) is refused, not a 500.
        return parsed.astimezone(UTC), uuid.UUID(last_id)
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise ValidationFailed(
            "That cursor is not one this API gave out.",
            [FieldError("invalid cursor", parameter="cursor")],
        ) from exc


def newest_first(
    query: Select[Any],
    at: ColumnElement[datetime],
    row_id: ColumnElement[uuid.UUID],
    *,
    cursor: str | None,
    limit: int,
) -> Select[Any]:
    """The query newest first, from after the cursor's row, asking one row more than a page
    (so `page` can tell whether another follows)."""
    if cursor is not None:
        moment, last_id = decode_cursor(cursor)
        query = query.where(or_(at < moment, and_(at == moment, row_id < last_id)))
    return query.order_by(at.desc(), row_id.desc()).limit(limit + 1)


def oldest_first(
    query: Select[Any],
    at: ColumnElement[datetime],
    row_id: ColumnElement[uuid.UUID],
    *,
    cursor: str | None,
    limit: int,
) -> Select[Any]:
    """As newest_first, oldest first: the longest waiting come first."""
    if cursor is not None:
        moment, last_id = decode_cursor(cursor)
        query = query.where(or_(at > moment, and_(at == moment, row_id > last_id)))
    return query.order_by(at.asc(), row_id.asc()).limit(limit + 1)


def page(rows: list[Any], *, limit: int, at: str) -> tuple[list[Any], str | None]:
    """A page's rows (from a `newest_first` query) and the cursor of the next, None on the last."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1][at], rows[-1]["id"])
