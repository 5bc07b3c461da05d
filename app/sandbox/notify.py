"""A GOV.UK Notify-compatible API: texts and emails the gateway asks it to send, kept in
`office.notify` instead of sent.

- POST /v2/notifications/sms {phone_number, template_id, personalisation, reference}
- POST /v2/notifications/email {email_address, template_id, personalisation, reference,
  one_click_unsubscribe_url}
- GET /v2/notifications?reference=... : the notifications made with that client reference
- GET /_sandbox/notify: every one kept, oldest first (repeats of a reference flagged)

Each call must carry `Authorization: Bearer <JWT>` signed (HS256) with the secret of the
sandbox's API key, `iss` its service id and `iat` within 30 s, as Notify's own client makes it
(a key is `{name}-{service id}-{secret}`). Its two templates hold the one placeholder
((body)) (and ((subject)) for email), as the gateway's settings expect; a template it does not
know, or personalisation missing, is Notify's 400. Behaviour for the organisation "notify"
(or "*") applies as elsewhere (faults.py), answered in Notify's error shape.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from notifications_python_client.authentication import decode_jwt_token, get_token_issuer
from notifications_python_client.errors import TokenError

from app.alerts.notify import SANDBOX_NOTIFY_API_KEY
from app.core.settings import AlertSettings
from app.sandbox import faults
from app.sandbox.core import SandboxDep
from app.sandbox.office import utc_now

router = APIRouter()
SCOPE = "notify"  # the behaviour's organisation
SERVICE_ID = SANDBOX_NOTIFY_API_KEY[-73:-37]
SECRET = SANDBOX_NOTIFY_API_KEY[-36:]
_DEFAULTS = AlertSettings()
TEMPLATES = {
    _DEFAULTS.notify_sms_template_id: ("sms", "", "((body))"),
    _DEFAULTS.notify_email_template_id: ("email", "((subject))", "((body))"),
}
_PLACEHOLDER = re.compile(r"\(\(([A-Za-z0-9_ -]+)\)\)")


class NotifyError(faults.SimulatorError):
    """Notify's error shape: {"status_code", "errors": [{"error", "message"}]}."""

    def __init__(self, status: int, error: str, message: str, **kwargs: Any) -> None:
        super().__init__(status, message, **kwargs)
        self.error = error

    def response(self) -> JSONResponse:
        body = {
            "status_code": self.status,
            "errors": [{"error": self.error, "message": self.message}],
        }
        return JSONResponse(body, self.status, headers=self.headers)


def _authorised(request: Request) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotifyError(401, "AuthError", "Unauthorized: authentication token must be provided")
    try:
        if get_token_issuer(token) != SERVICE_ID:  # type: ignore[no-untyped-call]
            raise NotifyError(403, "AuthError", "Invalid token: service not found")
        decode_jwt_token(token, SECRET)  # type: ignore[no-untyped-call]
    except TokenError as exc:
        raise NotifyError(403, "AuthError", exc.message) from exc


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise NotifyError(400, "BadRequestError", "Invalid JSON supplied in POST data") from exc
    if not isinstance(body, dict):
        raise NotifyError(400, "ValidationError", "POST data must be a JSON object")
    return body


async def _arrive(sandbox: Any) -> None:
    fault = await faults.arrive(sandbox.office, SCOPE)
    if fault is not None:
        error = "ServiceUnavailable" if fault.down else "Exception"
        raise NotifyError(fault.status, error, "Internal server error", headers=fault.headers)


@router.post("/v2/notifications/sms", status_code=201)
async def send_sms(request: Request, sandbox: SandboxDep) -> dict[str, Any]:
    """Keep one text message; Notify's answer."""
    return await _send(request, sandbox, "sms", "phone_number")


@router.post("/v2/notifications/email", status_code=201)
async def send_email(request: Request, sandbox: SandboxDep) -> dict[str, Any]:
    """Keep one email; Notify's answer."""
    return await _send(request, sandbox, "email", "email_address")


async def _send(request: Request, sandbox: Any, kind: str, to_field: str) -> dict[str, Any]:
    _authorised(request)
    body = await _body(request)
    await _arrive(sandbox)
    to = body.get(to_field)
    if not isinstance(to, str) or not to.strip():
        raise NotifyError(400, "ValidationError", f"{to_field} is a required property")
    template = TEMPLATES.get(str(body.get("template_id")))
    if template is None or template[0] != kind:
        raise NotifyError(400, "BadRequestError", "Template not found")
    personalisation = body.get("personalisation") or {}
    if not isinstance(personalisation, dict):
        raise NotifyError(400, "ValidationError", "personalisation is not of type object")
    _, subject, content = template
    missing = [
        name for name in _PLACEHOLDER.findall(subject + content) if name not in personalisation
    ]
    if missing:
        raise NotifyError(400, "BadRequestError", f"Missing personalisation: {', '.join(missing)}")
    entry = _keep(sandbox, kind, to, body, personalisation, subject, content)
    await faults.hold(sandbox.office, SCOPE)
    return _answer(request, entry)


def _fill(text: str, personalisation: dict[str, Any]) -> str:
    return _PLACEHOLDER.sub(lambda m: str(personalisation.get(m[1], "")), text)


def _keep(
    sandbox: Any,
    kind: str,
    to: str,
    body: dict[str, Any],
    personalisation: dict[str, Any],
    subject: str,
    content: str,
) -> dict[str, Any]:
    reference = body.get("reference")
    kept = sandbox.office.notify
    entry = {
        "id": str(uuid.uuid4()),
        "type": kind,
        "to": to,
        "template_id": str(body["template_id"]),
        "reference": reference,
        "subject": _fill(subject, personalisation) if kind == "email" else None,
        "body": _fill(content, personalisation),
        "one_click_unsubscribe_url": body.get("one_click_unsubscribe_url"),
        "status": "delivered",
        "duplicate": reference is not None and any(n["reference"] == reference for n in kept),
        "created_at": utc_now(),
    }
    kept.append(entry)
    return entry


def _answer(request: Request, entry: dict[str, Any]) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    content: dict[str, Any] = {"body": entry["body"]}
    if entry["type"] == "sms":
        content["from_number"] = "IAP"
    else:
        content |= {
            "subject": entry["subject"],
            "from_email": "iap@notifications.service.gov.uk",
            "one_click_unsubscribe_url": entry["one_click_unsubscribe_url"],
        }
    return {
        "id": entry["id"],
        "reference": entry["reference"],
        "content": content,
        "uri": f"{base}/v2/notifications/{entry['id']}",
        "template": {
            "id": entry["template_id"],
            "version": 1,
            "uri": f"{base}/services/{SERVICE_ID}/templates/{entry['template_id']}",
        },
        "scheduled_for": None,
    }


@router.get("/v2/notifications")
async def notifications(
    request: Request, sandbox: SandboxDep, reference: str | None = None
) -> dict[str, Any]:
    """Notifications, newest first, with this client reference if one is given."""
    _authorised(request)
    await _arrive(sandbox)
    found = [n for n in reversed(sandbox.office.notify) if reference in (None, n["reference"])]
    shown = [
        {
            "id": n["id"],
            "reference": n["reference"],
            "type": n["type"],
            "status": n["status"],
            "body": n["body"],
            "subject": n["subject"],
            "created_at": n["created_at"].isoformat(),
        }
        for n in found
    ]
    base = str(request.base_url).rstrip("/")
    return {"notifications": shown, "links": {"current": f"{base}/v2/notifications"}}


@router.get("/_sandbox/notify")
async def kept(sandbox: SandboxDep) -> dict[str, Any]:
    """Every text and email the simulator was asked to send, oldest first."""
    return {"notifications": jsonable_encoder(sandbox.office.notify)}
