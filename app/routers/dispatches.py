"""HTTP for the dead-letter desk (scope deliveries:manage): given-up deliveries listed, sent
again or closed as handled; given-up webhook deliveries listed and sent again."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import Catalogue, DeliveryManager, Engine, Now, WebhookDeliveryManager
from app.api.problems import documented_problems
from app.casework import deliveries
from app.casework.schemas_deliveries import (
    BulkRedriveIn,
    BulkRedriveOut,
    CloseIn,
    DispatchOut,
    DispatchPage,
    WebhookDeliveryPage,
    WebhookDeliveryRow,
)
from app.core.types import NoNul, UtcDatetime
from app.core.vocabulary import OutboxState

router = APIRouter(tags=["dead-letter desk"])
_LACKS = "the scope deliveries:manage"
_ONE = documented_problems(
    {
        404: "No such delivery (or not your organisation's)",
        409: "The delivery is not dead",
    },
    lacks=_LACKS,
)
Cursor = Annotated[str | None, Query(max_length=200)]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.get(
    "/v1/dispatches",
    response_model=DispatchPage,
    summary="List deliveries by state (the dead letters by default)",
    responses=documented_problems({422: "A filter or the cursor is not valid"}, lacks=_LACKS),
)
async def list_dispatches(
    engine: Engine,
    catalogue: Catalogue,
    caller: DeliveryManager,
    now: Now,
    state: OutboxState = OutboxState.dead,
    organisation_id: Annotated[NoNul | None, Query(max_length=64)] = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> DispatchPage:
    """Deliveries in `state`, most recently changed first: organisation, why it was sent
    there, attempts, the back-office's last error in full, and age. `since` and `until` bound
    when each last changed (for a dead one, when it was given up). A partner's staff see their
    own organisation's only, whatever `organisation_id` says (another's gives an empty page)."""
    filters = deliveries.DispatchFilter(
        state=state, organisation_id=organisation_id, since=since, until=until
    )
    return await deliveries.list_dispatches(
        engine=engine,
        catalogue=catalogue,
        caller=caller,
        filters=filters,
        cursor=cursor,
        limit=limit,
        now=now,
    )


@router.post(
    "/v1/dispatches/redrive",
    response_model=BulkRedriveOut,
    summary="Send again every given-up delivery to one organisation since a time",
    responses=documented_problems(
        {422: "No such organisation, not yours, or a bad time"}, lacks=_LACKS
    ),
)
async def redrive_many(
    request: BulkRedriveIn, engine: Engine, catalogue: Catalogue, caller: DeliveryManager
) -> BulkRedriveOut:
    """After the cause is fixed (a token, an address): every dead delivery to `organisation`
    given up at or after `since`, back to pending with its attempts counted from nothing, in
    one transaction. Each first looks the case up, so none is made twice."""
    return await deliveries.redrive_many(
        engine=engine,
        catalogue=catalogue,
        caller=caller,
        organisation_id=request.organisation,
        since=request.since,
    )


@router.post(
    "/v1/dispatches/{dispatch_id}/redrive",
    response_model=DispatchOut,
    summary="Send one given-up delivery again",
    responses=_ONE,
)
async def redrive_one(
    dispatch_id: uuid.UUID, engine: Engine, catalogue: Catalogue, caller: DeliveryManager
) -> DispatchOut:
    """Back to pending with its attempts counted from nothing; the redrive is on the
    enquiry's timeline and in the audit log, and the enquiry's status follows."""
    return await deliveries.redrive_dispatch(
        engine=engine, catalogue=catalogue, caller=caller, dispatch_id=dispatch_id
    )


@router.post(
    "/v1/dispatches/{dispatch_id}/close",
    response_model=DispatchOut,
    summary="Close a given-up delivery as handled outside the gateway",
    responses=_ONE,
)
async def close_one(
    dispatch_id: uuid.UUID,
    request: CloseIn,
    engine: Engine,
    catalogue: Catalogue,
    caller: DeliveryManager,
) -> DispatchOut:
    """State `handled`, with the note of how it was seen to (on the timeline as
    `dispatch.handled`); that organisation's part of the enquiry counts as closed."""
    return await deliveries.close_dispatch(
        engine=engine,
        catalogue=catalogue,
        caller=caller,
        dispatch_id=dispatch_id,
        note=request.note,
    )


_WEBHOOK_LACKS = "the scopes webhooks:manage and deliveries:manage"


@router.get(
    "/v1/webhook-deliveries",
    response_model=WebhookDeliveryPage,
    summary="List webhook deliveries by state (the dead ones by default)",
    responses=documented_problems(
        {422: "A filter or the cursor is not valid"}, lacks=_WEBHOOK_LACKS
    ),
)
async def list_webhook_deliveries(
    engine: Engine,
    caller: WebhookDeliveryManager,
    now: Now,
    state: OutboxState = OutboxState.dead,
    subscription_id: uuid.UUID | None = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> WebhookDeliveryPage:
    """With deliveries:manage, every subscription's (a partner's staff: their organisation's
    subscriptions'); with webhooks:manage alone, this client's own subscriptions'."""
    return await deliveries.list_webhook_deliveries(
        engine=engine,
        caller=caller,
        state=state,
        subscription_id=subscription_id,
        cursor=cursor,
        limit=limit,
        now=now,
    )


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/redrive",
    response_model=WebhookDeliveryRow,
    summary="Send one given-up webhook delivery again",
    responses=documented_problems(
        {404: "No such webhook delivery (or not one you may see)", 409: "It is not dead"},
        lacks=_WEBHOOK_LACKS,
    ),
)
async def redrive_webhook(
    delivery_id: uuid.UUID, engine: Engine, caller: WebhookDeliveryManager
) -> WebhookDeliveryRow:
    """Back to pending with its attempts counted from nothing, sent with the same
    `webhook-id` (receivers dedupe on it); a disabled subscription's waits until it is
    enabled again."""
    return await deliveries.redrive_webhook_delivery(
        engine=engine, caller=caller, delivery_id=delivery_id
    )
