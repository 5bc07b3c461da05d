"""Adding a message with files to a stored enquiry, straight through the attachment service
(the conversation's routes, app/conversation, are what do it in production)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select

from app.attachments import service
from app.attachments.files import prepare
from app.core import reference as references
from app.core.db import writing
from app.core.models import attachment_table, enquiry_table, message_table, utcnow
from app.core.vocabulary import MessageKind


async def enquiry_id_of(app: FastAPI, reference: str) -> uuid.UUID:
    state = app.state.iap
    async with state.engine.connect() as conn:
        found = await conn.scalar(
            select(enquiry_table.c.id).where(
                enquiry_table.c.reference == references.parse(reference)
            )
        )
    assert found is not None
    return uuid.UUID(str(found))


async def add_message(
    app: FastAPI,
    reference: str,
    *contents: bytes,
    text: str | None = "The pothole is deeper now, photo attached",
    kind: MessageKind = MessageKind.information,
    by: str = "citizen",
) -> list[dict[str, Any]]:
    """A message on the enquiry with these files kept for it: the attachment rows."""
    state = app.state.iap
    enquiry_id, message_id, now = await enquiry_id_of(app, reference), uuid.uuid4(), utcnow()
    files = [prepare(content, state.settings.attachments) for content in contents]
    rows = await service.keep(
        state.attachments,
        state.sealer,
        enquiry_id=enquiry_id,
        message_id=message_id,
        files=files,
        now=now,
    )
    async with writing(state.engine) as conn:
        await conn.execute(
            message_table.insert(),
            {
                "id": message_id,
                "enquiry_id": enquiry_id,
                "kind": kind,
                "text": text,
                "by": by,
                # Staff are named by their id and name (shown to staff only).
                "actor_id": None if by == "citizen" else f"staff-{by.lower().replace(' ', '-')}",
                "actor": None if by == "citizen" else by,
                "created_at": now,
            },
        )
        if rows:
            await conn.execute(attachment_table.insert(), rows)
    return rows
