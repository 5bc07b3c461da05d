"""Reading the append-only audit log back; app.core.audit writes it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import reading
from app.core.models import audit_table
from app.core.paging import newest_first, page
from app.privacy.schemas import AuditEntryOut, AuditPage


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
