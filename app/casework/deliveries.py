"""The dead-letter desk: deliveries given up, sent again once the cause is fixed, or closed as
seen to outside the gateway; webhook deliveries given up, sent again.

A redrive puts a dead dispatch back to `pending` with its attempts (and claims) counted from
nothing and `redriven_at` set, so its first attempt looks the case up before creating it, as a
repeat does (app.adapters.base.Delivery.is_repeat): an earlier attempt may have reached the
back-office. The row's `last_error` is cleared, since it no longer says where the delivery is;
it is kept where history lives: the attempt log, the `dispatch.dead` event and the audit entry.

A partner's staff (Caller.organisation_id) see and act on their own organisation's rows only;
any other row is answered as if it did not exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Select, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.casework.schemas_deliveries import (
    BulkRedriveOut,
    DispatchOut,
    DispatchPage,
    WebhookDeliveryPage,
    WebhookDeliveryRow,
)
from app.catalogue.catalogue import Catalogue
from app.clients.service import Caller, Scope
from app.core import audit, outbox
from app.core import reference as references
from app.core.audit import Actor
from app.core.db import is_postgres, reading, wake_dispatchers, writing
from app.core.errors import FieldError, NotFound, StateConflict, ValidationFailed
from app.core.models import (
    dispatch_table,
    enquiry_table,
    event_table,
    utcnow,
    webhook_delivery_table,
    webhook_subscription_table,
)
from app.core.paging import newest_first, page
from app.core.vocabulary import AuditAction, EventType, OutboxState
from app.intake.reading import shown_error
from app.updates.recording import follow_enquiry_status

log = structlog.get_logger()
d = dispatch_table.c
e = enquiry_table.c
s = webhook_subscription_table.c
w = webhook_delivery_table.c


@dataclass(frozen=True)
class DispatchFilter:
    state: OutboxState = OutboxState.dead
    organisation_id: str | None = None
    since: datetime | None = None  # updated at or after
    until: datetime | None = None  # updated before


def _own(caller: Caller) -> list[ColumnElement[bool]]:
    """A partner's staff: their organisation's dispatches only."""
    return [] if caller.organisation_id is None else [d.organisation_id == caller.organisation_id]


def _dispatches() -> Select[Any]:
    return select(dispatch_table, e.reference, e.service_code).join(
        enquiry_table, e.id == d.enquiry_id
    )


def _out(row: Any, catalogue: Catalogue, now: datetime) -> DispatchOut:
    organisation = catalogue.organisations.get(row["organisation_id"])
    return DispatchOut(
        id=row["id"],
        reference=references.display(row["reference"]),
        service_code=row["service_code"],
        organisation_id=row["organisation_id"],
        organisation_name=organisation.name if organisation else row["organisation_id"],
        state=row["state"],
        reason=row["reason"],
        attempts=row["attempts"],
        last_error=shown_error(row["state"], row["last_error"], staff=True),
        remote_reference=row["remote_reference"],
        redriven_at=row["redriven_at"],
        closure_note=row["closure_note"],
        closed_by=row["closed_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        age_seconds=max(0.0, (now - row["created_at"]).total_seconds()),
    )


async def list_dispatches(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    caller: Caller,
    filters: DispatchFilter,
    cursor: str | None,
    limit: int,
    now: datetime | None = None,
) -> DispatchPage:
    """Dispatches in one state, most recently changed first, keyset-paginated."""
    now = now or utcnow()
    query = _dispatches().where(d.state == filters.state, *_own(caller))
    if filters.organisation_id is not None:
        query = query.where(d.organisation_id == filters.organisation_id)
    if filters.since is not None:
        query = query.where(d.updated_at >= filters.since)
    if filters.until is not None:
        query = query.where(d.updated_at < filters.until)
    query = newest_first(query, d.updated_at, d.id, cursor=cursor, limit=limit)
    async with reading(engine) as conn:
        rows, next_cursor = page(
            list((await conn.execute(query)).mappings()), limit=limit, at="updated_at"
        )
    return DispatchPage(items=[_out(r, catalogue, now) for r in rows], next_cursor=next_cursor)


async def _one(conn: AsyncConnection, caller: Caller, dispatch_id: uuid.UUID) -> Any:
    """The dispatch row the caller may see, locked on PostgreSQL; 404 otherwise."""
    query = _dispatches().where(d.id == dispatch_id, *_own(caller))
    if is_postgres(conn):
        query = query.with_for_update(of=dispatch_table)
    row = (await conn.execute(query)).mappings().first()
    if row is None:
        raise NotFound("There is no such delivery.")
    return row


def _must_be_dead(row: Any) -> None:
    if row["state"] != OutboxState.dead:
        raise StateConflict(
            f"This delivery is {row['state']}, not dead: only a given-up delivery can be "
            "redriven or closed."
        )


async def _redrive(
    conn: AsyncConnection, row: Any, catalogue: Catalogue, actor: Actor, now: datetime
) -> None:
    """One dead dispatch back to pending, in the caller's transaction."""
    await conn.execute(
        update(dispatch_table)
        .where(d.id == row["id"], d.state == OutboxState.dead)
        .values(
            **outbox.redriven(now=now),
            redriven_at=now,
        )
    )
    organisation = catalogue.organisations.get(row["organisation_id"])
    name = organisation.name if organisation else row["organisation_id"]
    await conn.execute(
        event_table.insert(),
        {
            "id": uuid.uuid4(),
            "enquiry_id": row["enquiry_id"],
            "dispatch_id": row["id"],
            "organisation_id": row["organisation_id"],
            "type": EventType.dispatch_redriven,
            "detail": f"sent again to {name} after it was given up; its attempts start again",
            "created_at": now,
            **actor.on_event(),
        },
    )
    await follow_enquiry_status(conn, row["enquiry_id"], now)
    await audit.record(
        conn,
        actor=actor,
        action=AuditAction.dispatch_redriven,
        subject=str(row["id"]),
        detail={
            "reference": references.display(row["reference"]),
            "organisation_id": row["organisation_id"],
            "attempts": row["attempts"],
            "last_error": row["last_error"],
        },
        at=now,
    )


async def redrive_dispatch(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    caller: Caller,
    dispatch_id: uuid.UUID,
    now: datetime | None = None,
) -> DispatchOut:
    """Send one given-up delivery again; 409 unless it is dead."""
    now = now or utcnow()
    async with writing(engine) as conn:
        row = await _one(conn, caller, dispatch_id)
        _must_be_dead(row)
        await _redrive(conn, row, catalogue, Actor.of(caller), now)
        await wake_dispatchers(conn)
        fresh = await _one(conn, caller, dispatch_id)
    log.info("dispatch.redriven", dispatch=str(dispatch_id), organisation=row["organisation_id"])
    return _out(fresh, catalogue, now)


async def redrive_many(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    caller: Caller,
    organisation_id: str,
    since: datetime,
    now: datetime | None = None,
) -> BulkRedriveOut:
    """Every dispatch to one organisation given up at or after `since`, sent again in one
    transaction (all or none)."""
    now = now or utcnow()
    if organisation_id not in catalogue.organisations:
        raise ValidationFailed(
            "There is no such organisation.",
            [FieldError("not a known organisation", pointer="#/organisation")],
        )
    if not caller.may_act_for(organisation_id):
        raise ValidationFailed(
            "You may redrive your own organisation's deliveries only.",
            [FieldError(f"must be {caller.organisation_id}", pointer="#/organisation")],
        )
    query = (
        _dispatches()
        .where(
            d.organisation_id == organisation_id,
            d.state == OutboxState.dead,
            d.updated_at >= since,
        )
        .order_by(d.updated_at, d.id)
    )
    actor = Actor.of(caller)
    async with writing(engine) as conn:
        if is_postgres(conn):
            query = query.with_for_update(of=dispatch_table)
        rows = list((await conn.execute(query)).mappings())
        for row in rows:
            await _redrive(conn, row, catalogue, actor, now)
        if rows:
            await wake_dispatchers(conn)
    log.info("dispatch.redriven_many", organisation=organisation_id, count=len(rows))
    return BulkRedriveOut(count=len(rows), ids=[row["id"] for row in rows])


async def close_dispatch(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    caller: Caller,
    dispatch_id: uuid.UUID,
    note: str,
    now: datetime | None = None,
) -> DispatchOut:
    """A given-up delivery seen to outside the gateway: `handled`, with the person's note."""
    now = now or utcnow()
    actor = Actor.of(caller)
    async with writing(engine) as conn:
        row = await _one(conn, caller, dispatch_id)
        _must_be_dead(row)
        await conn.execute(
            update(dispatch_table)
            .where(d.id == dispatch_id, d.state == OutboxState.dead)
            .values(
                state=OutboxState.handled, closure_note=note, closed_by=actor.id, updated_at=now
            )
        )
        await conn.execute(
            event_table.insert(),
            {
                "id": uuid.uuid4(),
                "enquiry_id": row["enquiry_id"],
                "dispatch_id": dispatch_id,
                "organisation_id": row["organisation_id"],
                "type": EventType.dispatch_handled,
                "detail": note,
                "created_at": now,
                **actor.on_event(),
            },
        )
        await follow_enquiry_status(conn, row["enquiry_id"], now)
        await audit.record(
            conn,
            actor=actor,
            action=AuditAction.dispatch_handled,
            subject=str(dispatch_id),
            detail={
                "reference": references.display(row["reference"]),
                "organisation_id": row["organisation_id"],
                "last_error": row["last_error"],
            },
            at=now,
        )
        fresh = await _one(conn, caller, dispatch_id)
    log.info("dispatch.handled", dispatch=str(dispatch_id), organisation=row["organisation_id"])
    return _out(fresh, catalogue, now)


# --- webhook deliveries ----------------------------------------------------------------------


def _visible_subscriptions(caller: Caller) -> list[ColumnElement[bool]]:
    """admin and the contact centre's desk staff see every subscription's deliveries; a
    partner's staff those of subscriptions to their organisation; a partner's system its own."""
    if caller.organisation_id is not None:
        return [s.organisation_id == caller.organisation_id]
    if caller.allows(Scope.deliveries_manage):
        return []
    return [s.client_id == caller.client_id]


def _webhook_deliveries(caller: Caller) -> Select[Any]:
    return (
        select(webhook_delivery_table, s.organisation_id)
        .join(webhook_subscription_table, s.id == w.subscription_id)
        .where(*_visible_subscriptions(caller))
    )


def _webhook_out(row: Any, now: datetime) -> WebhookDeliveryRow:
    fields = {k: row[k] for k in WebhookDeliveryRow.model_fields if k != "age_seconds"}
    age = max(0.0, (now - row["created_at"]).total_seconds())
    return WebhookDeliveryRow(**fields, age_seconds=age)


async def list_webhook_deliveries(
    *,
    engine: AsyncEngine,
    caller: Caller,
    state: OutboxState,
    subscription_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
    now: datetime | None = None,
) -> WebhookDeliveryPage:
    """Webhook deliveries in one state, most recently changed first."""
    now = now or utcnow()
    query = _webhook_deliveries(caller).where(w.state == state)
    if subscription_id is not None:
        query = query.where(w.subscription_id == subscription_id)
    query = newest_first(query, w.updated_at, w.id, cursor=cursor, limit=limit)
    async with reading(engine) as conn:
        rows, next_cursor = page(
            list((await conn.execute(query)).mappings()), limit=limit, at="updated_at"
        )
    return WebhookDeliveryPage(items=[_webhook_out(r, now) for r in rows], next_cursor=next_cursor)


async def redrive_webhook_delivery(
    *,
    engine: AsyncEngine,
    caller: Caller,
    delivery_id: uuid.UUID,
    now: datetime | None = None,
) -> WebhookDeliveryRow:
    """Send one given-up webhook delivery again (once its subscription is active, if it was
    disabled); 409 unless it is dead."""
    now = now or utcnow()
    query = _webhook_deliveries(caller).where(w.id == delivery_id)
    async with writing(engine) as conn:
        row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise NotFound("There is no such webhook delivery.")
        _must_be_dead(row)
        await conn.execute(
            update(webhook_delivery_table)
            .where(w.id == delivery_id, w.state == OutboxState.dead)
            .values(
                **outbox.redriven(now=now),
                last_status=None,
            )
        )
        await audit.record(
            conn,
            actor=Actor.of(caller),
            action=AuditAction.webhook_redriven,
            subject=str(delivery_id),
            detail={
                "subscription_id": str(row["subscription_id"]),
                "event_type": row["event_type"],
                "last_status": row["last_status"],
                "last_error": row["last_error"],
            },
            at=now,
        )
        fresh = (await conn.execute(query)).mappings().one()
    log.info("webhook.redriven", delivery=str(delivery_id))
    return _webhook_out(fresh, now)
