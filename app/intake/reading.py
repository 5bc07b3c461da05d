"""Reading enquiries back: one in full with its dispatches and timeline, or a filtered page."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.catalogue.catalogue import Catalogue
from app.clients.service import Caller, Scope, hash_secret
from app.core import audit
from app.core import reference as references
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.db import reading, writing
from app.core.errors import NotFound
from app.core.models import (
    Dispatch,
    Enquiry,
    Event,
    dispatch_table,
    enquiry_table,
    event_table,
    fetch_all,
    fetch_one,
)
from app.core.paging import newest_first, page
from app.core.vocabulary import AuditAction, EventType, OutboxState
from app.intake.schemas import (
    Advice,
    DestinationOut,
    EnquiryOut,
    EnquiryPage,
    EnquirySummary,
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
    enquiry's access token, and with the citizen's details masked. Otherwise it is not found,
    answered exactly as for a reference that does not exist. A `reader` shown the citizen's
    details is written to the audit log."""
    canonical = references.parse(reference)
    # One snapshot: else a delivery committed between the reads shows every destination
    # delivered beside the status from before.
    async with reading(engine, one_snapshot=True) as conn:
        enquiry = await fetch_one(
            conn, Enquiry, select(Enquiry).where(enquiry_table.c.reference == canonical)
        )
        if not _may_see(enquiry, client_id=client_id, token=token) or enquiry is None:
            shown = references.display(canonical)
            raise NotFound(
                # With a token, never say which of the two is wrong.
                f"The reference {shown} and this token do not match."
                if token is not None
                else f"No enquiry has the reference {shown}."
            )
        staff = reader is not None and reader.allows(Scope.enquiries_read_all)
        view = await enquiry_view(
            conn, enquiry, catalogue, sealer, masked=token is not None, staff=staff
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


async def enquiry_view(
    conn: AsyncConnection,
    enquiry: Enquiry,
    catalogue: Catalogue,
    sealer: Sealer,
    *,
    masked: bool,
    staff: bool,
) -> EnquiryOut:
    """The enquiry row as the API shows it, with its destinations and timeline; back-office
    errors in full only for `staff`."""
    d, ev = dispatch_table.c, event_table.c
    dispatches = await fetch_all(
        conn,
        Dispatch,
        select(Dispatch)
        .where(d.enquiry_id == enquiry.id)
        .order_by(d.created_at, d.organisation_id),
    )
    destinations = [_destination(dispatch, catalogue, staff=staff) for dispatch in dispatches]
    events = await fetch_all(
        conn,
        Event,
        select(Event).where(ev.enquiry_id == enquiry.id).order_by(ev.created_at, ev.id),
    )
    citizen = sealer.open(enquiry.citizen_sealed)
    return EnquiryOut(
        reference=references.display(enquiry.reference),
        status=enquiry.status,
        service_code=enquiry.service_code,
        channel=enquiry.channel,
        description=enquiry.description,
        location=masked_location(enquiry.location) if masked else enquiry.location,
        place=enquiry.place,
        citizen=masked_citizen(citizen) if masked else citizen,
        attributes=enquiry.attributes or {},
        advice=[Advice(**a) for a in enquiry.advice or []],
        destinations=destinations,
        created_at=enquiry.created_at,
        updated_at=enquiry.updated_at,
        closed_at=enquiry.closed_at,
        anonymised_at=enquiry.anonymised_at,
        timeline=[_timeline_event(e, staff=staff) for e in events],
    )


def _may_see(enquiry: Enquiry | None, *, client_id: str | None, token: str | None) -> bool:
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


def _destination(dispatch: Dispatch, catalogue: Catalogue, *, staff: bool) -> DestinationOut:
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
    )


def _timeline_event(event: Event, *, staff: bool) -> TimelineEvent:
    return TimelineEvent(
        at=event.created_at,
        type=event.type,
        status=event.status,
        organisation_id=event.organisation_id,
        detail=shown_detail(event.type, event.detail, staff=staff),
        actor=event.actor if staff else None,
    )


@dataclass(frozen=True)
class EnquiryFilter:
    service_code: str | None = None
    status: str | None = None
    channel: str | None = None
    organisation_id: str | None = None
    client_id: str | None = None  # only the enquiries this client submitted
    created_after: datetime | None = None
    created_before: datetime | None = None


async def list_enquiries(
    *, engine: AsyncEngine, filters: EnquiryFilter, cursor: str | None, limit: int
) -> EnquiryPage:
    """Newest first, keyset-paginated so pages stay stable while enquiries arrive."""
    e = enquiry_table.c
    query = select(
        e.id, e.reference, e.service_code, e.status, e.channel, e.created_at, e.updated_at
    )
    for column, value in (
        (e.service_code, filters.service_code),
        (e.status, filters.status),
        (e.channel, filters.channel),
        (e.client_id, filters.client_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.organisation_id is not None:
        query = query.where(
            e.id.in_(
                select(dispatch_table.c.enquiry_id).where(
                    dispatch_table.c.organisation_id == filters.organisation_id
                )
            )
        )
    if filters.created_after is not None:
        query = query.where(e.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(e.created_at < filters.created_before)
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
                created_at=r["created_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )
