"""HTTP for partner webhook subscriptions (scope webhooks:manage): what happened to enquiries,
sent as signed Standard Webhooks. A client sees and manages its own; admin, every one."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from app.api.deps import Catalogue, Engine, Outbound, Sealer, WebhookManager
from app.api.problems import documented_problems
from app.partners import subscriptions as webhooks
from app.partners.schemas import (
    WebhookCreated,
    WebhookDetail,
    WebhookIn,
    WebhookList,
    WebhookOut,
)

router = APIRouter(tags=["webhooks"])
_LACKS = "the scope webhooks:manage, or names an organisation without admin"
_PROBLEMS = documented_problems(lacks=_LACKS)
_ONE_PROBLEMS = documented_problems(
    {404: "No such subscription (or not this client's)"}, lacks=_LACKS
)


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
    """Its endpoint is back (it had answered 410 Gone): events made from now on are sent to
    it again. Its given-up deliveries can be sent again with
    `POST /v1/webhook-deliveries/{id}/redrive`."""
    return await webhooks.enable_subscription(
        engine=engine, caller=caller, subscription_id=subscription_id
    )
