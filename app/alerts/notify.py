"""GOV.UK Notify through its own client (`notifications-python-client`), which is synchronous:
each call runs in a thread with a client of its own (the client is not thread-safe).

The alert id is Notify's client `reference` on every attempt, so a repeat after an attempt
whose outcome is unknown asks Notify first whether it holds one with that reference, and sends
nothing if it does. Notify's 4xx answers (but 429) are permanent; 429, 5xx, timeouts and
transport errors are tried again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from notifications_python_client.errors import APIError
from notifications_python_client.notifications import NotificationsAPIClient

from app.core.errors import PermanentError, RetryableError
from app.core.vocabulary import AlertChannel

NOTIFY_URL = "https://api.notifications.service.gov.uk"
# The sandbox's Notify simulator takes this key (app/sandbox/notify.py); used outside
# production when IAP_ALERTS__NOTIFY_API_KEY is unset. Format: {name}-{service id}-{secret}.
SANDBOX_NOTIFY_API_KEY = (
    "iap_sandbox-4a0a6b3e-6c4f-4d5e-9a47-000000000000-0f1e2d3c-4b5a-4697-8877-665544332211"
)


@dataclass(frozen=True)
class NotifyTarget:
    """Where and how to reach Notify."""

    base_url: str
    api_key: str
    timeout: float


@dataclass(frozen=True)
class NotifyMessage:
    channel: AlertChannel
    to: str  # a phone number or an email address
    template_id: str
    personalisation: dict[str, str]
    reference: str  # the alert id
    unsubscribe_url: str | None = None  # email only (Notify's one_click_unsubscribe_url)


async def send(target: NotifyTarget, message: NotifyMessage, *, repeat: bool) -> str:
    """Send the message unless, on a repeat, Notify holds it already; Notify's id for it."""
    return await asyncio.to_thread(_send, target, message, repeat)


def _send(target: NotifyTarget, message: NotifyMessage, repeat: bool) -> str:
    client = NotificationsAPIClient(  # type: ignore[no-untyped-call]
        target.api_key, base_url=target.base_url, timeout=target.timeout
    )
    try:
        if repeat and (held := _held(client, message.reference)) is not None:
            return held
        answer = _post(client, message)
    except APIError as exc:
        raise notify_error(exc) from exc
    finally:
        client.request_session.close()
    return str(answer["id"])


def _held(client: NotificationsAPIClient, reference: str) -> str | None:
    found: dict[str, Any] = client.get_all_notifications(reference=reference)  # type: ignore[no-untyped-call]
    notifications = found.get("notifications") or []
    return str(notifications[0]["id"]) if notifications else None


def _post(client: NotificationsAPIClient, message: NotifyMessage) -> dict[str, Any]:
    if message.channel is AlertChannel.sms:
        sent: dict[str, Any] = client.send_sms_notification(  # type: ignore[no-untyped-call]
            phone_number=message.to,
            template_id=message.template_id,
            personalisation=message.personalisation,
            reference=message.reference,
        )
        return sent
    sent = client.send_email_notification(  # type: ignore[no-untyped-call]
        email_address=message.to,
        template_id=message.template_id,
        personalisation=message.personalisation,
        reference=message.reference,
        one_click_unsubscribe_url=message.unsubscribe_url,
    )
    return sent  # noqa: RET504 (typed: the client's is not)


def notify_error(exc: APIError) -> RetryableError | PermanentError:
    """Notify's answer as an error, by its status alone: its message may echo what was sent."""
    status = exc.status_code
    kind = _error_kind(exc)
    summary = f"Notify HTTP {status}" + (f" ({kind})" if kind else "")
    if status == 429 or status >= 500:
        return RetryableError(summary, ambiguous=status >= 500)
    return PermanentError(summary)


def _error_kind(exc: APIError) -> str | None:
    """Notify's error class name (BadRequestError, AuthError), never its message."""
    try:
        errors = exc.response.json().get("errors") or []  # type: ignore[union-attr]
        kind = errors[0].get("error")
    except (AttributeError, TypeError, ValueError, IndexError, KeyError):
        return None
    return str(kind)[:40] if isinstance(kind, str) else None
