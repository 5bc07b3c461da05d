"""Personal data duties: subject access export, erasure, and retention (UK GDPR Arts. 15, 17,
5(1)(e)). All three find enquiries by the keyed hashes of the citizen's email and phone, and
erasure and retention remove personal data the same way (`anonymise`), keeping the enquiry
and its statistics: service, status, place codes, dates, destinations and timeline.

What was said after submission is the citizen's too: an export holds every message as staff
read them (notes included: they are about the citizen, and disclosable unless an exemption
applies, which the officer decides before sending) and each photo or document with where the
officer fetches a copy; anonymising blanks the messages' text and deletes the files and their
rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.base import shareable_citizen
from app.attachments import service as attachments
from app.attachments.reading import numbered
from app.attachments.store import AttachmentStore
from app.catalogue.catalogue import DEFAULT_RETENTION_DAYS, Catalogue
from app.core import audit
from app.core import reference as references
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.db import reading, writing
from app.core.models import (
    Attachment,
    Enquiry,
    StatusUpdate,
    attachment_table,
    dispatch_table,
    enquiry_table,
    event_table,
    fetch_all,
    message_table,
    status_update_table,
    utcnow,
)
from app.core.settings import WebhookSettings
from app.core.supervisor import beat
from app.core.vocabulary import AuditAction, EventType, OutboxState
from app.intake.reading import enquiry_view
from app.intake.schemas import DestinationOut
from app.partners import history
from app.privacy.schemas import (
    EnquiryExport,
    ErasureNotice,
    ErasureOut,
    FileCopy,
    SharedWith,
    StatusUpdateOut,
    Subject,
    SubjectAccessExport,
)
from app.updates.recording import follow_enquiry_status

log = structlog.get_logger()
REMOVED = "(removed to protect personal data)"
# Place fields kept after anonymising: the areas, for statistics, not the exact spot.
_PLACE_KEPT = ("county_code", "district_code", "police_area", "health_area", "precision")
# Deliveries that reached the organisation, or may have: it holds the citizen's details.
_RECEIVED = (OutboxState.delivered, OutboxState.delivering)


@dataclass(frozen=True)
class _Match:
    hashes: list[tuple[str, str]]  # (kind, keyed hash)

    @property
    def subject(self) -> str:
        """How the audit log names the citizen: a keyed hash, never the address itself."""
        kind, digest = self.hashes[0]
        return f"{kind}:{digest[:32]}"

    def condition(self) -> ColumnElement[bool]:
        e = enquiry_table.c
        columns = {"email": e.citizen_email_hash, "phone": e.citizen_phone_hash}
        return or_(*(columns[kind] == digest for kind, digest in self.hashes))


def _match(subject: Subject, sealer: Sealer) -> _Match:
    hashes = [
        (kind, digest)
        for kind, digest in (
            ("email", sealer.email_hash(subject.email)),
            ("phone", sealer.phone_hash(subject.phone)),
        )
        if digest is not None
    ]
    return _Match(hashes)


async def export_subject(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    sealer: Sealer,
    subject: Subject,
    actor: Actor,
) -> SubjectAccessExport:
    """Everything held about the citizen, as one JSON document; the export is audited."""
    match = _match(subject, sealer)
    async with reading(engine, one_snapshot=True) as conn:
        enquiries = await _enquiries(conn, match)
        exports = [await _export(conn, enquiry, catalogue, sealer) for enquiry in enquiries]
    now = utcnow()
    async with writing(engine) as conn:
        await audit.record(
            conn,
            actor=actor,
            action=AuditAction.privacy_export,
            subject=match.subject,
            detail={"references": [x.reference for x in exports]},
            at=now,
        )
    return SubjectAccessExport(
        generated_at=now, matched_by=[kind for kind, _ in match.hashes], enquiries=exports
    )


async def _enquiries(conn: AsyncConnection, match: _Match) -> list[Enquiry]:
    e = enquiry_table.c
    query = select(Enquiry).where(match.condition()).order_by(e.created_at, e.id)
    return await fetch_all(conn, Enquiry, query)


async def _export(
    conn: AsyncConnection, enquiry: Enquiry, catalogue: Catalogue, sealer: Sealer
) -> EnquiryExport:
    view = await enquiry_view(conn, enquiry, catalogue, sealer, masked=False, staff=True)
    shared_with = [
        _shared_with(d, view.citizen, enquiry.consent, catalogue)
        for d in view.destinations
        if d.state in _RECEIVED
    ]
    s = status_update_table.c
    updates = await fetch_all(
        conn,
        StatusUpdate,
        select(StatusUpdate).where(s.enquiry_id == enquiry.id).order_by(s.updated_at, s.id),
    )
    return EnquiryExport(
        **view.model_dump(),
        consent=enquiry.consent,
        shared_with=shared_with,
        status_updates=[StatusUpdateOut.model_validate(u.model_dump()) for u in updates],
        files=await _file_copies(conn, enquiry),
    )


async def _file_copies(conn: AsyncConnection, enquiry: Enquiry) -> list[FileCopy]:
    reference = references.display(enquiry.reference)
    return [
        FileCopy(
            id=row.id,
            filename=attachments.filename(row, number),
            sha256=row.sha256,
            fetch=f"/v1/enquiries/{reference}/attachments/{row.id}",
        )
        for number, row in await numbered(conn, enquiry.id)
    ]


def _shared_with(
    destination: DestinationOut,
    citizen: dict[str, Any] | None,
    consent: dict[str, Any] | None,
    catalogue: Catalogue,
) -> SharedWith:
    organisation = catalogue.organisations.get(destination.organisation_id)
    fields = shareable_citizen(citizen, consent, organisation) if organisation else None
    return SharedWith(
        organisation_id=destination.organisation_id,
        organisation_name=destination.organisation_name,
        delivered_at=destination.delivered_at,
        remote_reference=destination.remote_reference,
        citizen_fields=sorted(fields or {}),
    )


async def erase_subject(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    sealer: Sealer,
    store: AttachmentStore,
    subject: Subject,
    actor: Actor,
) -> ErasureOut:
    """Anonymise every enquiry the citizen made, stop what is not yet sent, and tell each
    organisation that received their details (an `privacy.erasure_requested` event)."""
    match = _match(subject, sealer)
    now = utcnow()
    notices: list[ErasureNotice] = []
    erased: list[str] = []
    async with writing(engine) as conn:
        for enquiry in await _enquiries(conn, match):
            erased.append(references.display(enquiry.reference))
            notices += await _tell_organisations(conn, enquiry, now)
            await _cancel_undelivered(conn, enquiry.id, now)
            why = "erased at the citizen's request"
            await anonymise(conn, enquiry, catalogue, store=store, now=now, why=why)
        await audit.record(
            conn,
            actor=actor,
            action=AuditAction.privacy_erase,
            subject=match.subject,
            detail={
                "references": erased,
                "organisations_told": sorted({n.organisation_id for n in notices}),
            },
            at=now,
        )
    log.info("privacy.erased", enquiries=len(erased), notices=len(notices), actor=actor.name)
    return ErasureOut(erased_at=now, references=erased, organisations_told=notices)


async def _tell_organisations(
    conn: AsyncConnection, enquiry: Enquiry, now: datetime
) -> list[ErasureNotice]:
    """An erasure request event for each organisation that received (or is receiving) it."""
    d = dispatch_table.c
    received = (
        await conn.execute(
            select(d.id, d.organisation_id, d.remote_reference).where(
                d.enquiry_id == enquiry.id, d.state.in_(_RECEIVED)
            )
        )
    ).all()
    reference = references.display(enquiry.reference)
    notices = []
    for dispatch_id, organisation_id, remote_reference in received:
        await conn.execute(
            event_table.insert(),
            {
                "id": uuid.uuid4(),
                "enquiry_id": enquiry.id,
                "dispatch_id": dispatch_id,
                "organisation_id": organisation_id,
                "type": EventType.privacy_erasure_requested,
                "detail": f"erase the citizen's details held for {reference}"
                + (f" (your reference {remote_reference})" if remote_reference else ""),
                "created_at": now,
            },
        )
        notices.append(
            ErasureNotice(
                organisation_id=organisation_id,
                reference=reference,
                remote_reference=remote_reference,
            )
        )
    return notices


async def _cancel_undelivered(conn: AsyncConnection, enquiry_id: uuid.UUID, now: datetime) -> None:
    """Deliveries not yet made are called off: there is nothing left to send."""
    d = dispatch_table.c
    cancelled = await conn.execute(
        update(dispatch_table)
        .where(d.enquiry_id == enquiry_id, d.state == OutboxState.pending)
        .values(
            state=OutboxState.cancelled,
            last_error="called off: the citizen's data was erased",
            updated_at=now,
        )
    )
    if cancelled.rowcount:
        await follow_enquiry_status(conn, enquiry_id, now)


async def anonymise(
    conn: AsyncConnection,
    enquiry: Enquiry,
    catalogue: Catalogue,
    *,
    store: AttachmentStore,
    now: datetime,
    why: str,
) -> None:
    """Remove the citizen's personal data from one enquiry; keep what statistics need."""
    service = catalogue.services.get(enquiry.service_code)
    kept_attributes = {
        code: value
        for code, value in (enquiry.attributes or {}).items()
        if service is not None
        and (attribute := service.attribute(code)) is not None
        and attribute.datatype not in ("string", "text")
    }
    place = {k: v for k, v in (enquiry.place or {}).items() if k in _PLACE_KEPT}
    e = enquiry_table.c
    await conn.execute(
        update(enquiry_table)
        .where(e.id == enquiry.id)
        .values(
            citizen_sealed=None,
            citizen_email_hash=None,
            citizen_phone_hash=None,
            description=REMOVED,
            location=None,
            place=place or None,
            attributes=kept_attributes,
            anonymised_at=now,
            updated_at=now,
        )
    )
    # What back-offices said may quote the citizen; the status words stay.
    s = status_update_table.c
    await conn.execute(
        update(status_update_table).where(s.enquiry_id == enquiry.id).values(description=None)
    )
    v = event_table.c
    await conn.execute(
        update(event_table)
        .where(v.enquiry_id == enquiry.id, v.type == EventType.status_updated)
        .values(detail=None)
    )
    await _forget_conversation(conn, enquiry, store)
    await conn.execute(
        event_table.insert(),
        {
            "id": uuid.uuid4(),
            "enquiry_id": enquiry.id,
            "type": EventType.enquiry_anonymised,
            "detail": f"personal data removed: {why}",
            "created_at": now + timedelta(microseconds=3),
        },
    )


async def _forget_conversation(
    conn: AsyncConnection, enquiry: Enquiry, store: AttachmentStore
) -> None:
    """What was said keeps its kind and time, not its words; the files and their rows go.
    The files go last, inside the transaction: if deleting one fails, nothing is committed
    and the next run tries again; once committed, no row points at a file still kept."""
    m, a = message_table.c, attachment_table.c
    await conn.execute(update(message_table).where(m.enquiry_id == enquiry.id).values(text=None))
    rows = await fetch_all(conn, Attachment, select(Attachment).where(a.enquiry_id == enquiry.id))
    await conn.execute(attachment_table.delete().where(a.enquiry_id == enquiry.id))
    await attachments.discard(store, rows)


async def run_retention(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    store: AttachmentStore,
    actor: Actor,
    now: datetime | None = None,
    batch_size: int = 200,
    webhooks: WebhookSettings | None = None,
) -> int:
    """Anonymise every enquiry past its service's retention period; how many it did. Webhook
    deliveries past theirs are deleted too (app.partners.history.prune).

    The period counts from when the enquiry closed or, for one that never closes (a back-office
    that reports nothing back), from when anything last happened to it."""
    now = now or utcnow()
    await history.prune(engine=engine, settings=webhooks or WebhookSettings(), now=now)
    total = 0
    while True:
        async with writing(engine) as conn:
            due = await _due(conn, catalogue, now, batch_size)
            for enquiry in due:
                service = catalogue.services.get(enquiry.service_code)
                days = service.retention_days if service else DEFAULT_RETENTION_DAYS
                why = f"retention period of {days} days over"
                await anonymise(conn, enquiry, catalogue, store=store, now=now, why=why)
            if due:
                await audit.record(
                    conn,
                    actor=actor,
                    action=AuditAction.retention_anonymised,
                    detail={"references": [references.display(x.reference) for x in due]},
                    at=now,
                )
        total += len(due)
        if len(due) < batch_size:
            break
    if total:
        log.info("retention.anonymised", enquiries=total)
    return total


class Retention:
    """The worker's schedule: a retention run at start and every `interval_seconds`. Runs in
    several workers at once are safe: each claims the enquiries it anonymises."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        catalogue: Catalogue,
        store: AttachmentStore,
        interval_seconds: float,
        webhooks: WebhookSettings | None = None,
    ) -> None:
        self.engine = engine
        self.catalogue = catalogue
        self.store = store
        self.interval_seconds = interval_seconds
        self.webhooks = webhooks
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await run_retention(
                    engine=self.engine,
                    catalogue=self.catalogue,
                    store=self.store,
                    actor=Actor("retention schedule"),
                    webhooks=self.webhooks,
                )
                beat()
            except (SQLAlchemyError, OSError):
                # The database away: tried again at the next interval (anything else is a bug,
                # which the supervisor logs and restarts the loop after).
                log.exception("retention.failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_seconds)

    def stop(self) -> None:
        self._stopping.set()


async def _due(
    conn: AsyncConnection, catalogue: Catalogue, now: datetime, limit: int
) -> list[Enquiry]:
    e = enquiry_table.c
    since = e.closed_at.is_not(None)
    by_service = [
        and_(
            e.service_code == code,
            or_(
                and_(since, e.closed_at <= now - timedelta(days=service.retention_days)),
                and_(~since, e.updated_at <= now - timedelta(days=service.retention_days)),
            ),
        )
        for code, service in catalogue.services.items()
    ]
    gone = timedelta(days=DEFAULT_RETENTION_DAYS)
    by_service.append(
        and_(
            e.service_code.not_in(list(catalogue.services)),
            or_(and_(since, e.closed_at <= now - gone), and_(~since, e.updated_at <= now - gone)),
        )
    )
    query = (
        select(Enquiry)
        .where(e.anonymised_at.is_(None), or_(*by_service))
        .order_by(e.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return await fetch_all(conn, Enquiry, query)


async def reseal_all(
    *, engine: AsyncEngine, sealer: Sealer, actor: Actor, batch_size: int = 500
) -> int:
    """Seal every stored citizen's details under the newest key and hash their email and
    phone under the current lookup key; how many enquiries it did. Safe to run again."""
    e = enquiry_table.c
    done = 0
    last_id: uuid.UUID | None = None
    while True:
        query = select(e.id, e.citizen_sealed).where(e.citizen_sealed.is_not(None))
        if last_id is not None:
            query = query.where(e.id > last_id)
        async with writing(engine) as conn:
            rows = (await conn.execute(query.order_by(e.id).limit(batch_size))).all()
            for enquiry_id, token in rows:
                details = sealer.open(token) or {}
                await conn.execute(
                    update(enquiry_table)
                    .where(e.id == enquiry_id)
                    .values(
                        citizen_sealed=sealer.reseal(token),
                        citizen_email_hash=sealer.email_hash(details.get("email")),
                        citizen_phone_hash=sealer.phone_hash(details.get("phone")),
                    )
                )
            if rows:
                await audit.record(
                    conn,
                    actor=actor,
                    action=AuditAction.privacy_keys_rotated,
                    detail={"enquiries": len(rows)},
                )
        done += len(rows)
        if len(rows) < batch_size:
            return done
        last_id = rows[-1][0]


async def reseal_files(
    *,
    engine: AsyncEngine,
    store: AttachmentStore,
    sealer: Sealer,
    actor: Actor,
    batch_size: int = 200,
) -> int:
    """Seal every stored photo and document again under the newest key; how many it did (a
    file already erased is passed over). Safe to run again."""
    a = attachment_table.c
    done = 0
    last_id: uuid.UUID | None = None
    while True:
        query = select(Attachment).order_by(a.id).limit(batch_size)
        if last_id is not None:
            query = query.where(a.id > last_id)
        async with reading(engine) as conn:
            rows = await fetch_all(conn, Attachment, query)
        resealed = [row for row in rows if await _resealed(engine, store, sealer, row)]
        if resealed:
            async with writing(engine) as conn:
                await audit.record(
                    conn,
                    actor=actor,
                    action=AuditAction.privacy_keys_rotated,
                    detail={"attachments": len(resealed)},
                )
        done += len(resealed)
        if len(rows) < batch_size:
            return done
        last_id = rows[-1].id


async def _resealed(
    engine: AsyncEngine, store: AttachmentStore, sealer: Sealer, row: Attachment
) -> bool:
    if not await attachments.reseal(store, sealer, row):
        return False
    # Erased while it was being resealed: the put must not bring the file back.
    async with reading(engine) as conn:
        kept = await conn.scalar(
            select(attachment_table.c.id).where(attachment_table.c.id == row.id)
        )
    if kept is None:
        await store.delete(row.storage_key)
        return False
    return True
