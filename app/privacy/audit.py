"""The append-only audit log: every read of personal data by a client, every subject access
export, every erasure and every retention run. The database refuses to change an entry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.clients.service import Caller
from app.core.db import reading
from app.core.models import audit_table, utcnow
from app.core.paging import newest_first, page
from app.core.vocabulary import AuditAction
from app.privacy.schemas import AuditEntryOut, AuditPage


@dataclass(frozen=True)
class Actor:
    """Who did it: an API client, or a command an operator ran."""

    name: str
    id: str | None = None

    @classmethod
    def of(cls, caller: Caller) -> Actor:
        return cls(name=caller.name, id=caller.client_id)


async def record(
    conn: AsyncConnection,
    *,
    actor: Actor,
    action: AuditAction,
    subject: str | None = None,
    detail: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Append one entry, in the caller's transaction so it stands or falls with the act."""
    await conn.execute(
        audit_table.insert(),
        {
            "id": uuid.uuid4(),
            "at": at or utcnow(),
            "actor_id": actor.id,
            "actor": actor.name,
            "action": action,
            "subject": subject,
            "detail": detail,
        },
    )


async def entries(
    *,
    engine: AsyncEngine,
    action: str | None,
    subject: str | None,
    cursor: str | None,
    limit: int,
) -> AuditPage:
    """Newest first, keyset-paginated like the enquiry list."""
    a = audit_table.c
    query = select(audit_table)
    for column, value in ((a.action, action), (a.subject, subject)):
        if value is not None:
            query = query.where(column == value)
    query = newest_first(query, a.at, a.id, cursor=cursor, limit=limit)
    async with reading(engine) as conn:
        rows, next_cursor = page(list((await conn.execute(query)).mappings()), limit=limit, at="at")
    return AuditPage(
        items=[AuditEntryOut.model_validate(dict(r)) for r in rows], next_cursor=next_cursor
    )
