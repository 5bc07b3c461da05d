"""The partner event feed: timeline events become signed webhook deliveries.

Two steps, both in the worker, neither on the intake path:

- **feed**: new rows of the `event` table are matched against each active subscription and a
  `webhook_delivery` row is inserted per match. Each scan re-reads a window before the newest
  event already fed (an event committed late with an earlier time is still found); the unique
  (subscription, event) pair makes a re-scan, or two workers scanning at once, add nothing twice.
- **send**: due deliveries are claimed with a lease (the outbox, app.core.outbox, as the
  dispatcher's are), POSTed through the shared guarded client and signed per Standard Webhooks,
  with the same `webhook-id` on every attempt. 2xx delivers; 410 disables the subscription; 408,
  429, 5xx and transport errors are retried on the schedule, honouring Retry-After; any other
  answer makes the delivery dead. Each attempt is kept (`webhook_attempt`: when, how long, the
  status, the first KiB of the answer) in the transaction that records its result; a
  subscription whose every attempt has failed for `disable_after_days` is disabled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import ColumnElement, Row, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from standardwebhooks import Webhook

from app.adapters.base import describe_transport_error, retry_after_seconds
from app.core import outbox
from app.core.audit import Actor
from app.core.crypto import SealedDataUnreadable, Sealer
from app.core.db import is_postgres, reading, writing
from app.core.models import (
    WebhookSubscription,
    dispatch_table,
    enquiry_table,
    event_table,
    fetch_one,
    utcnow,
    webhook_attempt_table,
    webhook_delivery_table,
    webhook_subscription_table,
)
from app.core.outbox import LeaseQueue, finished, new_row
from app.core.reference import display
from app.core.settings import WebhookSettings
from app.core.vocabulary import EventType, OutboxState, Outcome, SubscriptionState
from app.intake.reading import Audience
from app.partners.events import EVENT_VERSION
from app.partners.subscriptions import disable, wants

log = structlog.get_logger()
s = webhook_subscription_table.c
w = webhook_delivery_table.c
v = event_table.c
a = webhook_attempt_table.c
FEED_PAGE = 500
ANSWER_BYTES = 1024  # of an endpoint's answer, kept with the attempt
_RETRY_STATUSES = frozenset({408, 429})
_SENDER = Actor("webhook sender")


@dataclass(frozen=True)
class _Subscriber:
    id: uuid.UUID
    client_id: str
    events: list[str]
    organisation_id: str | None
    all_enquiries: bool
    created_at: datetime
    enabled_at: datetime | None

    def takes(self, event: Any, routed_to: set[str], submitted_by: str | None) -> bool:
        """Whether this subscription is sent the event."""
        since = max(self.created_at, self.enabled_at or self.created_at)
        return event["created_at"] >= since and self.should_have(event, routed_to, submitted_by)

    def should_have(self, event: Any, routed_to: set[str], submitted_by: str | None) -> bool:
        """Whether the event is this subscription's, had it been active when it happened."""
        if event["type"] == EventType.ping:
            return False  # queued for the subscription that asked for it, when it asked
        if event["created_at"] < self.created_at or not wants(self.events, event["type"]):
            return False
        if _about_a_subscription(event["type"]):
            return self._takes_subscription_event(event["data"] or {})
        if event["enquiry_id"] is None:
            return self._takes_gateway_event(event)
        if self.organisation_id is not None:
            # About an enquiry routed to it: the enquiry as a whole (no organisation named), or
            # its own part in it (a delivery, a status update, an erasure request), never
            # another organisation's, whatever the event's type: as its staff read it.
            own = Audience(staff=False, organisation_id=self.organisation_id)
            return self.organisation_id in routed_to and own.sees(event["organisation_id"])
        return self.all_enquiries or submitted_by == self.client_id

    def _takes_gateway_event(self, event: Any) -> bool:
        """An event about no one enquiry (the stuck-work summary): an organisation's
        subscription gets its own organisation's, an admin's feed of every enquiry the whole
        gateway's, and a client's feed of its own enquiries none."""
        if self.organisation_id is not None:
            return bool(event["organisation_id"] == self.organisation_id)
        return self.all_enquiries and event["organisation_id"] is None

    def _takes_subscription_event(self, data: dict[str, Any]) -> bool:
        """`webhook.disabled` and `webhook.enabled`: the same client's other subscriptions and
        admin feeds of every enquiry; never the subscription it is about."""
        if data.get("subscription_id") == str(self.id):
            return False
        admin_feed = self.all_enquiries and self.organisation_id is None
        return admin_feed or data.get("client_id") == self.client_id


async def feed(engine: AsyncEngine, settings: WebhookSettings) -> int:
    """Turn events not yet fed into deliveries for each matching subscription; how many."""
    async with reading(engine) as conn:
        rows = await conn.execute(
            select(webhook_subscription_table).where(s.state == SubscriptionState.active)
        )
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
            events = await events_after(conn, since, after)
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
    "enabled_at",
)


def subscriber(subscription: WebhookSubscription) -> _Subscriber:
    """What the feed matches events against, of one subscription."""
    return _Subscriber(**{k: getattr(subscription, k) for k in _SUBSCRIBER_FIELDS})


async def events_after(
    conn: AsyncConnection,
    since: datetime,
    after: tuple[datetime, uuid.UUID] | None,
    until: datetime | None = None,
) -> list[Any]:
    """A page of events made after `since` (and before `until`), continuing after `after`."""
    query = (
        select(v.id, v.enquiry_id, v.type, v.organisation_id, v.data, v.created_at)
        .where(v.created_at > since)
        .order_by(v.created_at, v.id)
        .limit(FEED_PAGE)
    )
    if until is not None:
        query = query.where(v.created_at < until)
    if after is not None:
        query = query.where(tuple_(v.created_at, v.id) > tuple_(*after))
    return list((await conn.execute(query)).mappings())


async def _deliveries_for(
    engine: AsyncEngine, conn: AsyncConnection, events: list[Any], subscribers: list[_Subscriber]
) -> int:
    rows = await missing_rows(conn, events, subscribers, lambda sub, *args: sub.takes(*args))
    if not rows:
        return 0
    async with writing(engine) as write:
        return await insert_deliveries(write, rows)


async def insert_deliveries(conn: AsyncConnection, rows: list[dict[str, Any]]) -> int:
    """Insert new delivery rows; one already there for its (subscription, event) is kept."""
    dialect = postgresql if is_postgres(conn) else sqlite
    inserted = await conn.execute(
        dialect.insert(webhook_delivery_table)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["subscription_id", "event_id"])
    )
    return int(inserted.rowcount)


async def missing_rows(
    conn: AsyncConnection,
    events: list[Any],
    subscribers: Sequence[_Subscriber],
    matches: Callable[[_Subscriber, Any, set[str], str | None], bool],
) -> list[dict[str, Any]]:
    """New delivery rows for each event a subscriber `matches` and has no delivery of yet."""
    if not events:
        return []
    enquiry_ids = list({e["enquiry_id"] for e in events if e["enquiry_id"] is not None})
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
    return [
        new_row(
            now=now,
            subscription_id=subscriber.id,
            event_id=event["id"],
            event_type=event["type"],
        )
        for event in events
        for subscriber in subscribers
        if (subscriber.id, event["id"]) not in present
        and matches(
            subscriber,
            event,
            routed.get(event["enquiry_id"], set()),
            submitters.get(event["enquiry_id"]),
        )
    ]


async def _advance(engine: AsyncEngine, fed: list[uuid.UUID], newest: datetime) -> None:
    """Move the fed subscriptions' high-water mark forward (never back); one made during the
    scan keeps its own, so the next scan reads everything since it was made."""
    async with writing(engine) as conn:
        await conn.execute(
            update(webhook_subscription_table)
            .where(s.id.in_(fed), s.fed_until < newest)
            .values(fed_until=newest)
        )


@dataclass(frozen=True, kw_only=True)
class Claim(outbox.Claim):
    subscription_id: uuid.UUID
    event_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class Result(outbox.Result):
    status: int | None = None  # the endpoint's HTTP status
    answer: str | None = None  # the first ANSWER_BYTES of its body, decoded
    started_at: datetime | None = None  # when the POST began (None: none was made)
    duration_ms: int = 0


class WebhookSender(LeaseQueue[Claim]):
    """Feeds and sends webhook deliveries until stopped; any number may share a database."""

    table = webhook_delivery_table
    name = "webhooks"
    claim_columns = (w.subscription_id, w.event_id)
    settings: WebhookSettings

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
        super().__init__(engine=engine, settings=settings, worker_id=worker_id)
        self.client = client
        self.sealer = sealer
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self._fed_at: float | None = None

    async def run_until_idle(self) -> None:
        """Feed, then send everything due now, waiting for each (tests and one-off runs)."""
        await feed(self.engine, self.settings)
        await super().run_until_idle()

    async def _prepare(self) -> None:
        """Feed new events every poll_seconds."""
        now = asyncio.get_running_loop().time()
        if self._fed_at is None or now - self._fed_at >= self.settings.poll_seconds:
            self._fed_at = now
            await feed(self.engine, self.settings)

    def _longest_sleep(self) -> float:
        """Until the next feed is due."""
        fed_for = asyncio.get_running_loop().time() - (self._fed_at or 0.0)
        return self.settings.poll_seconds - fed_for

    def _grace_seconds(self) -> float:
        return self.shutdown_grace_seconds

    def _waiting(self) -> list[ColumnElement[bool]]:
        return [w.subscription_id.in_(_active().scalar_subquery())]

    async def _claimable(self, now: datetime) -> list[ColumnElement[bool]]:
        return self._waiting()

    async def _claimed(self, rows: Sequence[Row[Any]], lease_until: datetime) -> list[Claim]:
        return [Claim(**row._asdict()) for row in rows]

    async def _deliver(self, claim: Claim) -> None:
        # Every claim is an attempt, so one whose worker died mid-send counts too.
        attempt = claim.claims
        outcome = await self._attempt(claim)
        if (gave_up := self._gave_up(outcome, attempt)) is not None:
            outcome = dataclasses.replace(outcome, kind=Outcome.dead, error=gave_up)
        await self._record(claim, attempt=attempt, outcome=outcome)

    async def _attempt(self, claim: Claim) -> Result:
        async with reading(self.engine, one_snapshot=True) as conn:
            target = await _target(conn, claim)
            if target is None:
                return Result(Outcome.dead, error="the subscription or its event is gone")
            url, sealed, audience = target
            body = await _body(conn, claim.event_id, audience)
        try:
            secrets = [(self.sealer.open(one) or {})["secret"] for one in sealed]
        except SealedDataUnreadable:
            return Result(Outcome.retry, error="no configured key opens the subscription's secret")
        started_at, clock = utcnow(), asyncio.get_running_loop().time
        began = clock()
        headers = signed_headers(secrets, claim.event_id, body)
        try:
            async with self.client.stream("POST", url, content=body, headers=headers) as response:
                answer = await _first_bytes(response, ANSWER_BYTES)
        except httpx.HTTPError as exc:
            outcome = Result(Outcome.retry, error=describe_transport_error(exc))
        else:
            outcome = dataclasses.replace(classify(response), answer=answer)
        took = round((clock() - began) * 1000)
        return dataclasses.replace(outcome, started_at=started_at, duration_ms=took)

    async def _record(self, claim: Claim, *, attempt: int, outcome: Result) -> None:
        now = utcnow()
        values = self._values(outcome, attempt=attempt, now=now)
        async with writing(self.engine) as conn:
            if not await self._settle(conn, claim, values):
                log.warning("webhook.lease_lost", delivery=str(claim.row_id))
                return
            await _keep_attempt(conn, claim.row_id, outcome, state=values["state"], now=now)
            if outcome.kind is Outcome.disable:
                reason = f"the endpoint answered 410 Gone at {_moment(now)}"
                await self._disable(conn, claim.subscription_id, reason, now)
            elif outcome.kind in (Outcome.retry, Outcome.dead):
                await self._disable_if_failing(conn, claim.subscription_id, now)
        log.info(
            f"webhook.{outcome.kind}",
            delivery=str(claim.row_id),
            subscription=str(claim.subscription_id),
            attempt=attempt,
            status=outcome.status,
            error=outcome.error,
        )

    async def _disable_if_failing(
        self, conn: AsyncConnection, subscription_id: uuid.UUID, now: datetime
    ) -> None:
        """Svix's rule: disabled once every attempt has failed for disable_after_days, none
        delivered since (or since it was made or last enabled)."""
        days = self.settings.disable_after_days
        cutoff = now - timedelta(days=days)
        last_ok = await conn.scalar(
            _attempts_of(subscription_id, func.max(a.started_at)).where(
                a.state == OutboxState.delivered
            )
        )
        if last_ok is not None and last_ok > cutoff:
            return
        subscription = await fetch_one(
            conn,
            WebhookSubscription,
            select(WebhookSubscription).where(
                s.id == subscription_id, s.state == SubscriptionState.active
            ),
        )
        if subscription is None:
            return
        floor = max(t for t in (last_ok, subscription.created_at, subscription.enabled_at) if t)
        failing_since = await conn.scalar(
            _attempts_of(subscription_id, func.min(a.started_at)).where(
                a.state != OutboxState.delivered, a.started_at > floor
            )
        )
        if failing_since is not None and failing_since <= cutoff:
            reason = (
                f"every attempt failed from {_moment(failing_since)} to {_moment(now)} "
                f"({days:g} days or more) with none delivered"
            )
            await self._disable(conn, subscription_id, reason, now, subscription=subscription)

    async def _disable(
        self,
        conn: AsyncConnection,
        subscription_id: uuid.UUID,
        reason: str,
        now: datetime,
        *,
        subscription: WebhookSubscription | None = None,
    ) -> None:
        subscription = subscription or await fetch_one(
            conn,
            WebhookSubscription,
            select(WebhookSubscription).where(s.id == subscription_id),
        )
        if subscription is None or subscription.state != SubscriptionState.active:
            return
        await disable(
            conn,
            subscription=subscription,
            reason=reason,
            actor=_SENDER,
            now=now,
            cancel_pending=True,
        )

    def _values(self, outcome: Result, *, attempt: int, now: datetime) -> dict[str, Any]:
        max_wait = self.settings.max_retry_after_seconds
        values = finished(
            outcome.kind,
            attempt=attempt,
            now=now,
            error=outcome.error,
            retry_in=lambda: self._backoff(attempt, outcome.retry_after, max_wait),
        )
        return {**values, "last_status": outcome.status}


def _active() -> Any:
    return select(s.id).where(s.state == SubscriptionState.active)


def classify(response: httpx.Response) -> Result:
    """What an endpoint's answer means for the delivery (by its status, never its body)."""
    status = response.status_code
    summary = f"HTTP {status} from {response.request.url.host}"
    if 200 <= status < 300:
        return Result(Outcome.delivered, status=status)
    if status == 410:
        return Result(Outcome.disable, f"{summary}: the endpoint is gone", status=status)
    if status >= 500 or status in _RETRY_STATUSES:
        return Result(Outcome.retry, summary, retry_after_seconds(response), status=status)
    return Result(Outcome.dead, summary, status=status)


def message_id(event_id: uuid.UUID) -> str:
    """The webhook-id of an event: the same on every attempt, so receivers can dedupe."""
    return f"msg_{event_id.hex}"


def signature(secrets: Sequence[str], msg_id: str, at: datetime, body: str) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC>` by each secret, space-separated."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


def signed_headers(secrets: Sequence[str], event_id: uuid.UUID, body: str) -> dict[str, str]:
    """Standard Webhooks headers for this body, signed now with each secret (the new and,
    during a rotation's overlap, the old: the spec lets one header carry several)."""
    now = utcnow()
    msg_id = message_id(event_id)
    signatures = signature(secrets, msg_id, now, body)
    return {
        "content-type": "application/json",
        "user-agent": "IAP-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
    }


async def _target(conn: AsyncConnection, claim: Claim) -> tuple[str, list[str], Audience] | None:
    """The subscription's URL, sealed secrets (the previous one too while its overlap lasts),
    and who reads it: staff (an admin's feed of every enquiry, not one organisation's nor a
    partner's own) or one organisation."""
    row = (
        await conn.execute(
            select(
                s.url,
                s.secret_sealed,
                s.previous_secret_sealed,
                s.previous_secret_until,
                s.all_enquiries,
                s.organisation_id,
            ).where(s.id == claim.subscription_id)
        )
    ).first()
    if row is None:
        return None
    sealed = [row.secret_sealed]
    if row.previous_secret_sealed and row.previous_secret_until > utcnow():
        sealed.append(row.previous_secret_sealed)
    staff = bool(row.all_enquiries) and row.organisation_id is None
    return row.url, sealed, Audience(staff=staff, organisation_id=row.organisation_id)


async def _body(conn: AsyncConnection, event_id: uuid.UUID, audience: Audience) -> str:
    """The message (its models: app.partners.events): what happened, to which enquiry; never
    the citizen's details, a back-office's errors only in a staff feed, and in one
    organisation's feed nothing of another organisation's part."""
    e = enquiry_table.c
    row = (
        (
            await conn.execute(
                select(event_table, e.reference, e.status.label("enquiry_status"))
                .outerjoin(enquiry_table, e.id == v.enquiry_id)
                .where(v.id == event_id)
            )
        )
        .mappings()
        .one()
    )
    if row["enquiry_id"] is None:
        return _gateway_body(row)
    message = {
        "type": row["type"],
        "version": EVENT_VERSION,
        "timestamp": row["created_at"].isoformat(),
        "data": {
            "reference": display(row["reference"]),
            "event_id": str(row["id"]),
            "enquiry_status": row["enquiry_status"],
            "organisation_id": row["organisation_id"],
            "dispatch_id": str(row["dispatch_id"]) if row["dispatch_id"] else None,
            "status": row["status"],
            "detail": audience.detail(row["type"], row["organisation_id"], row["detail"]),
        },
    }
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _gateway_body(row: Any) -> str:
    """An event about the gateway's work as a whole: its counts, never an enquiry's details;
    or about one subscription (`webhook.*`): which, and why."""
    data: dict[str, Any] = {"event_id": str(row["id"]), "detail": row["detail"]}
    if _about_a_subscription(row["type"]):
        data["subscription_id"] = (row["data"] or {}).get("subscription_id")
    else:
        data |= {"organisation_id": row["organisation_id"], "summary": row["data"]}
    message = {
        "type": row["type"],
        "version": EVENT_VERSION,
        "timestamp": row["created_at"].isoformat(),
        "data": data,
    }
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _attempts_of(subscription_id: uuid.UUID, column: ColumnElement[Any]) -> Any:
    """A select of `column` over one subscription's attempts."""
    return (
        select(column)
        .select_from(webhook_attempt_table)
        .join(webhook_delivery_table, w.id == a.delivery_id)
        .where(w.subscription_id == subscription_id)
    )


def _about_a_subscription(event_type: str) -> bool:
    return event_type in (EventType.webhook_disabled, EventType.webhook_enabled)


def _moment(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


async def _first_bytes(response: httpx.Response, limit: int) -> str:
    """The first `limit` bytes of an answer, read no further, as text a reader and every
    database can hold (bad UTF-8 and NUL replaced)."""
    kept = b""
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= limit:
            break
    return kept[:limit].decode("utf-8", errors="replace").replace("\x00", "\ufffd")


async def _keep_attempt(
    conn: AsyncConnection, delivery_id: uuid.UUID, outcome: Result, *, state: str, now: datetime
) -> None:
    """The attempt's row, numbered on from the delivery's earlier ones (resends included)."""
    number = await conn.scalar(
        select(func.coalesce(func.max(a.number), 0) + 1).where(a.delivery_id == delivery_id)
    )
    await conn.execute(
        webhook_attempt_table.insert(),
        {
            "id": uuid.uuid4(),
            "delivery_id": delivery_id,
            "number": number,
            "started_at": outcome.started_at or now,
            "duration_ms": outcome.duration_ms,
            "status": outcome.status,
            "error": outcome.error,
            "response": outcome.answer,
            "state": state,
        },
    )
