"""Status coming back: each update an organisation reports lands in the timeline exactly once.

Updates arrive pushed (POST /v1/inbound/...), polled (app.updates.poller) or from an
organisation's own staff (app.casework.parts); all end here.
An update is matched to our dispatch by the back-office's reference (or ours), recorded under a
unique (organisation, update id), mapped onto our vocabulary, and the enquiry's status follows
the organisation least far along. `not_our_responsibility` sends the enquiry to the triage desk.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.base import Adapter, RemoteUpdate
from app.catalogue.catalogue import Catalogue, Organisation
from app.catalogue.status import FINAL, PROGRESS, Status, canonical
from app.core import reference as references
from app.core.audit import Actor
from app.core.db import is_postgres, wake_dispatchers, writing
from app.core.errors import InvalidReference, NotFound
from app.core.models import (
    Dispatch,
    Enquiry,
    dispatch_table,
    enquiry_table,
    event_table,
    fetch_one,
    status_update_table,
    utcnow,
)
from app.core.outbox import new_row
from app.core.vocabulary import Closure, EventType, OutboxState, ReceivedVia

log = structlog.get_logger()
d = dispatch_table.c
e = enquiry_table.c


class UnknownCase(NotFound):
    """No dispatch of ours matches the reference an organisation gave."""


@dataclass(frozen=True)
class Recorded:
    """What became of one reported update."""

    new: bool  # False: seen before (pushed and polled, or sent twice), nothing changed
    status: Status | None  # None: a word we do not know; kept in the timeline all the same


def vocabulary(organisation: Organisation, adapter: Adapter | None) -> list[Mapping[str, Status]]:
    """The organisation's own words first, then its adapter's protocol words."""
    words: list[Mapping[str, Status]] = [{k.lower(): v for k, v in organisation.status_map.items()}]
    if adapter is not None:
        words.append(adapter.status_words)
    return words


async def record_update(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    organisation: Organisation,
    words: Sequence[Mapping[str, Status]],
    remote: RemoteUpdate,
    via: ReceivedVia,
    reference: str | None = None,
) -> Recorded:
    """Record one update once; raise UnknownCase when it matches none of our dispatches."""
    async with writing(engine) as conn:
        dispatch = await _matching_dispatch(
            conn, organisation.id, remote.remote_reference, reference
        )
        if dispatch is None:
            raise UnknownCase(
                f"{organisation.name} has no enquiry from us with the reference "
                f"{remote.remote_reference or reference}."
            )
        recorded = await record_on(
            conn,
            catalogue=catalogue,
            organisation=organisation,
            dispatch=dispatch,
            words=words,
            remote=remote,
            via=via,
        )
    if recorded.new:
        log.info(
            "status.recorded",
            organisation=organisation.id,
            dispatch=str(dispatch.id),
            status=recorded.status,
            via=via,
        )
    return recorded


async def record_on(
    conn: AsyncConnection,
    *,
    catalogue: Catalogue,
    organisation: Organisation,
    dispatch: Dispatch,
    words: Sequence[Mapping[str, Status]],
    remote: RemoteUpdate,
    via: ReceivedVia,
    actor: Actor | None = None,
    now: datetime | None = None,
) -> Recorded:
    """Record one update of this dispatch once, in the caller's transaction: every update,
    pushed, polled or a person's (`actor`, named on the timeline; None for a system's), lands
    here."""
    status = echo_of_withdrawal(dispatch, canonical(remote.status, *words))
    now = now or utcnow()
    if not await _insert_once(conn, organisation.id, dispatch, remote, status, via, now):
        return Recorded(new=False, status=status)
    newest = dispatch.remote_status_at is None or remote.updated_at >= dispatch.remote_status_at
    if status is not None and newest:
        await conn.execute(
            update(dispatch_table)
            .where(d.id == dispatch.id)
            .values(remote_status=status, remote_status_at=remote.updated_at, updated_at=now)
        )
    await _timeline(conn, organisation, dispatch, remote, status, now, actor)
    if status is Status.not_our_responsibility and newest:
        await _send_to_triage(conn, catalogue, organisation, dispatch, remote, now)
    await follow_enquiry_status(conn, dispatch.enquiry_id, now)
    return Recorded(new=True, status=status)


def echo_of_withdrawal(dispatch: Dispatch, status: Status | None) -> Status | None:
    """A part the citizen withdrew that the back-office then reports called off (FHIR's
    `revoked`, an Open311 `cancelled`) is telling us our own withdrawal: it stays withdrawn."""
    withdrawn = Status.withdrawn in (dispatch.closure, dispatch.remote_status)
    return Status.withdrawn if withdrawn and status is Status.cancelled else status


async def _matching_dispatch(
    conn: AsyncConnection, organisation_id: str, remote_reference: str, reference: str | None
) -> Dispatch | None:
    ours = select(Dispatch).where(d.organisation_id == organisation_id)
    if remote_reference:
        found = await fetch_one(conn, Dispatch, ours.where(d.remote_reference == remote_reference))
        if found is not None:
            return found
    if not reference:
        return None
    try:
        canonical_reference = references.parse(reference)
    except InvalidReference:
        return None
    by_ours = ours.join(Enquiry, e.id == d.enquiry_id).where(e.reference == canonical_reference)
    return await fetch_one(conn, Dispatch, by_ours)


async def _insert_once(
    conn: AsyncConnection,
    organisation_id: str,
    dispatch: Dispatch,
    remote: RemoteUpdate,
    status: Status | None,
    via: ReceivedVia,
    now: datetime,
) -> bool:
    """Insert the update unless its (organisation, update id) is already recorded."""
    values = {
        "id": uuid.uuid4(),
        "organisation_id": organisation_id,
        "update_id": remote.update_id,
        "dispatch_id": dispatch.id,
        "enquiry_id": dispatch.enquiry_id,
        "their_status": remote.status[:64],
        "status": status,
        "description": remote.description,
        "updated_at": remote.updated_at,
        "received_via": via,
        "created_at": now,
    }
    dialect = postgresql if is_postgres(conn) else sqlite
    statement = (
        dialect.insert(status_update_table)
        .values(values)
        .on_conflict_do_nothing(index_elements=["organisation_id", "update_id"])
    )
    inserted = await conn.execute(statement)
    return bool(inserted.rowcount)


async def _timeline(
    conn: AsyncConnection,
    organisation: Organisation,
    dispatch: Dispatch,
    remote: RemoteUpdate,
    status: Status | None,
    now: datetime,
    actor: Actor | None,
) -> None:
    said = f"{organisation.name}: {remote.status}"
    if remote.description:
        said += f" ({remote.description})"
    await conn.execute(
        event_table.insert(),
        {
            "id": uuid.uuid4(),
            "enquiry_id": dispatch.enquiry_id,
            "dispatch_id": dispatch.id,
            "organisation_id": organisation.id,
            "type": EventType.status_updated,
            "status": status,
            "detail": said,
            "created_at": now,
            **(actor.on_event() if actor else {}),
        },
    )


async def _send_to_triage(
    conn: AsyncConnection,
    catalogue: Catalogue,
    organisation: Organisation,
    dispatch: Dispatch,
    remote: RemoteUpdate,
    now: datetime,
) -> None:
    """The organisation says the enquiry is not theirs: a person at the desk finds who it is."""
    triage = catalogue.triage
    if organisation.id == triage.id:
        return
    why = remote.description or "no reason given"
    reason = f"{organisation.name} says it is not theirs: {why}"
    await conn.execute(
        dispatch_table.insert(),
        new_row(now=now, enquiry_id=dispatch.enquiry_id, organisation_id=triage.id, reason=reason),
    )
    await conn.execute(
        event_table.insert(),
        {
            "id": uuid.uuid4(),
            "enquiry_id": dispatch.enquiry_id,
            "organisation_id": triage.id,
            "type": EventType.enquiry_rerouted,
            "detail": f"{reason}; sent to {triage.name} to find the right organisation",
            "created_at": now + timedelta(microseconds=1),
        },
    )
    await wake_dispatchers(conn)


async def follow_enquiry_status(
    conn: AsyncConnection, enquiry_id: uuid.UUID, now: datetime
) -> None:
    """The enquiry shows the part least far along, so it never looks done while work remains."""
    rows = (
        await conn.execute(
            select(d.state, d.remote_status, d.closure).where(d.enquiry_id == enquiry_id)
        )
    ).all()
    parts = [part_status(state, remote, closure) for state, remote, closure in rows]
    # A part handed on (to triage, or by triage) is over; the parts it went to carry it now.
    active = [p for p in parts if p is not Status.not_our_responsibility] or parts
    status = min(active, key=lambda s: PROGRESS[s])
    if status in FINAL and len(set(active)) > 1:
        status = Status.closed  # all finished, in different ways
    current = await conn.scalar(select(e.status).where(e.id == enquiry_id).with_for_update())
    # A withdrawn enquiry stays withdrawn: what its organisations say later stays on their parts.
    if current in (status, Status.withdrawn):
        return
    closed_at = now if status in FINAL else None
    await conn.execute(
        update(enquiry_table)
        .where(e.id == enquiry_id)
        .values(status=status, updated_at=now, closed_at=closed_at)
    )
    await conn.execute(
        event_table.insert(),
        {
            "id": uuid.uuid4(),
            "enquiry_id": enquiry_id,
            "type": EventType.enquiry_status(status),
            "status": status,
            "detail": f"the enquiry is now {status.replace('_', ' ')}",
            "created_at": now + timedelta(microseconds=2),
        },
    )


# A triage part closed at the desk: handed on (not its to do, like "not ours"), resolved at
# first contact, or outside every partner's remit (closed, with the signposting given).
_CLOSURE_STATUS: Mapping[str, Status] = {
    Closure.handed_on: Status.not_our_responsibility,
    Closure.first_contact: Status.resolved,
    Closure.outside_remit: Status.closed,
    Closure.withdrawn: Status.withdrawn,
}


def part_status(state: str, remote_status: str | None, closure: str | None = None) -> Status:
    """Where one organisation's part has got to, from its dispatch row."""
    if closure is not None:
        return _CLOSURE_STATUS[closure]
    if state == OutboxState.dead:
        return Status.failed
    if state == OutboxState.cancelled:
        return Status.cancelled
    if state == OutboxState.handled:
        return Status.closed  # given up here, seen to outside the gateway
    if state != OutboxState.delivered:
        return Status.routed
    return Status(remote_status) if remote_status else Status.dispatched
