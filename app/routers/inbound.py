"""HTTP for status updates that organisations push to us."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Path, Request

from app.api.deps import Inbox
from app.api.problems import documented_problems
from app.api.ratelimit import RATE_LIMITED_RESPONSE, limit_inbound
from app.updates.inbound import InboundReceipt

# Counted per address before the signature is checked, so forged pushes are limited too.
router = APIRouter(
    prefix="/v1/inbound",
    tags=["inbound"],
    dependencies=[Depends(limit_inbound)],
    responses={429: RATE_LIMITED_RESPONSE},
)
Organisation = Annotated[str, Path(max_length=64, examples=["oxfordshire-county"])]
# Unknown organisations are refused exactly like bad credentials, so names cannot be probed.
_SIGNATURE_REFUSED = (
    "Signature missing, wrong, or timestamp more than 5 minutes off; answered the same "
    "for an organisation that is unknown or does not push webhooks"
)
_API_KEY_REFUSED = (
    "The api_key is missing or wrong; answered the same for an organisation that is "
    "unknown or does not push Open311 updates"
)
_UPDATE_PROBLEMS = {404: "The update names no case of ours", 422: "The update is not valid"}


@router.post(
    "/{organisation}",
    response_model=InboundReceipt,
    summary="Receive a status update (Standard Webhooks)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/InboundUpdate"}}
            },
        }
    },
    responses=documented_problems({401: _SIGNATURE_REFUSED, **_UPDATE_PROBLEMS}),
)
async def receive_webhook(
    organisation: Organisation, request: Request, inbox: Inbox
) -> InboundReceipt:
    """An organisation tells us a case moved on. Signed per Standard Webhooks with the
    organisation's secret (`webhook-id`, `webhook-timestamp`, `webhook-signature`). A message
    whose `webhook-id` was already received is answered 200 and ignored; an `update_id` already
    recorded (pushed twice, or polled too) is recorded once."""
    body = await request.body()
    return await inbox.webhook(organisation, body=body, headers=request.headers)


@router.post(
    "/{organisation}/servicerequestupdates",
    response_model=InboundReceipt,
    summary="Receive an Open311 service request update (mySociety style)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": [
                            "api_key",
                            "service_request_id",
                            "update_id",
                            "updated_datetime",
                            "status",
                        ],
                        "properties": {
                            name: {"type": "string"}
                            for name in (
                                "api_key",
                                "jurisdiction_id",
                                "service_request_id",
                                "update_id",
                                "updated_datetime",
                                "status",
                                "description",
                                "external_status_code",
                            )
                        },
                    }
                }
            },
        }
    },
    responses=documented_problems({401: _API_KEY_REFUSED, **_UPDATE_PROBLEMS}),
)
async def receive_open311_update(
    organisation: Organisation, request: Request, inbox: Inbox
) -> InboundReceipt:
    """The FixMyStreet `servicerequestupdates` push, form-encoded, for Open311 back-offices."""
    body = await request.body()
    form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return await inbox.open311(organisation, form=form)
