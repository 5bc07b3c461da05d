"""Partners' staff move their own organisation's part of an enquiry.

An organisation with no system that reports status back (the police's email inbox, in the
shipped configuration) has its staff say where their part has got to through the API. Their
word is mapped as a pushed update's is (the organisation's `status_map`, its adapter's words,
ours) and recorded on the one path every update takes (app.updates.recording.record_on), with
the person named on the timeline and in the audit log, in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.base import Adapter, RemoteUpdate
from app.catalogue.catalogue import Catalogue, Organisation
from app.catalogue.status import FINAL, Status, canonical
from app.clients.service import Caller, Scope
from app.core import audit
from app.core import reference as references
from app.core.audit import Actor
from app.core.db import reading, writing
from app.core.errors import FieldError, NotFound, StateConflict, ValidationFailed
from app.core.models import Dispatch, Enquiry, dispatch_table, enquiry_table, fetch_all, utcnow
from app.core.paging import oldest_first, page
from app.core.types import NoNul, Strict
from app.core.vocabulary import AuditAction, Closure, OutboxState, ReceivedVia
from app.intake.reading import destinations_of
from app.intake.schemas import DestinationOut
from app.updates.recording import record_on, vocabulary

log = structlog.get_logger()
d = dispatch_table.c
e = enquiry_table.c

# The gateway's own words for where a delivery has got to: not an organisation's to report.
_DELIVERY_WORDS = frozenset({Status.received, Status.routed, Status.dispatched, Status.failed})
_REPORTABLE = [status for status in Status if status not in _DELIVERY_WORDS]


class PartUpdateIn(Strict):
    """Where an organisation's part has got to, in its own words or ours."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "acknowledged",
                    "description": "Officer assigned; we will call the reporter this week",
                }
            ]
        }
    )

    status: Annotated[NoNul, StringConstraints(min_length=1, max_length=64)] = Field(
        examples=["acknowledged"]
    )
    description: Annotated[NoNul, StringConstraints(max_length=2000)] | None = Field(
        default=None, examples=["Officer assigned; we will call the reporter this week"]
    )


class PartUpdated(BaseModel):
    reference: str = Field(examples=["K7Q-M4X-PB6"])
    part: DestinationOut
    enquiry_status: str = Field(description="The enquiry's status now (it follows its parts)")


class OpenPart(BaseModel):
    """One organisation's part still to be worked, as its own staff see it: no citizen's
    details (the enquiry's page shows them, audited)."""

    reference: str
    service_code: str
    service_name: str
    organisation_id: str
    status: Status = Field(description="Where the part has got to (dispatched: no word yet)")
    remote_reference: str | None = None
    postcode: str | None = None
    delivered_at: datetime | None = None


class OpenPartPage(BaseModel):
    items: list[OpenPart]
    next_cursor: str | None = None


def accepted_words(organisation: Organisation, adapter: Adapter | None) -> list[str]:
    """Every word this organisation's part may be moved with: its own, its adapter's, ours."""
    words = {
        word: status
        for mapping in vocabulary(organisation, adapter)
        for word, status in mapping.items()
    }
    theirs = [word for word, status in words.items() if status not in _DELIVERY_WORDS]
    return list(dict.fromkeys([*theirs, *_REPORTABLE]))


async def update_part(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    adapters: dict[str, Adapter],
    caller: Caller,
    reference: str,
    organisation_id: str,
    change: PartUpdateIn,
    now: datetime | None = None,
) -> PartUpdated:
    """Record a person's update of one organisation's part: 404 unless they may act for it
    and it exists, 409 unless it was delivered, 422 for a word nobody knows."""
    canonical_reference = references.parse(reference)
    shown = references.display(canonical_reference)
    hidden = NotFound(f"No enquiry {shown} has a part for '{organisation_id}' you may update.")
    organisation = catalogue.organisations.get(organisation_id)
    if organisation is None or not caller.may_act_for(organisation_id):
        raise hidden
    adapter = adapters.get(organisation.id)
    status = _status(change.status, organisation, adapter)
    now = now or utcnow()
    actor = Actor.of(caller)
    async with writing(engine) as conn:
        dispatch = await _part(conn, canonical_reference, organisation.id)
        if dispatch is None:
            raise hidden
        _check_open(dispatch, organisation, catalogue)
        remote = RemoteUpdate(
            remote_reference=dispatch.remote_reference or "",
            update_id=f"staff-{uuid.uuid4()}",
            status=change.status,
            description=change.description,
            updated_at=now,
        )
        await record_on(
            conn,
            catalogue=catalogue,
            organisation=organisation,
            dispatch=dispatch,
            words=vocabulary(organisation, adapter),
            remote=remote,
            via=_via(caller),
            actor=actor,
            now=now,
        )
        await audit.record(
            conn,
            actor=actor,
            action=AuditAction.part_updated,
            subject=shown,
            # The word and what it means, never the description (it may quote the citizen).
            detail={"organisation_id": organisation.id, "said": change.status, "status": status},
            at=now,
        )
        answer = await _answer(conn, dispatch.id, catalogue, shown, caller)
    log.info("part.updated", organisation=organisation.id, dispatch=str(dispatch.id), status=status)
    return answer


def _via(caller: Caller) -> ReceivedVia:
    """An organisation's own system (its key, no person behind it), else its staff."""
    if caller.person is None and caller.organisation_id is not None:
        return ReceivedVia.organisation_key
    return ReceivedVia.staff


async def open_parts(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    caller: Caller,
    organisation_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> OpenPartPage:
    """One organisation's parts delivered and not yet finished, longest delivered first: a
    partner's staff their own organisation's (naming another finds none); anyone else names
    the organisation (422 if they do not, or it is not known)."""
    wanted = caller.organisation_id or organisation_id
    if caller.organisation_id is not None and organisation_id not in (None, wanted):
        return OpenPartPage(items=[])
    if wanted is None or wanted not in catalogue.organisations:
        raise ValidationFailed(
            "Name the organisation whose parts to list.",
            [FieldError("not a known organisation", parameter="organisation_id")],
        )
    query = (
        select(dispatch_table, e.reference, e.service_code, e.location, e.place)
        .join(enquiry_table, e.id == d.enquiry_id)
        .where(
            d.organisation_id == wanted,
            d.organisation_id != catalogue.triage.id,
            d.state == OutboxState.delivered,
            d.closure.is_(None),
            or_(d.remote_status.is_(None), d.remote_status.not_in(list(FINAL))),
        )
    )
    async with reading(engine) as conn:
        found = list(
            (
                await conn.execute(
                    oldest_first(query, d.created_at, d.id, cursor=cursor, limit=limit)
                )
            ).mappings()
        )
    rows, next_cursor = page(found, limit=limit, at="created_at")
    return OpenPartPage(items=[_open_part(r, catalogue) for r in rows], next_cursor=next_cursor)


def _open_part(row: Any, catalogue: Catalogue) -> OpenPart:
    service = catalogue.services.get(row["service_code"])
    return OpenPart(
        reference=references.display(row["reference"]),
        service_code=row["service_code"],
        service_name=service.name if service else row["service_code"],
        organisation_id=row["organisation_id"],
        status=Status(row["remote_status"]) if row["remote_status"] else Status.dispatched,
        remote_reference=row["remote_reference"],
        postcode=(row["location"] or {}).get("postcode") or (row["place"] or {}).get("postcode"),
        delivered_at=row["delivered_at"],
    )


def _status(word: str, organisation: Organisation, adapter: Adapter | None) -> Status:
    """The word in our vocabulary, or a 422 that lists the words this part accepts."""
    status = canonical(word, *vocabulary(organisation, adapter))
    if status is None or status in _DELIVERY_WORDS:
        accepted = ", ".join(accepted_words(organisation, adapter))
        raise ValidationFailed(
            f"'{word}' is not a word {organisation.name}'s part can be moved with. "
            f"Use one of: {accepted}.",
            [FieldError(f"not one of: {accepted}", pointer="#/status")],
        )
    return status


async def _part(conn: AsyncConnection, reference: str, organisation_id: str) -> Dispatch | None:
    """The organisation's part of the enquiry (its latest, if it was sent more than one),
    locked so the check and the update are one step."""
    query = (
        select(Dispatch)
        .join(Enquiry, e.id == d.enquiry_id)
        .where(e.reference == reference, d.organisation_id == organisation_id)
        .order_by(d.created_at.desc(), d.id)
        .with_for_update(of=dispatch_table)
    )
    parts = await fetch_all(conn, Dispatch, query)
    delivered = [p for p in parts if p.state == OutboxState.delivered and p.closure is None]
    found = delivered or parts
    return found[0] if found else None


_NOT_YET: dict[str, str] = {
    OutboxState.pending: "it has not been delivered to {name} yet",
    OutboxState.delivering: "it is being delivered to {name} now",
    OutboxState.dead: "its delivery to {name} was given up; the contact centre can send it again",
    OutboxState.cancelled: "its delivery to {name} was called off",
    OutboxState.handled: "its delivery to {name} was given up and seen to outside the gateway",
}


def _check_open(dispatch: Dispatch, organisation: Organisation, catalogue: Catalogue) -> None:
    if organisation.id == catalogue.triage.id:
        raise StateConflict(
            "The triage desk's part is worked at the desk (GET /v1/triage), not updated."
        )
    if dispatch.closure is not None:
        raise StateConflict(f"This part was closed at the triage desk ({dispatch.closure}).")
    if dispatch.state != OutboxState.delivered:
        why = _NOT_YET.get(dispatch.state, "it is {state}").format(
            name=organisation.name, state=dispatch.state
        )
        raise StateConflict(f"This part cannot be updated: {why} (state: {dispatch.state}).")


async def _answer(
    conn: AsyncConnection, dispatch_id: uuid.UUID, catalogue: Catalogue, shown: str, caller: Caller
) -> PartUpdated:
    [dispatch] = await fetch_all(conn, Dispatch, select(Dispatch).where(d.id == dispatch_id))
    [part] = await destinations_of(
        conn, [dispatch], catalogue, staff=caller.allows(Scope.enquiries_read_all)
    )
    status = await conn.scalar(select(e.status).where(e.id == dispatch.enquiry_id))
    return PartUpdated(reference=shown, part=part, enquiry_status=str(status))


async def close_parts(
    conn: AsyncConnection,
    part_ids: Sequence[uuid.UUID],
    *,
    closure: Closure,
    by: Actor | None,
    note: str | None,
    now: datetime,
) -> None:
    """Close these parts as a person did (handed on, closed at the desk, withdrawn): the
    closure, who and why kept with each part, any claim at the triage desk let go. A part
    whose delivery is still to be made (pending, retrying) is called off with it."""
    if not part_ids:
        return
    values = {
        "closure": closure,
        "closed_by": by.id if by else None,
        "closure_note": note,
        "claimed_by": None,
        "claimed_until": None,
        "updated_at": now,
    }
    await conn.execute(update(dispatch_table).where(d.id.in_(part_ids)).values(**values))
    await conn.execute(
        update(dispatch_table)
        .where(d.id.in_(part_ids), d.state == OutboxState.pending)
        .values(state=OutboxState.cancelled, last_error=f"called off: {closure.replace('_', ' ')}")
    )
