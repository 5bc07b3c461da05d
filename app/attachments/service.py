"""Keeping, opening and linking to an enquiry's photos and documents: each prepared file is
sealed (app.core.crypto) and put in the attachment store before its row is written, so a
stored file is never plain and a row never points at nothing; a caller whose transaction
fails discards what was put."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog

from app.attachments.files import Prepared
from app.attachments.store import AttachmentMissing, AttachmentStore, storage_key
from app.core.crypto import Sealer
from app.core.models import Attachment, attachment_filename
from app.core.settings import Settings

log = structlog.get_logger()

Row = Attachment | Mapping[str, Any]


class AttachmentDamaged(Exception):
    """The stored file does not open as the one kept (its digest differs)."""


def _field(row: Row, name: str) -> Any:
    return row[name] if isinstance(row, Mapping) else getattr(row, name)


async def keep(
    store: AttachmentStore,
    sealer: Sealer,
    *,
    enquiry_id: uuid.UUID,
    message_id: uuid.UUID,
    files: Sequence[Prepared],
    now: datetime,
) -> list[dict[str, Any]]:
    """Seal and store each file; the attachment rows for the caller to insert in its own
    transaction. If one put fails, those already put are removed before the error goes on."""
    rows: list[dict[str, Any]] = []
    # Ids in the files' order: rows of one moment are numbered by (created_at, id).
    ids = sorted(uuid.uuid4() for _ in files)
    try:
        for attachment_id, prepared in zip(ids, files, strict=True):
            key = storage_key(enquiry_id, attachment_id)
            await store.put(key, sealer.seal_bytes(prepared.content))
            rows.append(_row(attachment_id, enquiry_id, message_id, prepared, key, now))
    except BaseException:
        await discard(store, rows)
        raise
    return rows


def _row(
    attachment_id: uuid.UUID,
    enquiry_id: uuid.UUID,
    message_id: uuid.UUID,
    prepared: Prepared,
    key: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": attachment_id,
        "enquiry_id": enquiry_id,
        "message_id": message_id,
        "content_type": prepared.content_type,
        "size": prepared.size,
        "sha256": prepared.sha256,
        "storage_key": key,
        "created_at": now,
    }


async def discard(store: AttachmentStore, rows: Sequence[Row]) -> None:
    """Remove the stored files of rows that were not (or are no longer) written."""
    for row in rows:
        await store.delete(_field(row, "storage_key"))


async def open_file(store: AttachmentStore, sealer: Sealer, row: Row) -> bytes:
    """The file as kept (re-encoded, unsealed); AttachmentMissing if the store lost it,
    AttachmentDamaged if what is stored is not it."""
    content = sealer.open_bytes(await store.get(_field(row, "storage_key")))
    if hashlib.sha256(content).hexdigest() != _field(row, "sha256"):
        log.error("attachment.damaged", attachment_id=str(_field(row, "id")))
        raise AttachmentDamaged(str(_field(row, "id")))
    return content


async def reseal(store: AttachmentStore, sealer: Sealer, row: Row) -> bool:
    """Seal a stored file again under the newest key (key rotation); False if it is gone."""
    key = _field(row, "storage_key")
    try:
        sealed = await store.get(key)
    except AttachmentMissing:
        return False
    await store.put(key, sealer.reseal_bytes(sealed))
    return True


def _signed_message(attachment_id: uuid.UUID | str, expires: int) -> str:
    return f"attachment:{attachment_id}:{expires}"


def signed_url(
    settings: Settings, sealer: Sealer, attachment_id: uuid.UUID, *, now: datetime
) -> str:
    """Where a back-office (Open311 media_url) fetches the file without a key, until the
    link expires (settings.attachments.url_seconds from now)."""
    expires = int(now.timestamp() + settings.attachments.url_seconds)
    signature = sealer.sign(_signed_message(attachment_id, expires))
    base = settings.public_url.rstrip("/")
    return f"{base}/v1/attachments/{attachment_id}?expires={expires}&signature={signature}"


def signature_holds(
    sealer: Sealer,
    attachment_id: uuid.UUID,
    *,
    expires: int,
    signature: str,
    now: datetime,
) -> bool:
    """Whether a signed URL's signature is ours for this file and has not expired."""
    if expires < now.timestamp():
        return False
    return sealer.verify(_signed_message(attachment_id, expires), signature)


def filename(row: Row, number: int) -> str:
    """The name the file is given out under (app.core.models.attachment_filename)."""
    return attachment_filename(_field(row, "content_type"), number)
