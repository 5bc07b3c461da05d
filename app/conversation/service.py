"""The conversation after submission: the citizen (by their token), the client that submitted
the enquiry, or staff add information, withdraw it, reopen it; staff add notes.

Each act is one transaction: the `message` row and its attachments' rows, one `follow_up`
outbox row per organisation whose back-office must be told (app.conversation.sender carries
them), the timeline event, the audit entry for staff, and the status change. A note is never
forwarded and never shown to the citizen. Files are put in the attachment store before the
transaction and taken out again if it fails, so nothing is half-stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.attachments.files import Prepared
from app.attachments.service import discard, filename, keep
from app.attachments.store import AttachmentStore
from app.casework.parts import close_parts
from app.catalogue.catalogue import Catalogue
from app.catalogue.status import FINAL, Status
from app.clients.service import Caller, Scope
from app.core import audit
from app.core import reference as references
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.db import reading, wake_follow_ups, writing
from app.core.errors import NotFound, StateConflict, ValidationFailed
from app.core.models import (
    Attachment,
    Dispatch,
    Enquiry,
    attachment_table,
    dispatch_table,
    enquiry_table,
    event_table,
    fetch_all,
    fetch_one,
    follow_up_table,
    message_table,
    utcnow,
)
from app.core.outbox import new_row
from app.core.settings import Settings
from app.core.vocabulary import AuditAction, Closure, EventType, MessageKind, OutboxState
from app.intake.reading import readable_enquiry
from app.intake.schemas import AttachmentOut, MessageOut

log = structlog.get_logger()
d = dispatch_table.c
e = enquiry_table.c
CITIZEN = "citizen"  # message.by when the citizen spoke by their token


@dataclass(frozen=True)
class Conversation:
    """What the conversation needs from the running application."""

    engine: AsyncEngine
    catalogue: Catalogue
    sealer: Sealer
    store: AttachmentStore
    settings: Settings
    wake_follow_ups: Callable[[], None]


@dataclass(frozen=True)
class Speaker:
    """Who speaks: the citizen by their access token, or an API caller (the client that
    submitted the enquiry, or staff with enquiries:read-all)."""

    caller: Caller | None = None
    token: str | None = None

    @property
    def staff(self) -> bool:
        return self.caller is not None and self.caller.allows(Scope.enquiries_read_all)

    @property
    def by(self) -> str:
        return CITIZEN if self.caller is None else self.caller.name[:64]

    @property
    def actor(self) -> Actor | None:
        """Staff are named (to staff) and audited; the citizen and their client are not."""
        return Actor.of(self.caller) if self.staff and self.caller is not None else None


# The timeline event, the audit action and the timeline's words for each forwarded kind.
_EVENT = {
    MessageKind.information: EventType.enquiry_information_added,
    MessageKind.withdrawal: EventType.enquiry_withdrawn,
    MessageKind.reopening: EventType.enquiry_reopened,
}
_AUDIT = {
    MessageKind.information: AuditAction.information_added,
    MessageKind.withdrawal: AuditAction.withdrawn,
    MessageKind.reopening: AuditAction.reopened,
    MessageKind.note: AuditAction.note_added,
}
_SAID = {
    MessageKind.information: "more information was added",
    MessageKind.withdrawal: "the enquiry was withdrawn",
    MessageKind.reopening: "the enquiry was reopened",
}
# A part finished as these may be reopened; any other ending (not ours, a duplicate) stays.
_REOPENABLE = frozenset({Status.resolved, Status.closed})


async def add_information(
    conversation: Conversation,
    *,
    reference: str,
    speaker: Speaker,
    text: str | None,
    files: Sequence[Prepared] = (),
    now: datetime | None = None,
    message_id: uuid.UUID | None = None,
) -> MessageOut:
    """More detail, photos or documents: kept, and sent to every organisation holding a live
    part. 422 with neither text nor files; 409 once the enquiry is over. A `message_id` the
    caller chose (made from a client's own update id) is kept once: a repeat fails on it."""
    if not text and not files:
        raise ValidationFailed("Send the information as `text`, or one or more `files`, or both.")
    return await _say(
        conversation,
        reference=reference,
        speaker=speaker,
        kind=MessageKind.information,
        text=text,
        files=files,
        now=now or utcnow(),
        message_id=message_id,
    )


async def withdraw(
    conversation: Conversation,
    *,
    reference: str,
    speaker: Speaker,
    reason: str | None,
    now: datetime | None = None,
) -> MessageOut:
    """Call the enquiry off: deliveries not yet made are cancelled, each organisation holding a
    live part is told. 409 once it is over (withdrawn, resolved, closed)."""
    return await _say(
        conversation,
        reference=reference,
        speaker=speaker,
        kind=MessageKind.withdrawal,
        text=reason,
        now=now or utcnow(),
    )


async def reopen(
    conversation: Conversation,
    *,
    reference: str,
    speaker: Speaker,
    reason: str | None,
    now: datetime | None = None,
) -> MessageOut:
    """Open a resolved or closed enquiry again ("it is not fixed"): each organisation whose part
    finished so is told. The citizen may within follow_ups.reopen_days; staff at any time."""
    return await _say(
        conversation,
        reference=reference,
        speaker=speaker,
        kind=MessageKind.reopening,
        text=reason,
        now=now or utcnow(),
    )


async def add_note(
    conversation: Conversation,
    *,
    reference: str,
    speaker: Speaker,
    text: str,
    now: datetime | None = None,
) -> MessageOut:
    """A staff note on the enquiry: never forwarded, never shown to the citizen."""
    if not speaker.staff:
        raise NotFound(_not_found(reference, speaker))
    return await _say(
        conversation,
        reference=reference,
        speaker=speaker,
        kind=MessageKind.note,
        text=text,
        now=now or utcnow(),
    )


async def _say(
    conversation: Conversation,
    *,
    reference: str,
    speaker: Speaker,
    kind: MessageKind,
    text: str | None,
    now: datetime,
    files: Sequence[Prepared] = (),
    message_id: uuid.UUID | None = None,
) -> MessageOut:
    canonical = references.parse(reference)
    message_id = message_id or uuid.uuid4()
    rows: list[dict[str, Any]] = []
    if files:
        # Put in the store first (slow I/O outside the transaction); taken out if it fails.
        async with reading(conversation.engine) as conn:
            enquiry = await _enquiry(conn, canonical, speaker)
        rows = await keep(
            conversation.store,
            conversation.sealer,
            enquiry_id=enquiry.id,
            message_id=message_id,
            files=files,
            now=now,
        )
    try:
        async with writing(conversation.engine) as conn:
            enquiry = await _enquiry(conn, canonical, speaker, lock=True)
            _check_allowed(enquiry, kind, speaker, conversation.settings, now)
            told = await _record(
                conn, conversation, enquiry, speaker, kind, text, message_id, rows, now
            )
            answer = await _answer(conn, enquiry.id, message_id, kind, text, speaker, now)
    except BaseException:
        if rows:
            await discard(conversation.store, rows)
        raise
    if told:
        conversation.wake_follow_ups()
    log.info(
        f"conversation.{kind}",
        enquiry=str(enquiry.id),
        message=str(message_id),
        files=len(rows),
        follow_ups=told,
        staff=speaker.staff,
    )
    return answer


async def _record(
    conn: AsyncConnection,
    conversation: Conversation,
    enquiry: Enquiry,
    speaker: Speaker,
    kind: MessageKind,
    text: str | None,
    message_id: uuid.UUID,
    rows: list[dict[str, Any]],
    now: datetime,
) -> int:
    """Every row of the act; how many follow-ups were queued."""
    if rows:
        await _check_room(conn, enquiry.id, len(rows), conversation.settings)
    actor = speaker.actor
    await conn.execute(
        message_table.insert(),
        {
            "id": message_id,
            "enquiry_id": enquiry.id,
            "kind": kind,
            "text": text,
            "by": speaker.by,
            "actor_id": actor.id if actor else None,
            "actor": actor.name if actor else None,
            "organisation_id": speaker.caller.organisation_id if speaker.caller else None,
            "created_at": now,
        },
    )
    if rows:
        await conn.execute(attachment_table.insert(), rows)
    parts: list[Dispatch] = []
    if kind is not MessageKind.note:
        parts = await _parts_to_tell(conn, enquiry.id, kind, conversation.catalogue)
        if parts:
            await conn.execute(
                follow_up_table.insert(),
                [
                    new_row(
                        now=now,
                        message_id=message_id,
                        dispatch_id=part.id,
                        enquiry_id=enquiry.id,
                        organisation_id=part.organisation_id,
                        kind=kind,
                    )
                    for part in parts
                ],
            )
        await _change_status(conn, conversation.catalogue, enquiry, kind, parts, actor, now)
        await _event(conn, conversation.catalogue, enquiry, kind, parts, len(rows), actor, now)
    if actor is not None:
        await audit.record(
            conn,
            actor=actor,
            action=_AUDIT[kind],
            subject=references.display(enquiry.reference),
            # What was done and for whom, never what was said (it may be personal data).
            detail={
                "message_id": str(message_id),
                "files": len(rows),
                "organisations": sorted({p.organisation_id for p in parts}),
            },
            at=now,
        )
    if parts:
        await wake_follow_ups(conn)  # every worker's sender, once this commits
    return len(parts)


def _not_found(reference: str, speaker: Speaker) -> str:
    shown = references.display(references.parse(reference))
    if speaker.token is not None:
        return f"The reference {shown} and this token do not match."
    return f"No enquiry has the reference {shown}."


async def _enquiry(
    conn: AsyncConnection, canonical: str, speaker: Speaker, *, lock: bool = False
) -> Enquiry:
    """The enquiry, if this speaker may speak on it; else 404, as for one that does not exist:
    the rule of reading it (app.intake.reading), and a client only on its own enquiries."""
    caller = speaker.caller
    if caller is not None and not speaker.staff and not caller.allows(Scope.enquiries_submit):
        raise NotFound(_not_found(canonical, speaker))
    enquiry = await readable_enquiry(
        conn,
        reference=canonical,
        reader=caller,
        client_id=caller.client_id if caller is not None and not speaker.staff else None,
        token=speaker.token,
    )
    if not lock:
        return enquiry
    # Read again under a lock held until the act commits: two acts on one enquiry are judged
    # one after the other, each on the state the other left.
    locked = await fetch_one(
        conn, Enquiry, select(Enquiry).where(e.id == enquiry.id).with_for_update()
    )
    if locked is None:
        raise NotFound(_not_found(canonical, speaker))
    return locked


def _check_allowed(
    enquiry: Enquiry, kind: MessageKind, speaker: Speaker, settings: Settings, now: datetime
) -> None:
    """409 unless the enquiry's state lets this be said now."""
    status = Status(enquiry.status)
    shown = references.display(enquiry.reference)
    if enquiry.anonymised_at is not None:
        raise StateConflict(f"The personal data of {shown} was removed; nothing more is kept.")
    if kind is MessageKind.note:
        return
    if kind is MessageKind.reopening:
        _check_reopenable(enquiry, status, speaker, settings, now)
        return
    if status is Status.withdrawn:
        raise StateConflict(f"{shown} was withdrawn; it cannot be {_verb(kind)}.")
    if status in FINAL:
        hint = " Reopen it first if it is not done." if status in _REOPENABLE else ""
        raise StateConflict(
            f"{shown} is {status.replace('_', ' ')}: it cannot be {_verb(kind)}.{hint}"
        )


def _verb(kind: MessageKind) -> str:
    return "withdrawn" if kind is MessageKind.withdrawal else "added to"


def _check_reopenable(
    enquiry: Enquiry, status: Status, speaker: Speaker, settings: Settings, now: datetime
) -> None:
    shown = references.display(enquiry.reference)
    if status not in _REOPENABLE:
        raise StateConflict(
            f"{shown} is {status.replace('_', ' ')}: only a resolved or closed enquiry can be "
            "reopened."
        )
    if speaker.staff:
        return
    days = settings.follow_ups.reopen_days
    ended = enquiry.closed_at or enquiry.updated_at
    if now - ended > timedelta(days=days):
        raise StateConflict(
            f"{shown} was {status} more than {days:g} days ago; to reopen it now, contact us."
        )


async def _check_room(
    conn: AsyncConnection, enquiry_id: uuid.UUID, adding: int, settings: Settings
) -> None:
    a = attachment_table.c
    held = int(await conn.scalar(select(func.count()).where(a.enquiry_id == enquiry_id)) or 0)
    most = settings.attachments.max_per_enquiry
    if held + adding > most:
        raise StateConflict(
            f"An enquiry keeps at most {most} photos and documents; this one has {held}."
        )


async def _parts_to_tell(
    conn: AsyncConnection, enquiry_id: uuid.UUID, kind: MessageKind, catalogue: Catalogue
) -> list[Dispatch]:
    """Each organisation's part a back-office holds that this kind of message is for: its
    latest delivered part, not closed here, still open (information, withdrawal) or
    finished as resolved or closed (reopening). Never the triage desk: it is the gateway's."""
    delivered = await fetch_all(
        conn,
        Dispatch,
        select(Dispatch)
        .where(
            d.enquiry_id == enquiry_id,
            d.state == OutboxState.delivered,
            d.closure.is_(None),
            d.organisation_id != catalogue.triage.id,
        )
        .order_by(d.created_at.desc(), d.id),
    )
    latest: dict[str, Dispatch] = {}
    for part in delivered:
        latest.setdefault(part.organisation_id, part)
    return [part for part in latest.values() if _wants(part, kind)]


def _wants(part: Dispatch, kind: MessageKind) -> bool:
    status = Status(part.remote_status) if part.remote_status else None
    if kind is MessageKind.reopening:
        return status in _REOPENABLE
    return status not in FINAL


async def _change_status(
    conn: AsyncConnection,
    catalogue: Catalogue,
    enquiry: Enquiry,
    kind: MessageKind,
    told: list[Dispatch],
    actor: Actor | None,
    now: datetime,
) -> None:
    if kind is MessageKind.withdrawal:
        # What was not delivered yet (waiting, retrying, given up, at the triage desk) is
        # called off here; the parts told carry on at their back-offices until they answer.
        undelivered = await conn.scalars(
            select(d.id).where(
                d.enquiry_id == enquiry.id,
                d.closure.is_(None),
                d.state.in_([OutboxState.pending, OutboxState.dead])
                | (d.organisation_id == catalogue.triage.id),
            )
        )
        await close_parts(
            conn,
            list(undelivered),
            closure=Closure.withdrawn,
            by=actor,
            note="withdrawn by the citizen" if actor is None else "withdrawn for the citizen",
            now=now,
        )
        await _set_status(conn, enquiry.id, Status.withdrawn, closed_at=now, now=now)
    elif kind is MessageKind.reopening:
        await conn.execute(
            update(dispatch_table)
            .where(d.id.in_([part.id for part in told]))
            .values(remote_status=Status.reopened, remote_status_at=now, updated_at=now)
        )
        await _set_status(conn, enquiry.id, Status.reopened, closed_at=None, now=now)


async def _set_status(
    conn: AsyncConnection,
    enquiry_id: uuid.UUID,
    status: Status,
    *,
    closed_at: datetime | None,
    now: datetime,
) -> None:
    await conn.execute(
        update(enquiry_table)
        .where(e.id == enquiry_id)
        .values(status=status, closed_at=closed_at, updated_at=now)
    )


async def _event(
    conn: AsyncConnection,
    catalogue: Catalogue,
    enquiry: Enquiry,
    kind: MessageKind,
    told: list[Dispatch],
    files: int,
    actor: Actor | None,
    now: datetime,
) -> None:
    said = _SAID[kind]
    if files:
        said += f" with {files} file{'s' if files > 1 else ''}"
    names = [catalogue.organisations[p.organisation_id].name for p in told]
    if names:
        said += f"; it is being sent to {', '.join(names)}"
    await conn.execute(
        event_table.insert(),
        {
            "id": uuid.uuid4(),
            "enquiry_id": enquiry.id,
            "type": _EVENT[kind],
            "status": Status.withdrawn
            if kind is MessageKind.withdrawal
            else Status.reopened
            if kind is MessageKind.reopening
            else None,
            "detail": said,
            "created_at": now,
            **(actor.on_event() if actor else {}),
        },
    )


async def _answer(
    conn: AsyncConnection,
    enquiry_id: uuid.UUID,
    message_id: uuid.UUID,
    kind: MessageKind,
    text: str | None,
    speaker: Speaker,
    now: datetime,
) -> MessageOut:
    a = attachment_table.c
    numbered = await fetch_all(
        conn,
        Attachment,
        select(Attachment).where(a.enquiry_id == enquiry_id).order_by(a.created_at, a.id),
    )
    attachments = [
        AttachmentOut(
            id=row.id, content_type=row.content_type, size=row.size, filename=filename(row, number)
        )
        for number, row in enumerate(numbered, start=1)
        if row.message_id == message_id
    ]
    actor = speaker.actor
    return MessageOut(
        id=message_id,
        kind=kind,
        created_at=now,
        text=text,
        attachments=attachments,
        by_citizen=not speaker.staff,
        actor=actor.name if actor else None,
    )
