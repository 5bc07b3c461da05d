"""Reading enquiries back: one in full with its dispatches and timeline, or a filtered page."""

from __future__ import annotations

import hmac
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.base import shareable_citizen
from app.catalogue.catalogue import Catalogue
from app.catalogue.status import Status
from app.clients.service import Caller, Scope, hash_secret
from app.core import audit
from app.core import reference as references
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.db import reading, writing
from app.core.errors import NotFound
from app.core.models import (
    Attachment,
    Dispatch,
    DispatchAttempt,
    Enquiry,
    Event,
    Message,
    alert_table,
    attachment_filename,
    attachment_table,
    attempt_table,
    dispatch_table,
    enquiry_table,
    event_table,
    fetch_all,
    fetch_one,
    follow_up_table,
    message_table,
)
from app.core.paging import newest_first, page
from app.core.vocabulary import AuditAction, EventType, MessageKind, OutboxState, Outcome
from app.intake.schemas import (
    Advice,
    AlertOut,
    AttachmentOut,
    AttemptOut,
    DestinationOut,
    EnquiryOut,
    EnquiryPage,
    EnquirySummary,
    FollowUpOut,
    MessageOut,
    TimelineEvent,
)

# Compared against when there is no such enquiry, so a wrong reference and a wrong token take
# the same steps: a look-up, then one constant-time comparison.
_NO_TOKEN_HASH = hash_secret("no enquiry has this token")


async def get_enquiry(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    sealer: Sealer,
    reference: str,
    reader: Caller | None = None,
    client_id: str | None = None,
    token: str | None = None,
) -> EnquiryOut:
    """One enquiry by its reference (as typed), with destinations and timeline.

    With `client_id`, only if that client submitted it; with `token`, only if it is the
    enquiry's access token, and with the citizen's details masked; for a partner's staff (a
    `reader` bound to an organisation), only if it has a part for their organisation, and
    then only that part. Otherwise it is not found, answered exactly as for a reference that
    does not exist. A `reader` shown the citizen's details is written to the audit log."""
    audience = Audience.of(reader)
    # One snapshot: else a delivery committed between the reads shows every destination
    # delivered beside the status from before.
    async with reading(engine, one_snapshot=True) as conn:
        enquiry = await readable_enquiry(
            conn, reference=reference, reader=reader, client_id=client_id, token=token
        )
        view = await enquiry_view(
            conn,
            enquiry,
            catalogue,
            sealer,
            masked=token is not None,
            staff=audience.staff,
            organisation_id=audience.organisation_id,
        )
    if reader is not None and view.citizen:
        async with writing(engine) as conn:
            await audit.record(
                conn,
                actor=Actor.of(reader),
                action=AuditAction.enquiry_read,
                subject=view.reference,
            )
    return view


async def readable_enquiry(
    conn: AsyncConnection,
    *,
    reference: str,
    reader: Caller | None = None,
    client_id: str | None = None,
    token: str | None = None,
) -> Enquiry:
    """The enquiry by its reference (as typed) if this reader may read it, by the rule of
    get_enquiry (a client its own, a token its enquiry, a partner's staff those with their
    organisation's part); else NotFound, as for a reference that does not exist. The one
    rule for reading an enquiry and what belongs to it (its attachments)."""
    canonical = references.parse(reference)
    enquiry = await fetch_one(
        conn, Enquiry, select(Enquiry).where(enquiry_table.c.reference == canonical)
    )
    seen = _may_see(enquiry, client_id=client_id, token=token)
    if not seen or enquiry is None or not await _has_part(conn, enquiry, Audience.of(reader)):
        shown = references.display(canonical)
        raise NotFound(
            # With a token, never say which of the two is wrong.
            f"The reference {shown} and this token do not match."
            if token is not None
            else f"No enquiry has the reference {shown}."
        )
    return enquiry


async def _has_part(conn: AsyncConnection, enquiry: Enquiry, audience: Audience) -> bool:
    if audience.organisation_id is None:
        return True
    d = dispatch_table.c
    found = await conn.scalar(
        select(d.id)
        .where(d.enquiry_id == enquiry.id, d.organisation_id == audience.organisation_id)
        .limit(1)
    )
    return found is not None


async def enquiry_view(
    conn: AsyncConnection,
    enquiry: Enquiry,
    catalogue: Catalogue,
    sealer: Sealer,
    *,
    masked: bool,
    staff: bool,
    organisation_id: str | None = None,
) -> EnquiryOut:
    """The enquiry row as the API shows it, with its destinations and timeline; back-office
    errors in full only for `staff`. For one organisation's staff (`organisation_id`), only
    that organisation's part and the citizen's details it may receive (its data-sharing
    agreement, the citizen's consent), as its delivery was sent them."""
    audience = Audience(staff=staff, organisation_id=organisation_id)
    d, ev = dispatch_table.c, event_table.c
    query = select(Dispatch).where(d.enquiry_id == enquiry.id)
    if organisation_id is not None:
        query = query.where(d.organisation_id == organisation_id)
    dispatches = await fetch_all(conn, Dispatch, query.order_by(d.created_at, d.organisation_id))
    destinations = await destinations_of(conn, dispatches, catalogue, staff=staff)
    events = await fetch_all(
        conn,
        Event,
        select(Event).where(ev.enquiry_id == enquiry.id).order_by(ev.created_at, ev.id),
    )
    citizen = sealer.open(enquiry.citizen_sealed)
    place = enquiry.place
    if organisation_id is not None:
        organisation = catalogue.organisations.get(organisation_id)
        citizen = (
            shareable_citizen(citizen, enquiry.consent, organisation) if organisation else None
        )
        # The note of a straddling place names the councils that share it.
        place = {k: v for k, v in place.items() if k != "note"} if place else place
    attachments, messages = await conversation_of(conn, enquiry.id, audience, masked=masked)
    return EnquiryOut(
        reference=references.display(enquiry.reference),
        status=enquiry.status,
        service_code=enquiry.service_code,
        channel=enquiry.channel,
        description=enquiry.description,
        location=masked_location(enquiry.location) if masked else enquiry.location,
        place=place,
        citizen=masked_citizen(citizen) if masked else citizen,
        attributes=enquiry.attributes or {},
        advice=[Advice(**a) for a in enquiry.advice or []],
        destinations=destinations,
        created_at=enquiry.created_at,
        updated_at=enquiry.updated_at,
        closed_at=enquiry.closed_at,
        anonymised_at=enquiry.anonymised_at,
        timeline=[_timeline_event(e, audience) for e in events if audience.sees(e.organisation_id)],
        messages=messages,
        attachments=attachments,
        alerts=await _alerts(conn, enquiry.id) if staff and organisation_id is None else None,
    )


async def conversation_of(
    conn: AsyncConnection, enquiry_id: uuid.UUID, audience: Audience, *, masked: bool
) -> tuple[list[AttachmentOut], list[MessageOut]]:
    """The enquiry's attachments and what was said after submission, oldest first, as this
    reader may see them: notes and who said what for staff only (one organisation's staff,
    their own organisation's notes); the citizen and their client, never."""
    a, m = attachment_table.c, message_table.c
    rows = await fetch_all(
        conn,
        Attachment,
        select(Attachment).where(a.enquiry_id == enquiry_id).order_by(a.created_at, a.id),
    )
    attachments: list[AttachmentOut] = []
    by_message: dict[uuid.UUID, list[AttachmentOut]] = {}
    for number, row in enumerate(rows, start=1):
        shown = AttachmentOut(
            id=row.id,
            content_type=row.content_type,
            size=row.size,
            filename=attachment_filename(row.content_type, number),
        )
        attachments.append(shown)
        by_message.setdefault(row.message_id, []).append(shown)
    said = await fetch_all(
        conn,
        Message,
        select(Message).where(m.enquiry_id == enquiry_id).order_by(m.created_at, m.id),
    )
    staff = audience.staff and not masked
    messages = [
        MessageOut(
            id=message.id,
            kind=MessageKind(message.kind),
            created_at=message.created_at,
            text=message.text,
            attachments=by_message.get(message.id, []),
            by_citizen=message.actor_id is None,
            actor=message.actor if staff else None,
        )
        for message in said
        if message.kind != MessageKind.note
        or (staff and audience.organisation_id in (None, message.organisation_id))
    ]
    return attachments, messages


async def _alerts(conn: AsyncConnection, enquiry_id: Any) -> list[AlertOut]:
    """The messages to the citizen about this enquiry (app.alerts), for staff: what, how and
    how far, never to whom or what they said."""
    a, ev = alert_table.c, event_table.c
    rows = await conn.execute(
        select(a.kind, a.channel, a.status, a.state, a.attempts, a.created_at, a.delivered_at)
        .join(event_table, ev.id == a.event_id)
        .where(a.enquiry_id == enquiry_id)
        .order_by(ev.created_at, ev.id)  # in the order of what they tell
    )
    return [AlertOut(**row._asdict()) for row in rows]


def _may_see(enquiry: Enquiry | None, *, client_id: str | None, token: str | None) -> bool:
    """With `token`, whether it is the enquiry's access token (compared in constant time,
    the same steps for an enquiry that does not exist); else whether `client_id` (if any)
    submitted it."""
    if token is not None:
        stored = enquiry.access_token_hash if enquiry else None
        matches = hmac.compare_digest(hash_secret(token), stored or _NO_TOKEN_HASH)
        return matches and stored is not None
    if enquiry is None:
        return False
    return client_id is None or enquiry.client_id == client_id


def masked_citizen(citizen: dict[str, Any] | None) -> dict[str, Any] | None:
    """Enough of the citizen's details to recognise them, not to learn them."""
    if not citizen:
        return citizen
    shown: dict[str, Any] = {}
    if citizen.get("name"):
        shown["name"] = " ".join(w[0] + "*" * max(3, len(w) - 1) for w in citizen["name"].split())
    if citizen.get("email"):
        local, _, domain = citizen["email"].partition("@")
        shown["email"] = f"{local[:1]}***@{domain}"
    if citizen.get("phone"):
        digits = [ch for ch in citizen["phone"] if ch.isdigit()]
        shown["phone"] = "*" * (len(digits) - 3) + "".join(digits[-3:])
    for kept in ("preferred_contact", "language"):
        if citizen.get(kept):
            shown[kept] = citizen[kept]
    return shown


def masked_location(location: dict[str, Any] | None) -> dict[str, Any] | None:
    """The place without a street address or property number, which may be the citizen's home."""
    if not location:
        return location
    return {k: ("***" if k in ("address", "uprn") else v) for k, v in location.items()}


# A failed delivery's error names the back-office's internal host and quotes its answer: for
# staff (enquiries:read-all, privacy, admin). Anyone else is told only what kind of trouble it is.
_RETRYING = "delivery failed for now (the organisation's system is unavailable); it will be retried"
_GIVEN_UP = "it could not be delivered to this organisation; the contact centre can see why"
_PARTNER_DETAIL: dict[str, str] = {
    EventType.dispatch_retry: _RETRYING,
    EventType.dispatch_dead: _GIVEN_UP,
}


def shown_detail(event_type: str, detail: str | None, *, staff: bool) -> str | None:
    """A timeline event's detail as this reader may see it."""
    return detail if staff else _PARTNER_DETAIL.get(event_type, detail)


def shown_error(state: str, error: str | None, *, staff: bool) -> str | None:
    """A destination's last error as this reader may see it."""
    if staff or error is None or state in (OutboxState.delivered, OutboxState.cancelled):
        return error  # a cancellation's reason is the gateway's own, never a back-office's
    return _GIVEN_UP if state == OutboxState.dead else _RETRYING


@dataclass(frozen=True)
class Audience:
    """Who reads a timeline: staff see back-office errors in full; one organisation's view
    (its staff's reads, its webhook feed) holds the enquiry as a whole and that
    organisation's own part, never another organisation's. The one rule for both."""

    staff: bool
    organisation_id: str | None = None  # None: every part

    @classmethod
    def of(cls, reader: Caller | None) -> Audience:
        """A reader's audience: staff with enquiries:read-all; a partner's staff, their
        organisation's."""
        if reader is None:
            return cls(staff=False)
        staff = reader.allows(Scope.enquiries_read_all)
        return cls(staff=staff, organisation_id=reader.organisation_id)

    def sees(self, event_organisation_id: str | None) -> bool:
        """Whether an event is shown: about the enquiry as a whole (naming no organisation),
        or this audience's own part."""
        return self.organisation_id is None or event_organisation_id in (
            None,
            self.organisation_id,
        )

    def detail(
        self, event_type: str, event_organisation_id: str | None, detail: str | None
    ) -> str | None:
        """An event's detail as this audience may see it: in one organisation's view, an
        event about the whole enquiry says only what concerns that organisation."""
        if self.organisation_id is not None and event_organisation_id is None:
            detail = _whole_enquiry_detail(event_type, detail, self.organisation_id)
        return shown_detail(event_type, detail, staff=self.staff)

    def names_actor(self, event_organisation_id: str | None) -> bool:
        """Staff see who did it; one organisation's staff, only on their own part."""
        own = self.organisation_id is None or event_organisation_id == self.organisation_id
        return self.staff and own


# Whole-enquiry events whose detail names no organisation: shown to every organisation's view.
_NAMES_NO_ORGANISATION = frozenset(
    {
        *(EventType.enquiry_status(status) for status in Status),
        EventType.enquiry_dispatched,
        EventType.enquiry_failed,
        EventType.enquiry_anonymised,
    }
)
# enquiry.received's detail is "organisation-id: why; organisation-id: why" (app.intake.service);
# a reason itself may hold "; " ("... is a county service; Oxfordshire County Council covers"),
# so a line starts only where an id (lower case, digits, dashes) and ": " follow.
_DESTINATION_LINE = re.compile(r"; (?=[a-z0-9][a-z0-9-]*: )")


def _whole_enquiry_detail(event_type: str, detail: str | None, organisation_id: str) -> str | None:
    """A whole-enquiry event's detail for one organisation: enquiry.received keeps only that
    organisation's own line (who else was sent it is not theirs to know); one that may name
    other organisations, none."""
    if detail is None:
        return None
    # Checked first: `enquiry.received` is also the name of the status `received`.
    if event_type == EventType.enquiry_received:
        own = f"{organisation_id}: "
        lines = [line for line in _DESTINATION_LINE.split(detail) if line.startswith(own)]
        return "; ".join(lines) or None
    return detail if event_type in _NAMES_NO_ORGANISATION else None


def shown_attempt_error(outcome: str, error: str | None, *, staff: bool) -> str | None:
    """An attempt's error as this reader may see it: as a destination's, by how it ended."""
    state = {
        Outcome.delivered: OutboxState.delivered,
        Outcome.dead: OutboxState.dead,
        Outcome.cancelled: OutboxState.cancelled,
    }.get(Outcome(outcome), OutboxState.pending)
    return shown_error(state, error, staff=staff)


async def destinations_of(
    conn: AsyncConnection, dispatches: Sequence[Dispatch], catalogue: Catalogue, *, staff: bool
) -> list[DestinationOut]:
    """The dispatches as the API shows them, each with its attempts."""
    a = attempt_table.c
    attempts: dict[Any, list[DispatchAttempt]] = {}
    if dispatches:
        for attempt in await fetch_all(
            conn,
            DispatchAttempt,
            select(DispatchAttempt)
            .where(a.dispatch_id.in_([dispatch.id for dispatch in dispatches]))
            .order_by(a.dispatch_id, a.number, a.started_at),
        ):
            attempts.setdefault(attempt.dispatch_id, []).append(attempt)
    follow_ups = await _follow_ups(conn, dispatches) if staff else {}
    return [
        _destination(
            dispatch,
            catalogue,
            attempts.get(dispatch.id, []),
            staff=staff,
            follow_ups=follow_ups.get(dispatch.id, []) if staff else None,
        )
        for dispatch in dispatches
    ]


async def _follow_ups(
    conn: AsyncConnection, dispatches: Sequence[Dispatch]
) -> dict[uuid.UUID, list[FollowUpOut]]:
    """The follow-ups sent (or on their way) to each part, oldest first."""
    f = follow_up_table.c
    found: dict[uuid.UUID, list[FollowUpOut]] = {}
    if not dispatches:
        return found
    rows = await conn.execute(
        select(follow_up_table)
        .where(f.dispatch_id.in_([dispatch.id for dispatch in dispatches]))
        .order_by(f.created_at, f.id)
    )
    for row in rows.mappings():
        found.setdefault(row["dispatch_id"], []).append(
            FollowUpOut(
                message_id=row["message_id"],
                kind=MessageKind(row["kind"]),
                state=OutboxState(row["state"]),
                attempts=row["attempts"],
                delivered_at=row["delivered_at"],
                remote_reference=row["remote_reference"],
            )
        )
    return found


def _attempt(attempt: DispatchAttempt, *, staff: bool) -> AttemptOut:
    took = attempt.finished_at - attempt.started_at
    return AttemptOut(
        number=attempt.number,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        duration_ms=max(0, round(took.total_seconds() * 1000)),
        outcome=Outcome(attempt.outcome),
        error=shown_attempt_error(attempt.outcome, attempt.error, staff=staff),
    )


def _destination(
    dispatch: Dispatch,
    catalogue: Catalogue,
    attempts: Sequence[DispatchAttempt],
    *,
    staff: bool,
    follow_ups: list[FollowUpOut] | None = None,
) -> DestinationOut:
    organisation = catalogue.organisations.get(dispatch.organisation_id)
    return DestinationOut(
        organisation_id=dispatch.organisation_id,
        organisation_name=organisation.name if organisation else dispatch.organisation_id,
        reason=dispatch.reason,
        state=dispatch.state,
        attempts=dispatch.attempts,
        last_error=shown_error(dispatch.state, dispatch.last_error, staff=staff),
        remote_reference=dispatch.remote_reference,
        remote_status=dispatch.remote_status,
        remote_status_at=dispatch.remote_status_at,
        next_attempt_at=dispatch.next_attempt_at if dispatch.state == OutboxState.pending else None,
        delivered_at=dispatch.delivered_at,
        attempt_log=[_attempt(attempt, staff=staff) for attempt in attempts],
        follow_ups=follow_ups,
    )


def _timeline_event(event: Event, audience: Audience) -> TimelineEvent:
    return TimelineEvent(
        at=event.created_at,
        type=event.type,
        status=event.status,
        organisation_id=event.organisation_id,
        detail=audience.detail(event.type, event.organisation_id, event.detail),
        actor=event.actor if audience.names_actor(event.organisation_id) else None,
    )


@dataclass(frozen=True)
class EnquiryFilter:
    service_code: str | None = None
    status: str | None = None
    channel: str | None = None
    organisation_id: str | None = None
    client_id: str | None = None  # only the enquiries this client submitted
    part_of: str | None = None  # only those with a part for this organisation (its staff)
    created_after: datetime | None = None
    created_before: datetime | None = None
    # A caller's earlier enquiries: the keyed hash of their email or phone (app.core.crypto).
    email_hash: str | None = None
    phone_hash: str | None = None

    @classmethod
    def for_reader(cls, reader: Caller, **filters: Any) -> EnquiryFilter:
        """What this reader may list: enquiries:read only its own client's enquiries, a
        partner's staff only those with a part for their organisation."""
        own = None if reader.allows(Scope.enquiries_read_all) else reader.client_id
        return cls(client_id=own, part_of=reader.organisation_id, **filters)

    def finds_nothing(self) -> bool:
        """A partner's staff naming another organisation: a filter narrows what they may
        see, never widens it, and an enquiry shared with that organisation is not theirs to
        be told of."""
        return self.part_of is not None and self.organisation_id not in (None, self.part_of)

    def conditions(self) -> list[ColumnElement[bool]]:
        e, d = enquiry_table.c, dispatch_table.c
        conditions = [
            column == value
            for column, value in (
                (e.service_code, self.service_code),
                (e.status, self.status),
                (e.channel, self.channel),
                (e.client_id, self.client_id),
                (e.citizen_email_hash, self.email_hash),
                (e.citizen_phone_hash, self.phone_hash),
            )
            if value is not None
        ]
        for organisation_id in {self.organisation_id, self.part_of} - {None}:
            conditions.append(
                e.id.in_(select(d.enquiry_id).where(d.organisation_id == organisation_id))
            )
        if self.created_after is not None:
            conditions.append(e.created_at >= self.created_after)
        if self.created_before is not None:
            conditions.append(e.created_at < self.created_before)
        return conditions


async def list_enquiries(
    *, engine: AsyncEngine, filters: EnquiryFilter, cursor: str | None, limit: int
) -> EnquiryPage:
    """Newest first, keyset-paginated so pages stay stable while enquiries arrive."""
    if filters.finds_nothing():
        return EnquiryPage(items=[], next_cursor=None)
    e = enquiry_table.c
    query = select(
        e.id,
        e.reference,
        e.service_code,
        e.status,
        e.channel,
        e.location,
        e.place,
        e.created_at,
        e.updated_at,
        e.closed_at,
    ).where(*filters.conditions())
    query = newest_first(query, e.created_at, e.id, cursor=cursor, limit=limit)
    async with reading(engine) as conn:
        rows, next_cursor = page(
            list((await conn.execute(query)).mappings()), limit=limit, at="created_at"
        )
    return EnquiryPage(
        items=[
            EnquirySummary(
                reference=references.display(r["reference"]),
                service_code=r["service_code"],
                status=r["status"],
                channel=r["channel"],
                postcode=(r["location"] or {}).get("postcode")
                or (r["place"] or {}).get("postcode"),
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                closed_at=r["closed_at"],
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


async def count_enquiries(*, engine: AsyncEngine, filters: EnquiryFilter) -> int:
    """How many enquiries the filter finds, across every page."""
    if filters.finds_nothing():
        return 0
    query = select(func.count()).select_from(enquiry_table).where(*filters.conditions())
    async with reading(engine) as conn:
        return int(await conn.scalar(query) or 0)
