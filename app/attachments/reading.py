"""Giving a kept file out: to a reader of its enquiry (by the enquiry's own reading rule,
app.intake.reading), or to whoever holds a signed link to it (a back-office fetching Open311's
media_url). A reader with an API key is written to the audit log, by ids alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.attachments import service
from app.attachments.store import AttachmentMissing, AttachmentStore
from app.clients.service import Caller
from app.core import audit
from app.core import reference as references
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.db import reading, writing
from app.core.errors import NotFound, SignedLinkRefused
from app.core.models import Attachment, attachment_table, fetch_all, fetch_one
from app.core.vocabulary import AuditAction
from app.intake.reading import readable_enquiry

log = structlog.get_logger()


@dataclass(frozen=True)
class ServedFile:
    """A file as it is given out: its bytes, what they are, and our name for it."""

    content: bytes
    content_type: str
    filename: str


async def numbered(conn: AsyncConnection, enquiry_id: uuid.UUID) -> list[tuple[int, Attachment]]:
    """An enquiry's attachments in the order they were added, each with its number from 1
    (what its name says: photo-1.jpg, document-2.pdf)."""
    a = attachment_table.c
    rows = await fetch_all(
        conn,
        Attachment,
        select(Attachment).where(a.enquiry_id == enquiry_id).order_by(a.created_at, a.id),
    )
    return list(enumerate(rows, start=1))


async def _number(conn: AsyncConnection, row: Attachment) -> int:
    a = attachment_table.c
    earlier = or_(
        a.created_at < row.created_at, and_(a.created_at == row.created_at, a.id <= row.id)
    )
    count = await conn.scalar(select(func.count()).where(a.enquiry_id == row.enquiry_id, earlier))
    return int(count or 1)


async def read_attachment(
    *,
    engine: AsyncEngine,
    store: AttachmentStore,
    sealer: Sealer,
    reference: str,
    attachment_id: uuid.UUID,
    reader: Caller | None = None,
    client_id: str | None = None,
    token: str | None = None,
) -> ServedFile:
    """One of an enquiry's files, for someone who may read the enquiry (see
    app.intake.reading.readable_enquiry); NotFound otherwise, as for no such file."""
    async with reading(engine, one_snapshot=True) as conn:
        enquiry = await readable_enquiry(
            conn, reference=reference, reader=reader, client_id=client_id, token=token
        )
        a = attachment_table.c
        row = await fetch_one(
            conn,
            Attachment,
            select(Attachment).where(a.id == attachment_id, a.enquiry_id == enquiry.id),
        )
        if row is None:
            raise NotFound("This enquiry has no such attachment.")
        number = await _number(conn, row)
    served = await _served(store, sealer, row, number)
    if reader is not None:
        async with writing(engine) as conn:
            await audit.record(
                conn,
                actor=Actor.of(reader),
                action=AuditAction.attachment_read,
                subject=references.display(enquiry.reference),
                detail={"attachment_id": str(row.id)},
            )
    return served


async def read_signed(
    *,
    engine: AsyncEngine,
    store: AttachmentStore,
    sealer: Sealer,
    attachment_id: uuid.UUID,
    expires: int | None,
    signature: str | None,
    now: datetime,
) -> ServedFile:
    """A file by its signed link: refused (403) if the signature is not ours for it or its
    time is up, before anything is looked up; NotFound once it has been erased."""
    holds = (
        expires is not None
        and signature is not None
        and service.signature_holds(
            sealer, attachment_id, expires=expires, signature=signature, now=now
        )
    )
    if not holds:
        raise SignedLinkRefused("This link to an attachment is not valid, or has expired.")
    async with reading(engine, one_snapshot=True) as conn:
        row = await fetch_one(
            conn, Attachment, select(Attachment).where(attachment_table.c.id == attachment_id)
        )
        if row is None:
            raise NotFound("This attachment is no longer kept.")
        number = await _number(conn, row)
    served = await _served(store, sealer, row, number)
    log.info("attachment.fetched", attachment_id=str(row.id), enquiry_id=str(row.enquiry_id))
    return served


async def _served(
    store: AttachmentStore, sealer: Sealer, row: Attachment, number: int
) -> ServedFile:
    try:
        content = await service.open_file(store, sealer, row)
    except AttachmentMissing as exc:
        # Its row outlived the file (an erasure cut off between the two): nothing to give.
        log.error("attachment.missing", attachment_id=str(row.id))
        raise NotFound("This attachment is no longer kept.") from exc
    return ServedFile(
        content=content, content_type=row.content_type, filename=service.filename(row, number)
    )
