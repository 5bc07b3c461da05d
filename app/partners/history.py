"""A subscription's delivery history: read (each delivery with its attempts), sent again (one,
or every one missed in a window), and pruned by the retention job.

A delivery sent again keeps its row, so its `webhook-id` (made from the event) and its earlier
attempts stay; its attempt budget starts afresh. Recovery also makes the rows a subscription
never got: events it would have been sent had it been active then (made while it was disabled).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.clients.service import Caller
from app.core import audit, outbox
from app.core.audit import Actor
from app.core.db import reading, writing
from app.core.errors import FieldError, NotFound, StateConflict, ValidationFailed
from app.core.models import (
    WebhookAttempt,
    WebhookSubscription,
    event_table,
    fetch_all,
    utcnow,
    webhook_attempt_table,
    webhook_delivery_table,
    webhook_subscription_table,
)
from app.core.paging import newest_first, page
from app.core.settings import WebhookSettings
from app.core.vocabulary import AuditAction, EventType, OutboxState, SubscriptionState
from app.partners.schemas import (
    RecoverIn,
    RecoverOut,
    WebhookAttemptOut,
    WebhookDeliveryDetail,
    WebhookDeliveryList,
    WebhookDeliveryOut,
)
from app.partners.sender import events_after, insert_deliveries, missing_rows, subscriber
from app.partners.subscriptions import _visible_one

log = structlog.get_logger()
s = webhook_subscription_table.c
w = webhook_delivery_table.c
a = webhook_attempt_table.c
v = event_table.c
# Not sent, and no longer waiting to be: what recovery sends again.
_NOT_DELIVERED = (OutboxState.dead, OutboxState.cancelled)
_TICK = timedelta(microseconds=1)


async def list_deliveries(
    *,
    engine: AsyncEngine,
    caller: Caller,
    subscription_id: uuid.UUID,
    state: OutboxState | None,
    event_type: EventType | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> WebhookDeliveryList:
    """A subscription's deliveries, newest first; 404 if the caller may not see it."""
    query = select(webhook_delivery_table).where(w.subscription_id == subscription_id)
    if state is not None:
        query = query.where(w.state == state)
    if event_type is not None:
        query = query.where(w.event_type == event_type)
    if since is not None:
        query = query.where(w.created_at >= since)
    query = newest_first(query, w.created_at, w.id, cursor=cursor, limit=limit)
    async with reading(engine, one_snapshot=True) as conn:
        await _visible_one(conn, caller, subscription_id)
        rows, next_cursor = page(
            list((await conn.execute(query)).mappings()), limit=limit, at="created_at"
        )
    items = [WebhookDeliveryOut.model_validate(dict(row)) for row in rows]
    return WebhookDeliveryList(items=items, next_cursor=next_cursor)


async def read_delivery(
    *, engine: AsyncEngine, caller: Caller, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDeliveryDetail:
    """One delivery with every attempt, newest first."""
    async with reading(engine, one_snapshot=True) as conn:
        await _visible_one(conn, caller, subscription_id)
        delivery = await _delivery(conn, subscription_id, delivery_id)
        attempts = await fetch_all(
            conn,
            WebhookAttempt,
            select(WebhookAttempt).where(a.delivery_id == delivery_id).order_by(a.number.desc()),
        )
    return WebhookDeliveryDetail(
        **delivery,
        attempt_log=[WebhookAttemptOut.model_validate(x, from_attributes=True) for x in attempts],
    )


async def _delivery(
    conn: AsyncConnection, subscription_id: uuid.UUID, delivery_id: uuid.UUID
) -> dict[str, Any]:
    row = (
        (
            await conn.execute(
                select(webhook_delivery_table).where(
                    w.id == delivery_id, w.subscription_id == subscription_id
                )
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound("There is no such delivery of this subscription.")
    return dict(row)


def _again(now: datetime) -> dict[str, Any]:
    """The columns of a delivery queued again: due now, a fresh attempt budget, no result."""
    return {**outbox.redriven(now=now), "last_status": None, "delivered_at": None}


async def _active(
    conn: AsyncConnection, caller: Caller, subscription_id: uuid.UUID
) -> WebhookSubscription:
    subscription = await _visible_one(conn, caller, subscription_id)
    if subscription.state != SubscriptionState.active:
        raise StateConflict("This subscription is disabled: enable it first.")
    return subscription


async def resend(
    *,
    engine: AsyncEngine,
    caller: Caller,
    subscription_id: uuid.UUID,
    delivery_id: uuid.UUID,
    now: datetime | None = None,
) -> WebhookDeliveryOut:
    """Queue one delivery again, due now, under its same webhook-id; 409 if the subscription
    is disabled or the delivery is being sent at this moment."""
    now = now or utcnow()
    async with writing(engine) as conn:
        await _active(conn, caller, subscription_id)
        before = await _delivery(conn, subscription_id, delivery_id)
        queued = await conn.execute(
            update(webhook_delivery_table)
            .where(w.id == delivery_id, w.state != OutboxState.delivering)
            .values(**_again(now))
        )
        if not queued.rowcount:
            raise StateConflict("This delivery is being sent now.")
        await audit.record(
            conn,
            actor=Actor.of(caller),
            action=AuditAction.webhook_resent,
            subject=str(delivery_id),
            detail={
                "subscription_id": str(subscription_id),
                "event_type": before["event_type"],
                "state": before["state"],
            },
            at=now,
        )
        fresh = await _delivery(conn, subscription_id, delivery_id)
    log.info("webhook.resent", delivery=str(delivery_id), was=before["state"])
    return WebhookDeliveryOut.model_validate(fresh)


def check_window(
    request: RecoverIn, settings: WebhookSettings, now: datetime
) -> tuple[datetime, datetime]:
    """The window to recover, [since, until), or 422 naming what is wrong with it."""
    since, until = request.since, min(request.until or now, now)
    problem: tuple[str, str] | None = None
    if since >= now:
        problem = ("must be in the past", "#/since")
    elif since >= until:
        problem = ("must be before until", "#/until")
    elif until - since > timedelta(days=settings.recover_max_days):
        problem = (f"the window may be at most {settings.recover_max_days:g} days", "#/since")
    elif since < now - timedelta(days=settings.delivered_retention_days):
        days = settings.delivered_retention_days
        problem = (f"deliveries are kept {days:g} days: since must be within them", "#/since")
    if problem is not None:
        raise ValidationFailed(
            "That window cannot be recovered.", [FieldError(problem[0], pointer=problem[1])]
        )
    return since, until


async def recover(
    *,
    engine: AsyncEngine,
    caller: Caller,
    subscription_id: uuid.UUID,
    request: RecoverIn,
    settings: WebhookSettings,
    now: datetime | None = None,
) -> RecoverOut:
    """Queue again every delivery of events made in the window that was not delivered, and
    make those the subscription should have had but never got; all in one transaction."""
    now = now or utcnow()
    async with writing(engine) as conn:
        # Whose it is first: another client's subscription is 404 whatever the window.
        subscription = await _active(conn, caller, subscription_id)
        since, until = check_window(request, settings, now)
        failed = _in_window(subscription_id, since, until).where(w.state.in_(_NOT_DELIVERED))
        requeued = await conn.execute(
            update(webhook_delivery_table)
            .where(w.id.in_(failed.scalar_subquery()))
            .values(**_again(now))
        )
        missed = await _make_missing(conn, subscription, since, until)
        answer = RecoverOut(
            queued=requeued.rowcount + missed, requeued=requeued.rowcount, missed=missed
        )
        await audit.record(
            conn,
            actor=Actor.of(caller),
            action=AuditAction.webhook_recovered,
            subject=str(subscription_id),
            detail={"since": since.isoformat(), "until": until.isoformat(), **answer.model_dump()},
            at=now,
        )
    log.info("webhook.recovered", subscription=str(subscription_id), **answer.model_dump())
    return answer


def _in_window(subscription_id: uuid.UUID, since: datetime, until: datetime) -> Select[Any]:
    """The ids of a subscription's deliveries of events made in [since, until)."""
    return (
        select(w.id)
        .join(event_table, v.id == w.event_id)
        .where(w.subscription_id == subscription_id, v.created_at >= since, v.created_at < until)
    )


async def _make_missing(
    conn: AsyncConnection, subscription: WebhookSubscription, since: datetime, until: datetime
) -> int:
    """Rows for the window's events the subscription should have had and has none of."""
    one = [subscriber(subscription)]
    made, after = 0, None
    while events := await events_after(conn, since - _TICK, after, until):
        rows = await missing_rows(conn, events, one, lambda sub, *args: sub.should_have(*args))
        if rows:
            made += await insert_deliveries(conn, rows)
        after = (events[-1]["created_at"], events[-1]["id"])
    return made


@dataclass(frozen=True)
class Pruned:
    delivered: int
    given_up: int
    expired_secrets: int


async def prune(*, engine: AsyncEngine, settings: WebhookSettings, now: datetime) -> Pruned:
    """Delete deliveries (their attempts go with them) delivered more than
    delivered_retention_days ago, or given up or called off more than dead_retention_days
    ago; forget previous secrets whose overlap is over."""
    delivered_before = now - timedelta(days=settings.delivered_retention_days)
    dead_before = now - timedelta(days=settings.dead_retention_days)
    async with writing(engine) as conn:
        delivered = await conn.execute(
            delete(webhook_delivery_table).where(
                w.state == OutboxState.delivered, w.delivered_at < delivered_before
            )
        )
        given_up = await conn.execute(
            delete(webhook_delivery_table).where(
                w.state.in_(_NOT_DELIVERED), w.updated_at < dead_before
            )
        )
        expired = await conn.execute(
            update(webhook_subscription_table)
            .where(s.previous_secret_until < now)
            .values(previous_secret_sealed=None, previous_secret_until=None)
        )
    pruned = Pruned(delivered.rowcount, given_up.rowcount, expired.rowcount)
    if pruned.delivered or pruned.given_up or pruned.expired_secrets:
        log.info(
            "webhook.pruned",
            delivered=pruned.delivered,
            given_up=pruned.given_up,
            expired_secrets=pruned.expired_secrets,
        )
    return pruned
