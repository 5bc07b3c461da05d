"""Status updates pushed back to the gateway, as the real back-offices would send them.

- The county (rest-json), when it has `inbound.webhook_secret`: POST {gateway}/v1/inbound/{org}
  with JSON {update_id, remote_reference, reference, status, description, updated_at}, signed
  per Standard Webhooks (headers webhook-id, webhook-timestamp, webhook-signature).
- An Open311 district, when it has `inbound.api_key`: POST
  {gateway}/v1/inbound/{org}/servicerequestupdates, form-encoded as mySociety's open311-adapter
  sends them (api_key, jurisdiction_id, service_request_id, update_id, updated_datetime, status,
  description, external_status_code).

Pushes run in the background, one case's updates in order; a gateway that does not answer (or
answers 5xx/408/429) is tried again after each of `push_delays`; any other answer ends it. Each
push is recorded in `office.pushes` with its outcome: pending, delivered, rejected or gave_up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from standardwebhooks import Webhook

from app.catalogue.catalogue import Organisation
from app.sandbox.office import utc_now

if TYPE_CHECKING:
    from app.sandbox.core import Sandbox

log = structlog.get_logger()
RETRY_STATUSES = frozenset({408, 425, 429})
PUSH_TIMEOUT_SECONDS = 5.0


def schedule(sandbox: Sandbox, case: dict[str, Any], update: dict[str, Any]) -> None:
    """Push this update in the background if the case's organisation pushes to the gateway."""
    organisation = sandbox.organisation(case["organisation"], case["protocol"])
    if organisation is None or sandbox.gateway_url is None:
        return
    request = _request_for(sandbox.gateway_url, organisation, case, update)
    if request is None:
        return
    record = {
        "organisation": organisation.id,
        "case_id": case["id"],
        "update_id": update["update_id"],
        "url": request["url"],
        "attempts": 0,
        "outcome": "pending",
        "status_code": None,
    }
    sandbox.office.pushes.append(record)
    slot = (organisation.id, case["id"])
    previous = sandbox.last_push.get(slot)
    sandbox.last_push[slot] = sandbox.spawn(
        _push(request, record, previous=previous, delays=tuple(sandbox.push_delays))
    )


def _request_for(
    gateway_url: str, organisation: Organisation, case: dict[str, Any], update: dict[str, Any]
) -> dict[str, Any] | None:
    base = f"{gateway_url.rstrip('/')}/v1/inbound/{organisation.id}"
    secret = organisation.inbound.webhook_secret
    if case["protocol"] == "rest-json" and secret is not None:
        return {
            "url": base,
            "secret": secret.get_secret_value(),
            "json": webhook_body(case, update),
        }
    api_key = organisation.inbound.api_key
    if case["protocol"] == "open311" and api_key is not None:
        form = open311_form(organisation, case, update, api_key.get_secret_value())
        return {"url": f"{base}/servicerequestupdates", "form": form}
    return None


def webhook_body(case: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The county's JSON for one update."""
    return {
        "update_id": update["update_id"],
        "remote_reference": case["id"],
        "reference": case.get("reference"),
        "status": update["status"],
        "description": update["description"],
        "updated_at": update["updated_at"].isoformat(),
    }


def open311_form(
    organisation: Organisation, case: dict[str, Any], update: dict[str, Any], api_key: str
) -> dict[str, str]:
    """mySociety's servicerequestupdates form for one update."""
    jurisdiction = (organisation.adapter.model_extra or {}).get("jurisdiction_id")
    return {
        "api_key": api_key,
        "jurisdiction_id": str(jurisdiction or organisation.id),
        "service_request_id": case["id"],
        "update_id": update["update_id"],
        "updated_datetime": update["updated_at"].isoformat(timespec="seconds"),
        "status": update["status"],
        "description": update["description"],
        "external_status_code": external_status_code(update["status"]),
    }


def external_status_code(status: str) -> str:
    """The district's own code for a status word, as its case system shows it."""
    return status.upper().replace("_", "-")


async def _push(
    request: dict[str, Any],
    record: dict[str, Any],
    *,
    previous: asyncio.Task[None] | None,
    delays: tuple[float, ...],
) -> None:
    if previous is not None:
        with contextlib.suppress(Exception):
            await previous
    async with httpx.AsyncClient(timeout=PUSH_TIMEOUT_SECONDS) as client:
        for attempt, delay in enumerate((*delays, None), start=1):
            record["attempts"] = attempt
            status_code = await _send_once(client, request)
            record["status_code"] = status_code
            if status_code is not None and status_code < 300:
                record["outcome"] = "delivered"
                break
            if status_code is not None and _final(status_code):
                record["outcome"] = "rejected"
                break
            if delay is None:
                record["outcome"] = "gave_up"
                break
            await asyncio.sleep(delay)
    log.info("sandbox.push_" + record["outcome"], **_loggable(record))


async def _send_once(client: httpx.AsyncClient, request: dict[str, Any]) -> int | None:
    """One attempt; the gateway's status code, or None when it did not answer."""
    try:
        if "form" in request:
            response = await client.post(request["url"], data=request["form"])
        else:
            body = json.dumps(request["json"], separators=(",", ":"))
            headers = signed_headers(request["secret"], request["json"]["update_id"], body)
            response = await client.post(request["url"], content=body, headers=headers)
    except httpx.HTTPError:
        return None
    return response.status_code


def signed_headers(secret: str, update_id: str, body: str) -> dict[str, str]:
    """Standard Webhooks headers; the id stays the same on every attempt, the time does not."""
    message_id = f"msg_{update_id}"
    now = utc_now()
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


def _final(status_code: int) -> bool:
    return status_code < 500 and status_code not in RETRY_STATUSES


def _loggable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("organisation", "update_id", "attempts", "status_code")}
