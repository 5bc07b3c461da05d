"""The partner event feed: timeline events become signed webhook deliveries.

Two steps, both in the worker, neither on the intake path:

- **feed**: new rows of the `event` table are matched against each active subscription and a
  `webhook_delivery` row is inserted per match. Each scan re-reads a window before the newest
  event already fed (an event committed late with an earlier time is still found); the unique
  (subscription, event) pair makes a re-scan, or two workers scanning at once, add nothing twice.
- **send**: due deliveries are claimed with a lease (as the dispatcher claims dispatches;
  FOR UPDATE SKIP LOCKED on PostgreSQL), POSTed through the shared guarded client and signed
  per Standard Webhooks, with the same `webhook-id` on every attempt. 2xx delivers; 410 disables
  the subscription; 408, 429, 5xx and transport errors are retried on the schedule, honouring
  Retry-After; any other answer makes the delivery dead.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from standardwebhooks import Webhook

from app.adapters.base import describe_transport_error, retry_after_seconds
from app.core.crypto import SealedDataUnreadable, Sealer
from app.core.db import is_postgres, reading, writing
from app.core.models import (
    dispatch_table,
    enquiry_table,
    event_table,
    utcnow,
    webhook_delivery_table,
    webhook_subscription_table,
)
from app.core.settings import WebhookSettings
from app.core.supervisor import beat
from app.delivery.workpool import WorkPool, retry_delay
from app.intake.reading import shown_detail
from app.intake.reference import display
from app.partners.subscriptions import wants

log = structlog.get_logger()
s = webhook_subscription_table.c
w = webhook_delivery_table.c
v = event_table.c
FEED_PAGE = 500
_RETRY_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class _Subscriber:
    id: uuid.UUID
    client_id: str
    events: list[str]
    organisation_id: str | None
    all_enquiries: bool
    created_at: datetime

    def takes(self, event: Any, routed_to: set[str], submitted_by: str | None) -> bool:
        """Whether this subscription is sent the event."""
        if event["created_at"] < self.created_at or not wants(self.events, event["type"]):
            return False
        if self.organisation_id is not None:
            # About an enquiry routed to it: the enquiry as a whole (no organisation named), or
            # its own part in it (a delivery, a status update, an erasure request), never
            # another organisation's, whatever the event's type.
            own = event["organisation_id"] in (None, self.organisation_id)
            return self.organisation_id in routed_to and own
        return self.all_enquiries or submitted_by == self.client_id


async def feed(engine: AsyncEngine, settings: WebhookSettings) -> int:
    """Turn events not yet fed into deliveries for each matching subscription; how many."""
    async with reading(engine) as conn:
        rows = await conn.execute(select(webhook_subscription_table).where(s.state == "active"))
        subscriptions = [
            (row["fed_until"], _Subscriber(**{k: row[k] for k in _SUBSCRIBER_FIELDS}))
            for row in rows.mappings()
        ]
    if not subscriptions:
        return 0
    since = min(fed for fed, _ in subscriptions) - timedelta(seconds=settings.overlap_seconds)
    subscribers = [subscriber for _, subscriber in subscriptions]
    made, after, newest = 0, None, None
    while True:
        async with reading(engine) as conn:
            events = await _events_after(conn, since, after)
            made += await _deliveries_for(engine, conn, events, subscribers)
        if events:
            newest = after = (events[-1]["created_at"], events[-1]["id"])
        if len(events) < FEED_PAGE:
            break
    if newest is not None:
        await _advance(engine, [subscriber.id for subscriber in subscribers], newest[0])
    return made


_SUBSCRIBER_FIELDS = (
    "id",
    "client_id",
    "events",
    "organisation_id",
    "all_enquiries",
    "created_at",
)


async def _events_after(
    conn: AsyncConnection, since: datetime, after: tuple[datetime, uuid.UUID] | None
) -> list[Any]:
    query = (
        select(v.id, v.enquiry_id, v.type, v.organisation_id, v.created_at)
        .where(v.created_at > since)
        .order_by(v.created_at, v.id)
        .limit(FEED_PAGE)
    )
    if after is not None:
        query = query.where(tuple_(v.created_at, v.id) > tuple_(*after))
    return list((await conn.execute(query)).mappings())


async def _deliveries_for(
    engine: AsyncEngine, conn: AsyncConnection, events: list[Any], subscribers: list[_Subscriber]
) -> int:
    if not events:
        return 0
    enquiry_ids = list({e["enquiry_id"] for e in events})
    d, e = dispatch_table.c, enquiry_table.c
    routed: dict[uuid.UUID, set[str]] = {}
    for enquiry_id, organisation_id in await conn.execute(
        select(d.enquiry_id, d.organisation_id).where(d.enquiry_id.in_(enquiry_ids))
    ):
        routed.setdefault(enquiry_id, set()).add(organisation_id)
    submitters: dict[uuid.UUID, str | None] = dict(
        (await conn.execute(select(e.id, e.client_id).where(e.id.in_(enquiry_ids)))).all()
    )
    present = set(
        (
            await conn.execute(
                select(w.subscription_id, w.event_id).where(
                    w.event_id.in_([event["id"] for event in events])
                )
            )
        ).all()
    )
    now = utcnow()
    rows = [
        _new_delivery(subscriber.id, event, now)
        for event in events
        for subscriber in subscribers
        if (subscriber.id, event["id"]) not in present
        and subscriber.takes(
            event, routed.get(event["enquiry_id"], set()), submitters.get(event["enquiry_id"])
        )
    ]
    if not rows:
        return 0
    async with writing(engine) as write:
        dialect = postgresql if is_postgres(write) else sqlite
        inserted = await write.execute(
            dialect.insert(webhook_delivery_table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["subscription_id", "event_id"])
        )
    return int(inserted.rowcount)


def _new_delivery(subscription_id: uuid.UUID, event: Any, now: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "subscription_id": subscription_id,
        "event_id": event["id"],
        "event_type": event["type"],
        "state": "pending",
        "attempts": 0,
        "claims": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


async def _advance(engine: AsyncEngine, fed: list[uuid.UUID], newest: datetime) -> None:
    """Move the fed subscriptions' high-water mark forward (never back); one made during the
    scan keeps its own, so the next scan reads everything since it was made."""
    async with writing(engine) as conn:
        await conn.execute(
            update(webhook_subscription_table)
            .where(s.id.in_(fed), s.fed_until < newest)
            .values(fed_until=newest)
        )


@dataclass(frozen=True)
class Claim:
    delivery_id: uuid.UUID
    subscription_id: uuid.UUID
    event_id: uuid.UUID
    claims: int


@dataclass(frozen=True)
class Outcome:
    kind: str  # delivered | retry | dead | disable
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None


class WebhookSender:
    """Feeds and sends webhook deliveries until stopped; any number may share a database."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        client: httpx.AsyncClient,
        sealer: Sealer,
        settings: WebhookSettings,
        worker_id: str,
        shutdown_grace_seconds: float = 10.0,
    ) -> None:
        self.engine = engine
        self.client = client
        self.sealer = sealer
        self.settings = settings
        self.worker_id = worker_id
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self._stopping = asyncio.Event()
        self._pool = WorkPool(concurrency=settings.concurrency, name="webhooks")

    def wake(self) -> None:
        self._pool.wake()

    async def stop(self) -> None:
        """Stop claiming; in-flight sends get the grace period, then their leases go back."""
        self._stopping.set()
        self._pool.wake()

    async def run(self) -> None:
        """Feed and send until stop() is called."""
        log.info("webhooks.started", worker=self.worker_id)
        loop = asyncio.get_running_loop()
        fed_at = -self.settings.poll_seconds
        try:
            while not self._stopping.is_set():
                try:
                    if loop.time() - fed_at >= self.settings.poll_seconds:
                        fed_at = loop.time()
                        await feed(self.engine, self.settings)
                    claimed, wanted = await self._claim_and_start()
                    if wanted == 0:
                        await self._pool.sleep(self.settings.poll_seconds)  # a send ends: woken
                    elif claimed < wanted:
                        wait = self.settings.poll_seconds - (loop.time() - fed_at)
                        await self._pool.sleep(min(wait, await self._seconds_until_due()))
                    beat()
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("webhooks.loop_failed", error=type(exc).__name__)
                    await self._pool.sleep(self.settings.poll_seconds)
        finally:
            await self._drain()
            log.info("webhooks.stopped", worker=self.worker_id)

    async def run_until_idle(self) -> None:
        """Feed, then send everything due now, waiting for each (tests and one-off runs)."""
        await feed(self.engine, self.settings)
        while claimed := await self._claim(self.settings.batch_size):
            await asyncio.gather(*(self._deliver(c) for c in claimed))

    async def _claim_and_start(self) -> tuple[int, int]:
        """Claim what there is room for and start sending it; (claimed, wanted)."""
        wanted = self._pool.room(self.settings.batch_size)
        claimed = await self._claim(wanted) if wanted > 0 else []
        for claim in claimed:
            self._pool.start(claim.delivery_id, self._deliver(claim))
        return len(claimed), wanted

    async def _seconds_until_due(self) -> float:
        async with reading(self.engine) as conn:
            next_due = await conn.scalar(
                select(func.min(w.next_attempt_at)).where(
                    w.state == "pending", w.subscription_id.in_(_active().scalar_subquery())
                )
            )
            next_expiry = await conn.scalar(
                select(func.min(w.lease_until)).where(w.state == "delivering")
            )
        due = [t for t in (next_due, next_expiry) if t is not None]
        if not due:
            return self.settings.poll_seconds
        wait: float = (min(due) - utcnow()).total_seconds()
        return max(0.0, wait + 0.01)

    async def _claim(self, limit: int) -> list[Claim]:
        now = utcnow()
        due = (
            select(w.id)
            .where(
                or_(
                    and_(w.state == "pending", w.next_attempt_at <= now),
                    and_(w.state == "delivering", w.lease_until < now),
                ),
                w.subscription_id.in_(_active().scalar_subquery()),
            )
            .order_by(w.next_attempt_at)
            .limit(limit)
        )
        if holding := self._pool.holding():
            due = due.where(w.id.not_in(holding))
        if is_postgres(self.engine):
            due = due.with_for_update(of=webhook_delivery_table, skip_locked=True)
        claim = (
            update(webhook_delivery_table)
            .where(w.id.in_(due.scalar_subquery()))
            .values(
                state="delivering",
                lease_owner=self.worker_id,
                lease_until=now + timedelta(seconds=self.settings.lease_seconds),
                claims=w.claims + 1,
                updated_at=now,
            )
            .returning(w.id, w.subscription_id, w.event_id, w.claims)
        )
        async with writing(self.engine) as conn:
            return [Claim(*row) for row in (await conn.execute(claim)).all()]

    async def _deliver(self, claim: Claim) -> None:
        # Every claim is an attempt, so one whose worker died mid-send counts too.
        attempt = claim.claims
        outcome = await self._attempt(claim)
        if outcome.kind == "retry" and attempt >= self.settings.max_attempts:
            outcome = Outcome(
                "dead", outcome.status, f"gave up after {attempt} attempts: {outcome.error}"
            )
        await self._record(claim, attempt=attempt, outcome=outcome)

    async def _attempt(self, claim: Claim) -> Outcome:
        async with reading(self.engine, one_snapshot=True) as conn:
            target = await _target(conn, claim)
            if target is None:
                return Outcome("dead", error="the subscription or its event is gone")
            url, sealed, staff = target
            body = await _body(conn, claim.event_id, staff=staff)
        try:
            secret = (self.sealer.open(sealed) or {})["secret"]
        except SealedDataUnreadable:
            return Outcome("retry", error="no configured key opens the subscription's secret")
        try:
            response = await self.client.post(
                url, content=body, headers=signed_headers(secret, claim.event_id, body)
            )
        except httpx.HTTPError as exc:
            return Outcome("retry", error=describe_transport_error(exc))
        return classify(response)

    async def _record(self, claim: Claim, *, attempt: int, outcome: Outcome) -> None:
        now = utcnow()
        async with writing(self.engine) as conn:
            updated = await conn.execute(
                update(webhook_delivery_table)
                .where(
                    w.id == claim.delivery_id,
                    w.lease_owner == self.worker_id,
                    w.claims == claim.claims,
                    w.state == "delivering",
                )
                .values(**self._values(outcome, attempt=attempt, now=now))
            )
            if updated.rowcount == 0:
                log.warning("webhook.lease_lost", delivery=str(claim.delivery_id))
                return
            if outcome.kind == "disable":
                await _disable(conn, claim.subscription_id, now)
        log.info(
            f"webhook.{outcome.kind}",
            delivery=str(claim.delivery_id),
            subscription=str(claim.subscription_id),
            attempt=attempt,
            status=outcome.status,
            error=outcome.error,
        )

    def _values(self, outcome: Outcome, *, attempt: int, now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {
            "attempts": attempt,
            "lease_owner": None,
            "lease_until": None,
            "last_status": outcome.status,
            "last_error": outcome.error,
            "updated_at": now,
        }
        if outcome.kind == "delivered":
            values.update(state="delivered", delivered_at=now)
        elif outcome.kind == "retry":
            delay = retry_delay(
                self.settings.retry_schedule,
                attempt,
                jitter=self.settings.jitter,
                retry_after=outcome.retry_after,
                max_retry_after=self.settings.max_retry_after_seconds,
            )
            values.update(state="pending", next_attempt_at=now + delay)
        else:
            values.update(state="dead")
        return values

    async def _drain(self) -> None:
        await self._pool.drain(self.shutdown_grace_seconds)
        async with writing(self.engine) as conn:
            await conn.execute(
                update(webhook_delivery_table)
                .where(w.lease_owner == self.worker_id, w.state == "delivering")
                .values(
                    state="pending",
                    lease_owner=None,
                    lease_until=None,
                    claims=w.claims - 1,
                    next_attempt_at=utcnow(),
                )
            )


def _active() -> Any:
    return select(s.id).where(s.state == "active")


def classify(response: httpx.Response) -> Outcome:
    """What an endpoint's answer means for the delivery (never reading its body)."""
    status = response.status_code
    summary = f"HTTP {status} from {response.request.url.host}"
    if 200 <= status < 300:
        return Outcome("delivered", status)
    if status == 410:
        return Outcome("disable", status, f"{summary}: the endpoint is gone")
    if status >= 500 or status in _RETRY_STATUSES:
        return Outcome("retry", status, summary, retry_after_seconds(response))
    return Outcome("dead", status, summary)


def message_id(event_id: uuid.UUID) -> str:
    """The webhook-id of an event: the same on every attempt, so receivers can dedupe."""
    return f"msg_{event_id.hex}"


def signed_headers(secret: str, event_id: uuid.UUID, body: str) -> dict[str, str]:
    """Standard Webhooks headers for this body, signed now."""
    now = utcnow()
    msg_id = message_id(event_id)
    return {
        "content-type": "application/json",
        "user-agent": "IAP-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
    }


async def _target(conn: AsyncConnection, claim: Claim) -> tuple[str, str, bool] | None:
    """The subscription's URL, sealed secret, and whether it is staff's: an admin's feed of
    every enquiry, not one organisation's nor a partner's own."""
    row = (
        await conn.execute(
            select(s.url, s.secret_sealed, s.all_enquiries, s.organisation_id).where(
                s.id == claim.subscription_id
            )
        )
    ).first()
    if row is None:
        return None
    return row.url, row.secret_sealed, bool(row.all_enquiries) and row.organisation_id is None


async def _body(conn: AsyncConnection, event_id: uuid.UUID, *, staff: bool) -> str:
    """The message: what happened, to which enquiry; never the citizen's details, and a
    back-office's errors only in a staff feed."""
    e = enquiry_table.c
    row = (
        (
            await conn.execute(
                select(event_table, e.reference, e.status.label("enquiry_status"))
                .join(enquiry_table, e.id == v.enquiry_id)
                .where(v.id == event_id)
            )
        )
        .mappings()
        .one()
    )
    message = {
        "type": row["type"],
        "timestamp": row["created_at"].isoformat(),
        "data": {
            "reference": display(row["reference"]),
            "event_id": str(row["id"]),
            "enquiry_status": row["enquiry_status"],
            "organisation_id": row["organisation_id"],
            "dispatch_id": str(row["dispatch_id"]) if row["dispatch_id"] else None,
            "status": row["status"],
            "detail": shown_detail(row["type"], row["detail"], staff=staff),
        },
    }
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


async def _disable(conn: AsyncConnection, subscription_id: uuid.UUID, now: datetime) -> None:
    """The endpoint said 410 Gone: send it nothing more."""
    reason = f"the endpoint answered 410 Gone at {now.isoformat(timespec='seconds')}"
    await conn.execute(
        update(webhook_subscription_table)
        .where(s.id == subscription_id)
        .values(state="disabled", disabled_reason=reason, updated_at=now)
    )
    await conn.execute(
        update(webhook_delivery_table)
        .where(w.subscription_id == subscription_id, w.state == "pending")
        .values(state="cancelled", last_error="the subscription was disabled", updated_at=now)
    )
    log.warning("webhook.subscription_disabled", subscription=str(subscription_id))
