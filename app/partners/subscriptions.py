"""Partner webhook subscriptions: made, listed, read with their recent deliveries, removed.

A subscription names an endpoint and the timeline events it wants; its Standard Webhooks
secret is shown once when it is made and stored only sealed. What is sent, and how, is in
app/partners/sender.py.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.catalogue.catalogue import Catalogue
from app.clients.service import Caller, Scope
from app.core import audit
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.db import reading, writing
from app.core.errors import FieldError, Forbidden, NotFound, StateConflict, ValidationFailed
from app.core.models import (
    WebhookDelivery,
    WebhookSubscription,
    event_table,
    fetch_all,
    fetch_one,
    utcnow,
    webhook_delivery_table,
    webhook_subscription_table,
)
from app.core.outbound import OutboundGuard, OutboundRefused
from app.core.outbox import new_row
from app.core.vocabulary import (
    ANY_EVENT,
    AuditAction,
    EventType,
    OutboxState,
    SubscriptionState,
)
from app.partners.schemas import (
    WebhookCreated,
    WebhookDeliveryOut,
    WebhookDetail,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
    WebhookRotated,
)

log = structlog.get_logger()
s = webhook_subscription_table.c
w = webhook_delivery_table.c
RECENT_DELIVERIES = 20
_SECRET_BYTES = 32


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def wants(patterns: Iterable[str], event_type: str) -> bool:
    """Whether an event type is named by any of the patterns ("*", "enquiry.*" or a type)."""
    return any(
        pattern in (ANY_EVENT, event_type)
        or (pattern.endswith(".*") and event_type.startswith(pattern[:-1]))
        for pattern in patterns
    )


async def create_subscription(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    sealer: Sealer,
    guard: OutboundGuard,
    caller: Caller,
    request: WebhookIn,
) -> WebhookCreated:
    """A new subscription; events made from now on are sent to it. Its secret is in the answer
    and nowhere else in the clear."""
    organisation_id = _subscribed_organisation(caller, request.organisation_id)
    await _check_target(guard, request.url)
    if organisation_id and organisation_id not in catalogue.organisations:
        raise ValidationFailed(
            "There is no such organisation.",
            [FieldError("not a known organisation", pointer="#/organisation_id")],
        )
    secret = new_secret()
    now = utcnow()
    sealed = sealer.seal({"secret": secret})
    assert sealed is not None  # a secret is never empty
    subscription = WebhookSubscription(
        id=uuid.uuid4(),
        client_id=caller.client_id,
        url=request.url,
        events=request.events,
        organisation_id=organisation_id,
        description=request.description,
        all_enquiries=Scope.admin in caller.scopes and caller.organisation_id is None,
        secret_sealed=sealed,
        state=SubscriptionState.active,
        fed_until=now,
        created_at=now,
        updated_at=now,
    )
    async with writing(engine) as conn:
        await conn.execute(webhook_subscription_table.insert(), subscription.model_dump())
    log.info("webhook.subscribed", subscription=str(subscription.id), client=caller.name)
    return WebhookCreated(**_out(subscription).model_dump(), secret=secret)


def _subscribed_organisation(caller: Caller, named: str | None) -> str | None:
    """The organisation whose events a new subscription gets: an organisation's caller, its
    own (named or not); admin, any it names; anyone else, none (403 for naming one)."""
    own = caller.organisation_id
    if own is not None:
        if named not in (None, own):
            raise Forbidden(
                f"This key is {own}'s: it may subscribe to {own}'s events only.",
                needs=Scope.admin.value,
            )
        return own
    if named and Scope.admin not in caller.scopes:
        # An organisation's events (its erasure requests among them) go to that
        # organisation's own key (`iap clients create --organisation`) or an operator's.
        raise Forbidden(
            "Only that organisation's own key or an admin key may subscribe an endpoint "
            "to an organisation's events.",
            needs=Scope.admin.value,
        )
    return named


async def _check_target(guard: OutboundGuard, url: str) -> None:
    try:
        await guard.check_url(url)
    except OutboundRefused as exc:
        reason = str(exc).removeprefix("outbound call refused: ")
        raise ValidationFailed(
            "The gateway may not call that URL.", [FieldError(reason, pointer="#/url")]
        ) from exc
    except OSError as exc:
        raise ValidationFailed(
            "The URL's host name could not be resolved.",
            [FieldError("host name not found", pointer="#/url")],
        ) from exc


def _visible(caller: Caller) -> ColumnElement[bool]:
    """admin sees every subscription; anyone else only its own client's."""
    if Scope.admin in caller.scopes:
        return s.id.is_not(None)
    return s.client_id == caller.client_id


def _out(subscription: WebhookSubscription) -> WebhookOut:
    """The row as listed: WebhookOut's fields read by name, so the secret stays behind."""
    return WebhookOut.model_validate(subscription, from_attributes=True)


async def list_subscriptions(*, engine: AsyncEngine, caller: Caller) -> list[WebhookOut]:
    """The subscriptions the caller may see, oldest first."""
    async with reading(engine) as conn:
        query = select(WebhookSubscription).where(_visible(caller)).order_by(s.created_at, s.id)
        subscriptions = await fetch_all(conn, WebhookSubscription, query)
    return [_out(subscription) for subscription in subscriptions]


async def read_subscription(
    *, engine: AsyncEngine, caller: Caller, subscription_id: uuid.UUID
) -> WebhookDetail:
    """One subscription with its most recent deliveries; 404 if the caller may not see it."""
    async with reading(engine, one_snapshot=True) as conn:
        subscription = await fetch_one(
            conn,
            WebhookSubscription,
            select(WebhookSubscription).where(s.id == subscription_id, _visible(caller)),
        )
        if subscription is None:
            raise NotFound("There is no such webhook subscription.")
        deliveries = await fetch_all(
            conn,
            WebhookDelivery,
            select(WebhookDelivery)
            .where(w.subscription_id == subscription_id)
            .order_by(w.created_at.desc(), w.id.desc())
            .limit(RECENT_DELIVERIES),
        )
    recent = [WebhookDeliveryOut.model_validate(d.model_dump()) for d in deliveries]
    return WebhookDetail(**_out(subscription).model_dump(), deliveries=recent)


async def delete_subscription(
    *, engine: AsyncEngine, caller: Caller, subscription_id: uuid.UUID
) -> None:
    """Stop sending to a subscription and forget it with its deliveries."""
    async with writing(engine) as conn:
        deleted = await conn.execute(
            delete(webhook_subscription_table).where(s.id == subscription_id, _visible(caller))
        )
    if not deleted.rowcount:
        raise NotFound("There is no such webhook subscription.")
    log.info("webhook.unsubscribed", subscription=str(subscription_id), client=caller.name)


async def enable_subscription(
    *, engine: AsyncEngine, caller: Caller, subscription_id: uuid.UUID
) -> WebhookOut:
    """Send to a disabled subscription again (its endpoint is back): events from now on. Those
    made while it was disabled are not sent (a flood of stale events would follow a long
    outage); app.partners.history.recover sends them when asked."""
    async with writing(engine) as conn:
        subscription = await _visible_one(conn, caller, subscription_id)
        if subscription.state != SubscriptionState.disabled:
            raise StateConflict(f"This subscription is {subscription.state}, not disabled.")
        values = await _enable(conn, caller, subscription)
    return _out(subscription.model_copy(update=values))


async def _visible_one(
    conn: AsyncConnection, caller: Caller, subscription_id: uuid.UUID
) -> WebhookSubscription:
    """The subscription, if the caller may see it; else 404, as reading it answers."""
    subscription = await fetch_one(
        conn,
        WebhookSubscription,
        select(WebhookSubscription).where(s.id == subscription_id, _visible(caller)),
    )
    if subscription is None:
        raise NotFound("There is no such webhook subscription.")
    return subscription


async def _enable(
    conn: AsyncConnection, caller: Caller, subscription: WebhookSubscription
) -> dict[str, Any]:
    """Make a disabled subscription active from now on, audited (the one place for it)."""
    now = utcnow()
    values = {
        "state": SubscriptionState.active,
        "disabled_reason": None,
        "fed_until": now,
        "enabled_at": now,
        "updated_at": now,
    }
    await conn.execute(
        update(webhook_subscription_table).where(s.id == subscription.id).values(**values)
    )
    actor = Actor.of(caller)
    await audit.record(
        conn,
        actor=actor,
        action=AuditAction.subscription_enabled,
        subject=str(subscription.id),
        detail={"disabled_reason": subscription.disabled_reason},
        at=now,
    )
    detail = "The subscription was enabled again: events from now on are sent to it."
    await _subscription_event(
        conn, EventType.webhook_enabled, subscription, detail=detail, actor=actor, now=now
    )
    log.info("webhook.subscription_enabled", subscription=str(subscription.id))
    return values


async def disable(
    conn: AsyncConnection,
    *,
    subscription: WebhookSubscription,
    reason: str,
    actor: Actor,
    now: datetime,
    cancel_pending: bool,
) -> dict[str, Any]:
    """Stop sending to a subscription, audited and told to its client's other subscriptions
    (`webhook.disabled`) in the caller's transaction: the one place for it. `cancel_pending`
    calls off what was waiting (an endpoint gone or failing), else it waits for re-enabling."""
    values = {"state": SubscriptionState.disabled, "disabled_reason": reason, "updated_at": now}
    disabled = await conn.execute(
        update(webhook_subscription_table)
        .where(s.id == subscription.id, s.state != SubscriptionState.disabled)
        .values(**values)
    )
    if not disabled.rowcount:
        return {}  # another transaction disabled it first: it said so
    if cancel_pending:
        await conn.execute(
            update(webhook_delivery_table)
            .where(w.subscription_id == subscription.id, w.state == OutboxState.pending)
            .values(
                state=OutboxState.cancelled,
                last_error="the subscription was disabled",
                updated_at=now,
            )
        )
    await audit.record(
        conn,
        actor=actor,
        action=AuditAction.subscription_disabled,
        subject=str(subscription.id),
        detail={"disabled_reason": reason},
        at=now,
    )
    await _subscription_event(
        conn, EventType.webhook_disabled, subscription, detail=reason, actor=actor, now=now
    )
    log.warning("webhook.subscription_disabled", subscription=str(subscription.id))
    return values


async def _subscription_event(
    conn: AsyncConnection,
    kind: EventType,
    subscription: WebhookSubscription,
    *,
    detail: str,
    actor: Actor,
    now: datetime,
) -> None:
    """A `webhook.*` event about one subscription: an event about no enquiry, whose `data`
    says which subscription and whose client's it is (the feed sends it by that)."""
    await conn.execute(
        event_table.insert(),
        {
            "id": uuid.uuid4(),
            "enquiry_id": None,
            "organisation_id": None,
            "type": kind,
            "detail": detail,
            "data": {"subscription_id": str(subscription.id), "client_id": subscription.client_id},
            "created_at": now,
            **actor.on_event(),
        },
    )


async def update_subscription(
    *,
    engine: AsyncEngine,
    guard: OutboundGuard,
    caller: Caller,
    subscription_id: uuid.UUID,
    patch: WebhookPatch,
) -> WebhookOut:
    """Change what is sent where (a JSON merge patch), all of it or none; enabled: true
    re-enables a disabled subscription exactly as POST …/enable does."""
    if patch.url is not None:
        await _check_target(guard, patch.url)
    now = utcnow()
    async with writing(engine) as conn:
        subscription = await _visible_one(conn, caller, subscription_id)
        values: dict[str, Any] = {}
        if patch.enabled and subscription.state == SubscriptionState.disabled:
            values |= await _enable(conn, caller, subscription)
        elif patch.enabled is False and subscription.state != SubscriptionState.disabled:
            values |= await disable(
                conn,
                subscription=subscription,
                reason=_PAUSED,
                actor=Actor.of(caller),
                now=now,
                cancel_pending=False,
            )
        if patch.url is not None:
            values["url"] = patch.url
        if patch.events is not None:
            values["events"] = patch.events
        if "description" in patch.model_fields_set:
            values["description"] = patch.description
        if values:
            values["updated_at"] = now
            await conn.execute(
                update(webhook_subscription_table).where(s.id == subscription_id).values(**values)
            )
    log.info("webhook.updated", subscription=str(subscription_id), fields=sorted(values))
    return _out(subscription.model_copy(update=values))


_PAUSED = "disabled by its client"


async def rotate_secret(
    *,
    engine: AsyncEngine,
    sealer: Sealer,
    caller: Caller,
    subscription_id: uuid.UUID,
    overlap_seconds: int,
) -> WebhookRotated:
    """A new secret, shown once; the current one keeps signing beside it for the overlap."""
    secret = new_secret()
    now = utcnow()
    async with writing(engine) as conn:
        subscription = await _visible_one(conn, caller, subscription_id)
        until = now + timedelta(seconds=overlap_seconds) if overlap_seconds else None
        values = {
            "secret_sealed": sealer.seal({"secret": secret}),
            "previous_secret_sealed": subscription.secret_sealed if until else None,
            "previous_secret_until": until,
            "updated_at": now,
        }
        await conn.execute(
            update(webhook_subscription_table).where(s.id == subscription_id).values(**values)
        )
        await audit.record(
            conn,
            actor=Actor.of(caller),
            action=AuditAction.signing_key_rotated,
            subject=str(subscription_id),
            detail={
                "overlap_seconds": overlap_seconds,
                "previous_secret_until": until.isoformat() if until else None,
            },
            at=now,
        )
    log.info("webhook.secret_rotated", subscription=str(subscription_id), overlap=overlap_seconds)
    return WebhookRotated(
        **_out(subscription).model_dump(), secret=secret, previous_secret_until=until
    )


async def send_ping(
    *, engine: AsyncEngine, caller: Caller, subscription_id: uuid.UUID
) -> WebhookDeliveryOut:
    """Queue a `ping` for this subscription alone, sent by the worker like any event."""
    now = utcnow()
    event = {
        "id": uuid.uuid4(),
        "enquiry_id": None,
        "organisation_id": None,
        "type": EventType.ping,
        "detail": "A test message: the subscription's endpoint and secret work.",
        "created_at": now,
    }
    delivery = new_row(
        now=now, subscription_id=subscription_id, event_id=event["id"], event_type=EventType.ping
    )
    async with writing(engine) as conn:
        subscription = await _visible_one(conn, caller, subscription_id)
        if subscription.state != SubscriptionState.active:
            raise StateConflict("This subscription is disabled: enable it to test it.")
        await conn.execute(event_table.insert(), event)
        await conn.execute(webhook_delivery_table.insert(), delivery)
    log.info("webhook.ping_queued", subscription=str(subscription_id))
    return WebhookDeliveryOut.model_validate(delivery)


async def reseal_secrets(*, engine: AsyncEngine, sealer: Sealer) -> int:
    """Seal every subscription's secrets under the newest key (`iap privacy rotate-keys`)."""
    async with writing(engine) as conn:
        rows = (await conn.execute(select(s.id, s.secret_sealed, s.previous_secret_sealed))).all()
        for subscription_id, sealed, previous in rows:
            await conn.execute(
                update(webhook_subscription_table)
                .where(s.id == subscription_id)
                .values(
                    secret_sealed=sealer.reseal(sealed),
                    previous_secret_sealed=sealer.reseal(previous) if previous else None,
                )
            )
    return len(rows)
