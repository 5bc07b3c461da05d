"""The unsubscribe link of every message: the citizen stops all messages about one enquiry.

The link names the enquiry by its id and carries a signature (app.core.crypto) that only the
gateway can make, so nobody can stop another citizen's messages by guessing. Following it
(POST: a person's button, or a mail client's RFC 8058 one-click) sets alerts_stopped_at,
cancels the alerts still waiting and writes the audit log, once; doing it again changes
nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import audit
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.db import reading, writing
from app.core.errors import InvalidLink, NotFound
from app.core.models import alert_table, enquiry_table
from app.core.reference import display
from app.core.vocabulary import AuditAction, OutboxState

log = structlog.get_logger()
e = enquiry_table.c
a = alert_table.c
CITIZEN = Actor("citizen (unsubscribe link)")


@dataclass(frozen=True)
class Subscription:
    """What the unsubscribe page shows: which enquiry, and whether messages are stopped."""

    reference: str  # readable groups
    stopped_at: datetime | None


async def subscription(
    engine: AsyncEngine, sealer: Sealer, *, enquiry_id: uuid.UUID, signature: str
) -> Subscription:
    """The enquiry the link is for; InvalidLink unless the signature is its own."""
    _check(sealer, enquiry_id, signature)
    async with reading(engine) as conn:
        row = (
            await conn.execute(select(e.reference, e.alerts_stopped_at).where(e.id == enquiry_id))
        ).first()
    if row is None:
        raise NotFound("That enquiry is no longer held here.")
    return Subscription(display(row.reference), row.alerts_stopped_at)


async def stop_alerts(
    engine: AsyncEngine, sealer: Sealer, *, enquiry_id: uuid.UUID, signature: str, now: datetime
) -> Subscription:
    """Stop every message about this enquiry (once); InvalidLink unless the link is its own."""
    _check(sealer, enquiry_id, signature)
    async with writing(engine) as conn:
        reference = await conn.scalar(select(e.reference).where(e.id == enquiry_id))
        if reference is None:
            raise NotFound("That enquiry is no longer held here.")
        stopped = await conn.execute(
            update(enquiry_table)
            .where(e.id == enquiry_id, e.alerts_stopped_at.is_(None))
            .values(alerts_stopped_at=now)
        )
        if not stopped.rowcount:
            at = await conn.scalar(select(e.alerts_stopped_at).where(e.id == enquiry_id))
            return Subscription(display(reference), at)
        cancelled = await conn.execute(
            update(alert_table)
            .where(a.enquiry_id == enquiry_id, a.state == OutboxState.pending)
            .values(
                state=OutboxState.cancelled,
                last_error="the citizen stopped the messages",
                updated_at=now,
            )
        )
        await audit.record(
            conn,
            actor=CITIZEN,
            action=AuditAction.alerts_stopped,
            detail={"references": [display(reference)], "cancelled": cancelled.rowcount},
            at=now,
        )
    log.info("alerts.stopped", enquiry=str(enquiry_id), cancelled=cancelled.rowcount)
    return Subscription(display(reference), now)


def _check(sealer: Sealer, enquiry_id: uuid.UUID, signature: str) -> None:
    if not sealer.unsubscribe_signed(enquiry_id, signature):
        raise InvalidLink("This unsubscribe link is not valid: use the one in your message.")
