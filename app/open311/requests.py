"""Service requests through the Open311 front door: submitted by the one intake path, read
back without the citizen's personal data, and their status changes listed.

Who sees what: a key with `enquiries:read-all` every request; one with `enquiries:read` the
requests its own client submitted (a partner's staff, those with their organisation's part),
as GET /v1/enquiries lists them. Nothing here shows a citizen's name, email or phone, so, as
for the /v1 list, reads are not written to the audit log; a key that posts information is
named on the message as on /v1.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.attachments.files import Prepared
from app.attachments.service import signed_url
from app.catalogue.status import FINAL, Status
from app.clients.service import Caller
from app.conversation.service import Conversation, Speaker, add_information
from app.core import reference as references
from app.core.db import reading
from app.core.errors import (
    DomainError,
    FieldError,
    InvalidReference,
    NotFound,
    ValidationFailed,
)
from app.core.models import (
    attachment_table,
    dispatch_table,
    enquiry_table,
    event_table,
    message_table,
    utcnow,
)
from app.core.settings import Settings
from app.core.vocabulary import EventType
from app.intake.reading import Audience, EnquiryFilter
from app.intake.schemas import Channel, EnquiryCreated
from app.intake.service import IntakeContext, accept_enquiry
from app.open311.mapping import SINGLE, Pairs, read_request_form, single_values
from app.open311.media import fetch_media

log = structlog.get_logger()
e = enquiry_table.c
d = dispatch_table.c
a = attachment_table.c
ev = event_table.c
m = message_table.c
# The words FixMyStreet reads (mySociety's extension), for each of the gateway's statuses;
# the gateway's own word goes beside it as external_status_code.
FIXMYSTREET_WORDS: dict[str, str] = {
    Status.in_progress: "in_progress",
    Status.action_scheduled: "action_scheduled",
    Status.resolved: "fixed",
    Status.closed: "closed",
    Status.withdrawn: "closed",
    Status.not_our_responsibility: "not_councils_responsibility",
    Status.duplicate: "duplicate",
    Status.cancelled: "cancelled",
    Status.information_requested: "investigating",
}
# Status changes of the enquiry as a whole: what its citizen would be told.
_STATUS_EVENTS = [
    EventType.enquiry_received,
    *(EventType.enquiry_status(s) for s in Status),
    EventType.enquiry_withdrawn,
    EventType.enquiry_reopened,
]
# One namespace for update ids a client chose: the same client, request and id → one message.
_CLIENT_UPDATES = uuid.UUID("6f1c2b2e-3a51-4d8e-9a51-0e5b1f3c2d11")
MAX_IDS = 100


@dataclass(frozen=True)
class FrontDoor:
    """What the Open311 front door uses from the running application."""

    intake: IntakeContext
    conversation: Conversation
    settings: Settings
    http: httpx.AsyncClient | None = None


def check_jurisdiction(settings: Settings, pairs: Pairs) -> None:
    """404 for a jurisdiction_id that is not this gateway's (none given is this one)."""
    given = [v.strip() for k, v in pairs if k == "jurisdiction_id" and v.strip()]
    if any(v != settings.open311.jurisdiction_id for v in given):
        raise NotFound(
            f"This gateway answers for the jurisdiction '{settings.open311.jurisdiction_id}' only."
        )


def status_word(status: str) -> str:
    """open or closed, as GeoReport v2 says."""
    return "closed" if status in FINAL else "open"


async def submit(door: FrontDoor, *, caller: Caller, pairs: Pairs) -> list[dict[str, Any]]:
    """POST requests: the form as an enquiry through intake, its photo kept with it."""
    check_jurisdiction(door.settings, pairs)
    form = read_request_form(pairs, catalogue=door.intake.catalogue, channel=_channel(caller))
    photo = None
    if form.media_url is not None:
        # Fetched before anything is stored: a photo that cannot be kept refuses the request.
        photo = await fetch_media(door.http, form.media_url, settings=door.settings.attachments)
    created = await accept_enquiry(
        enquiry=form.enquiry, context=door.intake, caller=caller, idempotency_key=None
    )
    assert isinstance(created, EnquiryCreated)  # no Idempotency-Key: never a stored replay
    if photo is not None:
        await _keep_photo(door, caller, created.reference, photo)
    async with reading(door.intake.engine) as conn:
        token = await conn.scalar(
            select(e.id).where(e.reference == references.parse(created.reference))
        )
    notice = " ".join(advice.message for advice in created.advice)
    return [
        {
            "service_request_id": created.reference,
            "token": str(token),
            "service_notice": notice,
            "account_id": None,
        }
    ]


def _channel(caller: Caller) -> Channel:
    """The key's own channel if it is bound to one (intake holds it to that), else `app`."""
    channels = {channel.value: channel for channel in Channel}
    return channels.get(caller.channel or "", Channel.app)


async def _keep_photo(door: FrontDoor, caller: Caller, reference: str, photo: Prepared) -> None:
    """The request's photo, on the enquiry just made. The enquiry stands if this fails (its
    answer must still reach the client, or a retry would make it twice); it is logged."""
    try:
        await add_information(
            door.conversation,
            reference=reference,
            speaker=Speaker(caller=caller),
            text=None,
            files=[photo],
        )
    except DomainError as error:
        log.warning("open311.photo_not_kept", reference=reference, error=error.slug)


@dataclass(frozen=True)
class RequestQuery:
    """GET requests' filters, read."""

    ids: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    statuses: frozenset[str] = frozenset()  # open, closed, or both (no filter)
    extra: list[ColumnElement[bool]] = field(default_factory=list)


def comma_list(text: str | None) -> tuple[str, ...]:
    """The spec's "comma delimited" values, blanks left out."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())[:MAX_IDS]


def parse_statuses(text: str | None) -> frozenset[str]:
    """open, closed or both (a comma list); 400 for another word."""
    statuses = frozenset(comma_list(text))
    if not statuses <= {"open", "closed"}:
        raise ValidationFailed(
            "status is open or closed (or both, comma delimited).",
            [FieldError("open or closed", parameter="status")],
        )
    return statuses


def parse_ids(text: str | None) -> tuple[str, ...]:
    """A comma list of references, each canonical; 400 for one that is not a reference."""
    if not text:
        return ()
    given = [part.strip() for part in text.split(",") if part.strip()]
    if len(given) > MAX_IDS:
        raise ValidationFailed(f"At most {MAX_IDS} service_request_id can be asked at once.")
    try:
        return tuple(references.parse(part) for part in given)
    except InvalidReference as error:
        raise ValidationFailed(
            error.detail, [FieldError("not a reference", parameter="service_request_id")]
        ) from None


async def list_requests(
    door: FrontDoor, *, caller: Caller, query: RequestQuery, now: datetime | None = None
) -> list[dict[str, Any]]:
    """GET requests: newest first, by the spec's filters, at most the configured cap; without
    ids or dates, the last 90 days."""
    now = now or utcnow()
    conditions = _visible(caller)
    if query.ids:
        conditions.append(e.reference.in_(query.ids))
    else:
        start, end = _window(door.settings, query, now)
        conditions += [e.created_at >= start, e.created_at <= end]
    if query.service_codes:
        conditions.append(e.service_code.in_(query.service_codes))
    if query.statuses == {"closed"}:
        conditions.append(e.status.in_(sorted(FINAL)))
    elif query.statuses == {"open"}:
        conditions.append(e.status.not_in(sorted(FINAL)))
    limit = door.settings.open311.max_requests
    async with reading(door.intake.engine, one_snapshot=True) as conn:
        rows = await _enquiries(conn, conditions, limit)
        return await _shown(conn, door, rows, now, part_of=caller.organisation_id)


def _window(settings: Settings, query: RequestQuery, now: datetime) -> tuple[datetime, datetime]:
    # A start in the future without an end finds nothing, rather than an error.
    end = query.end or max(now, query.start or now)
    start = query.start or end - timedelta(days=settings.open311.default_days)
    if start > end:
        raise ValidationFailed(
            "start_date is after end_date.", [FieldError("after end_date", parameter="start_date")]
        )
    return start, end


def _visible(caller: Caller) -> list[ColumnElement[bool]]:
    """The rule of GET /v1/enquiries: read-all every enquiry, any other key its own client's
    (the route has checked the scope)."""
    return EnquiryFilter.for_reader(caller).conditions()


async def _enquiries(
    conn: AsyncConnection, conditions: Sequence[ColumnElement[bool]], limit: int
) -> list[Any]:
    query = (
        select(
            e.id,
            e.reference,
            e.service_code,
            e.status,
            e.description,
            e.location,
            e.place,
            e.advice,
            e.created_at,
            e.updated_at,
            e.anonymised_at,
        )
        .where(*conditions)
        .order_by(e.created_at.desc(), e.id)
        .limit(limit)
    )
    return list((await conn.execute(query)).mappings())


async def _shown(
    conn: AsyncConnection, door: FrontDoor, rows: list[Any], now: datetime, *, part_of: str | None
) -> list[dict[str, Any]]:
    """The requests as Open311 shows them; to one organisation's caller (`part_of`), only its
    own part's agency and words, as GET /v1/enquiries/{reference} shows it (Audience)."""
    ids = [row["id"] for row in rows]
    agencies = await _agencies(conn, door, ids, part_of=part_of)
    photos = await _first_photos(conn, ids)
    notes = await _latest_notes(conn, ids, part_of=part_of)
    return [
        _request(door, row, agencies.get(row["id"], []), photos.get(row["id"]), notes, now)
        for row in rows
    ]


async def _agencies(
    conn: AsyncConnection, door: FrontDoor, ids: list[uuid.UUID], *, part_of: str | None
) -> dict[uuid.UUID, list[str]]:
    if not ids:
        return {}
    own = [] if part_of is None else [d.organisation_id == part_of]
    found = await conn.execute(
        select(d.enquiry_id, d.organisation_id)
        .where(d.enquiry_id.in_(ids), *own)
        .order_by(d.created_at, d.id)
    )
    names: dict[uuid.UUID, list[str]] = {}
    organisations = door.intake.catalogue.organisations
    for enquiry_id, organisation_id in found:
        organisation = organisations.get(organisation_id)
        name = organisation.name if organisation else organisation_id
        listed = names.setdefault(enquiry_id, [])
        if name not in listed:
            listed.append(name)
    return names


async def _first_photos(conn: AsyncConnection, ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    if not ids:
        return {}
    found = await conn.execute(
        select(a.enquiry_id, a.id).where(a.enquiry_id.in_(ids)).order_by(a.created_at, a.id)
    )
    first: dict[uuid.UUID, uuid.UUID] = {}
    for enquiry_id, attachment_id in found:
        first.setdefault(enquiry_id, attachment_id)
    return first


async def _latest_notes(
    conn: AsyncConnection, ids: list[uuid.UUID], *, part_of: str | None
) -> dict[uuid.UUID, str]:
    """Each enquiry's latest word on its status, as its citizen is shown it."""
    if not ids:
        return {}
    found = await conn.execute(
        select(ev.enquiry_id, ev.type, ev.organisation_id, ev.detail)
        .where(ev.enquiry_id.in_(ids), ev.type.in_(_STATUS_EVENTS), *_own_events(part_of))
        .order_by(ev.created_at, ev.id)
    )
    audience = Audience(staff=False, organisation_id=part_of)
    notes: dict[uuid.UUID, str] = {}
    for enquiry_id, event_type, organisation_id, detail in found:
        notes[enquiry_id] = audience.detail(event_type, organisation_id, detail) or ""
    return notes


def _own_events(part_of: str | None) -> list[ColumnElement[bool]]:
    """One organisation's caller: the events of its own part and of the whole enquiry, never
    another organisation's (app.intake.reading.Audience.sees)."""
    if part_of is None:
        return []
    return [or_(ev.organisation_id.is_(None), ev.organisation_id == part_of)]


def _request(
    door: FrontDoor,
    row: Any,
    agencies: list[str],
    photo: uuid.UUID | None,
    notes: dict[uuid.UUID, str],
    now: datetime,
) -> dict[str, Any]:
    location = row["location"] or {}
    place = row["place"] or {}
    service = door.intake.catalogue.services.get(row["service_code"])
    media = (
        signed_url(door.settings, door.intake.sealer, photo, now=now) if photo is not None else None
    )
    return {
        "service_request_id": references.display(row["reference"]),
        "status": status_word(row["status"]),
        "status_notes": notes.get(row["id"], ""),
        "service_name": service.name if service else row["service_code"],
        "service_code": row["service_code"],
        "description": None if row["anonymised_at"] else row["description"],
        "agency_responsible": ", ".join(agencies),
        "service_notice": " ".join(x.get("message", "") for x in row["advice"] or []),
        "requested_datetime": row["created_at"],
        "updated_datetime": row["updated_at"],
        "expected_datetime": None,
        "address": location.get("address"),
        "address_id": location.get("uprn"),
        "zipcode": location.get("postcode") or place.get("postcode"),
        "lat": location.get("lat", place.get("latitude")),
        "long": location.get("lon", place.get("longitude")),
        "media_url": media,
    }


async def get_request(door: FrontDoor, *, caller: Caller, reference: str) -> list[dict[str, Any]]:
    """GET requests/{id}: the one request, in an array; 404 if it is not there or not theirs."""
    try:
        canonical = references.parse(reference)
    except InvalidReference:
        raise NotFound(f"There is no service request '{reference[:32]}'.") from None
    found = await list_requests(door, caller=caller, query=RequestQuery(ids=(canonical,)))
    if not found:
        raise NotFound(f"There is no service request '{references.display(canonical)}'.")
    return found


async def by_token(door: FrontDoor, *, caller: Caller, token: str) -> list[dict[str, Any]]:
    """GET tokens/{token}: the request a token stands for, if this key may see it."""
    try:
        enquiry_id = uuid.UUID(token)
    except ValueError:
        raise NotFound(f"There is no token '{token[:64]}'.") from None
    async with reading(door.intake.engine) as conn:
        reference = await conn.scalar(
            select(e.reference).where(e.id == enquiry_id, *_visible(caller))
        )
    if reference is None:
        raise NotFound(f"There is no token '{token[:64]}'.")
    return [{"token": str(enquiry_id), "service_request_id": references.display(reference)}]


async def list_updates(
    door: FrontDoor,
    *,
    caller: Caller,
    start: datetime | None,
    end: datetime | None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """mySociety's GET servicerequestupdates: each status change of the requests this key
    may see, oldest first, in the window (the last 90 days without one)."""
    now = now or utcnow()
    start, end = _window(door.settings, RequestQuery(start=start, end=end), now)
    query = (
        select(ev.id, ev.type, ev.status, ev.organisation_id, ev.detail, ev.created_at, e.reference)
        .join(enquiry_table, e.id == ev.enquiry_id)
        .where(
            *_visible(caller),
            *_own_events(caller.organisation_id),
            ev.type.in_(_STATUS_EVENTS),
            ev.status.is_not(None),
            ev.created_at >= start,
            ev.created_at <= end,
        )
        .order_by(ev.created_at, ev.id)
        .limit(door.settings.open311.max_requests)
    )
    async with reading(door.intake.engine) as conn:
        rows = list((await conn.execute(query)).mappings())
    audience = Audience(staff=False, organisation_id=caller.organisation_id)
    return [
        {
            "update_id": str(row["id"]),
            "service_request_id": references.display(row["reference"]),
            "status": FIXMYSTREET_WORDS.get(row["status"], "open"),
            "updated_datetime": row["created_at"],
            "description": audience.detail(row["type"], row["organisation_id"], row["detail"])
            or "",
            "media_url": "",
            "external_status_code": row["status"],
        }
        for row in rows
    ]


async def post_update(door: FrontDoor, *, caller: Caller, pairs: Pairs) -> list[dict[str, Any]]:
    """mySociety's POST servicerequestupdates: what the citizen added, kept and carried to
    the back-offices by the conversation service; the client's update_id is kept once."""
    check_jurisdiction(door.settings, pairs)
    values = single_values(pairs, (*SINGLE, *_UPDATE_FIELDS))
    reference = values.get("service_request_id")
    if reference is None:
        raise ValidationFailed(
            "service_request_id is required.",
            [FieldError("required", parameter="service_request_id")],
        )
    try:
        canonical = references.parse(reference)
    except InvalidReference:
        raise NotFound(f"There is no service request '{reference[:32]}'.") from None
    text = values.get("description")
    if text is not None and len(text) > 4000:
        raise ValidationFailed(
            "description is too long.",
            [FieldError("should have at most 4000 characters", parameter="description")],
        )
    message_id = _message_id(caller, canonical, values.get("update_id"))
    if message_id is not None and await _kept(door, message_id):
        return [{"update_id": str(message_id)}]
    photo = None
    if "media_url" in values:
        photo = await fetch_media(
            door.http, values["media_url"], settings=door.settings.attachments
        )
    if text is None and photo is None:
        raise ValidationFailed(
            "Send the update as description, or media_url, or both.",
            [FieldError("required", parameter="description")],
        )
    return [{"update_id": str(await _add(door, caller, canonical, text, photo, message_id))}]


_UPDATE_FIELDS = ("service_request_id", "update_id", "updated_datetime", "status")


def _message_id(caller: Caller, reference: str, update_id: str | None) -> uuid.UUID | None:
    if update_id is None:
        return None
    return uuid.uuid5(_CLIENT_UPDATES, f"{caller.client_id}:{reference}:{update_id[:200]}")


async def _kept(door: FrontDoor, message_id: uuid.UUID) -> bool:
    async with reading(door.intake.engine) as conn:
        return await conn.scalar(select(m.id).where(m.id == message_id)) is not None


async def _add(
    door: FrontDoor,
    caller: Caller,
    reference: str,
    text: str | None,
    photo: Prepared | None,
    message_id: uuid.UUID | None,
) -> uuid.UUID:
    try:
        said = await add_information(
            door.conversation,
            reference=reference,
            speaker=Speaker(caller=caller),
            text=text,
            files=[photo] if photo is not None else [],
            message_id=message_id,
        )
    except IntegrityError:
        # The same update sent twice at once: the other copy was kept.
        if message_id is not None and await _kept(door, message_id):
            return message_id
        raise
    return said.id
