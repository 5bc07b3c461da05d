"""HTTP for partner webhook subscriptions (scope webhooks:manage): what happened to enquiries,
sent as signed Standard Webhooks. A client sees and manages its own; admin, every one."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import Catalogue, Engine, Now, Outbound, Sealer, WebhookManager, Webhooks
from app.api.problems import documented_problems
from app.core.types import UtcDatetime
from app.core.vocabulary import EventType, OutboxState
from app.partners import history
from app.partners import subscriptions as webhooks
from app.partners.schemas import (
    RecoverIn,
    RecoverOut,
    RotateIn,
    WebhookCreated,
    WebhookDeliveryDetail,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookDetail,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
    WebhookRotated,
)

router = APIRouter(tags=["webhooks"])
_LACKS = "the scope webhooks:manage, or names an organisation without admin"
_PROBLEMS = documented_problems(lacks=_LACKS)
_ONE_PROBLEMS = documented_problems(
    {404: "No such subscription (or not this client's)"}, lacks=_LACKS
)
_DELIVERY_PROBLEMS = documented_problems(
    {404: "No such subscription (or not this client's), or no such delivery of it"},
    lacks=_LACKS,
)
Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Subscribe an endpoint to enquiry events",
    responses=documented_problems(
        {422: "A bad URL, one the gateway may not call, or a bad event name"}, lacks=_LACKS
    ),
)
async def subscribe(
    request: WebhookIn,
    engine: Engine,
    catalogue: Catalogue,
    sealer: Sealer,
    guard: Outbound,
    caller: WebhookManager,
) -> WebhookCreated:
    """Events made from now on that match `events` are POSTed to `url`, signed per Standard
    Webhooks with the `secret` in this answer, which is never shown again. With
    `organisation_id`, only events about enquiries routed to that organisation are sent;
    without it, those about enquiries this client submitted (every enquiry for admin)."""
    return await webhooks.create_subscription(
        engine=engine,
        catalogue=catalogue,
        sealer=sealer,
        guard=guard,
        caller=caller,
        request=request,
    )


@router.get(
    "/v1/webhooks",
    response_model=WebhookList,
    summary="List webhook subscriptions",
    responses=_PROBLEMS,
)
async def list_webhooks(engine: Engine, caller: WebhookManager) -> WebhookList:
    """This client's subscriptions (every client's for admin), without their secrets."""
    return WebhookList(items=await webhooks.list_subscriptions(engine=engine, caller=caller))


@router.get(
    "/v1/webhooks/{subscription_id}",
    response_model=WebhookDetail,
    summary="Read a subscription and its recent deliveries",
    responses=_ONE_PROBLEMS,
)
async def read_webhook(
    subscription_id: uuid.UUID, engine: Engine, caller: WebhookManager
) -> WebhookDetail:
    """The subscription, whether it is still active (an endpoint answering 410 disables it),
    and its latest deliveries: event, state, attempts, the endpoint's last status or error."""
    return await webhooks.read_subscription(
        engine=engine, caller=caller, subscription_id=subscription_id
    )


@router.delete(
    "/v1/webhooks/{subscription_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a subscription",
    responses=_ONE_PROBLEMS,
)
async def delete_webhook(
    subscription_id: uuid.UUID, engine: Engine, caller: WebhookManager
) -> Response:
    """Nothing more is sent to it, not even deliveries still waiting for a retry."""
    await webhooks.delete_subscription(
        engine=engine, caller=caller, subscription_id=subscription_id
    )
    return Response(status_code=204)


@router.post(
    "/v1/webhooks/{subscription_id}/enable",
    response_model=WebhookOut,
    summary="Enable a disabled subscription again",
    responses=documented_problems(
        {
            404: "No such subscription (or not this client's)",
            409: "The subscription is not disabled",
        },
        lacks=_LACKS,
    ),
)
async def enable_webhook(
    subscription_id: uuid.UUID, engine: Engine, caller: WebhookManager
) -> WebhookOut:
    """Its endpoint is back (it had answered 410 Gone, or failed for days): events made from
    now on are sent to it again. Those it missed can be sent with
    `POST /v1/webhooks/{id}/recover`, one given up with `…/deliveries/{delivery_id}/resend`."""
    return await webhooks.enable_subscription(
        engine=engine, caller=caller, subscription_id=subscription_id
    )


@router.patch(
    "/v1/webhooks/{subscription_id}",
    response_model=WebhookOut,
    summary="Change a subscription",
    responses=documented_problems(
        {
            404: "No such subscription (or not this client's)",
            422: "A bad URL, one the gateway may not call, or a bad event name",
        },
        lacks=_LACKS,
    ),
)
async def update_webhook(
    subscription_id: uuid.UUID,
    patch: WebhookPatch,
    engine: Engine,
    guard: Outbound,
    caller: WebhookManager,
) -> WebhookOut:
    """A JSON merge patch: the fields given change, checked as when subscribing, all or
    none. `enabled: true` sends a disabled subscription events again (as `…/enable` does),
    `enabled: false` stops sending until then."""
    return await webhooks.update_subscription(
        engine=engine, guard=guard, caller=caller, subscription_id=subscription_id, patch=patch
    )


@router.post(
    "/v1/webhooks/{subscription_id}/rotate-secret",
    response_model=WebhookRotated,
    summary="Rotate a subscription's signing secret",
    responses=documented_problems(
        {
            404: "No such subscription (or not this client's)",
            422: "overlap_seconds is not a whole number from 0 to 604800",
        },
        lacks=_LACKS,
    ),
)
async def rotate_webhook_secret(
    subscription_id: uuid.UUID,
    engine: Engine,
    sealer: Sealer,
    caller: WebhookManager,
    request: RotateIn | None = None,
) -> WebhookRotated:
    """A new secret, shown this once. Until `previous_secret_until` (24 hours unless
    `overlap_seconds` says otherwise) each message carries a signature by the old secret and
    one by the new, so a receiver can switch at any moment in the window."""
    return await webhooks.rotate_secret(
        engine=engine,
        sealer=sealer,
        caller=caller,
        subscription_id=subscription_id,
        overlap_seconds=(request or RotateIn()).overlap_seconds,
    )


@router.post(
    "/v1/webhooks/{subscription_id}/test",
    status_code=202,
    response_model=WebhookDeliveryOut,
    summary="Send a test ping to a subscription's endpoint",
    responses=documented_problems(
        {
            404: "No such subscription (or not this client's)",
            409: "The subscription is disabled",
        },
        lacks=_LACKS,
    ),
)
async def ping_webhook(
    subscription_id: uuid.UUID, engine: Engine, caller: WebhookManager
) -> WebhookDeliveryOut:
    """A `ping` event, queued for this subscription alone and sent like any other (signed,
    retried); the answer is its delivery, to follow in `GET /v1/webhooks/{id}`."""
    return await webhooks.send_ping(engine=engine, caller=caller, subscription_id=subscription_id)


@router.get(
    "/v1/webhooks/{subscription_id}/deliveries",
    response_model=WebhookDeliveryList,
    summary="List a subscription's deliveries",
    responses=documented_problems(
        {
            404: "No such subscription (or not this client's)",
            422: "A filter or the cursor is not valid",
        },
        lacks=_LACKS,
    ),
)
async def list_deliveries(
    subscription_id: uuid.UUID,
    engine: Engine,
    caller: WebhookManager,
    state: OutboxState | None = None,
    event_type: EventType | None = None,
    since: UtcDatetime | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> WebhookDeliveryList:
    """Every event queued for the subscription, newest first: its state, attempts, the
    endpoint's last status or error. `since` keeps those queued at or after a time."""
    return await history.list_deliveries(
        engine=engine,
        caller=caller,
        subscription_id=subscription_id,
        state=state,
        event_type=event_type,
        since=since,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    "/v1/webhooks/{subscription_id}/deliveries/{delivery_id}",
    response_model=WebhookDeliveryDetail,
    summary="Read one delivery and its attempts",
    responses=_DELIVERY_PROBLEMS,
)
async def read_delivery(
    subscription_id: uuid.UUID, delivery_id: uuid.UUID, engine: Engine, caller: WebhookManager
) -> WebhookDeliveryDetail:
    """The delivery and every attempt at it, newest first: when it began, how long it took,
    the endpoint's status, the error, and the first KiB of its answer."""
    return await history.read_delivery(
        engine=engine, caller=caller, subscription_id=subscription_id, delivery_id=delivery_id
    )


@router.post(
    "/v1/webhooks/{subscription_id}/deliveries/{delivery_id}/resend",
    status_code=202,
    response_model=WebhookDeliveryOut,
    summary="Send one delivery again",
    responses=documented_problems(
        {
            404: "No such subscription (or not this client's), or no such delivery of it",
            409: "The subscription is disabled, or the delivery is being sent now",
        },
        lacks=_LACKS,
    ),
)
async def resend_delivery(
    subscription_id: uuid.UUID,
    delivery_id: uuid.UUID,
    engine: Engine,
    caller: WebhookManager,
    now: Now,
) -> WebhookDeliveryOut:
    """Queued again, due now, whatever became of it (delivered or given up), with the same
    `webhook-id` so the endpoint can tell it is a repeat; its earlier attempts stay listed."""
    return await history.resend(
        engine=engine,
        caller=caller,
        subscription_id=subscription_id,
        delivery_id=delivery_id,
        now=now,
    )


@router.post(
    "/v1/webhooks/{subscription_id}/recover",
    status_code=202,
    response_model=RecoverOut,
    summary="Send again every message missed in a window",
    responses=documented_problems(
        {
            404: "No such subscription (or not this client's)",
            409: "The subscription is disabled",
            422: "The window is longer than allowed, reversed, in the future, or older than "
            "deliveries are kept",
        },
        lacks=_LACKS,
    ),
)
async def recover_webhook(
    subscription_id: uuid.UUID,
    request: RecoverIn,
    engine: Engine,
    settings: Webhooks,
    caller: WebhookManager,
    now: Now,
) -> RecoverOut:
    """After an outage: every event made from `since` (to `until`, or now) that was not
    delivered is queued again, and those never queued (made while the subscription was
    disabled) are queued now; each under its own `webhook-id`, so nothing already handled
    needs handling twice. At most 14 days (`IAP_WEBHOOKS__RECOVER_MAX_DAYS`), within the
    delivery history kept."""
    return await history.recover(
        engine=engine,
        caller=caller,
        subscription_id=subscription_id,
        request=request,
        settings=settings,
        now=now,
    )
