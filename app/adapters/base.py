"""The one interface every back-office adapter implements, and the errors it may raise.

Adapters never retry, sleep or swallow errors: they deliver once, or raise RetryableError (the
dispatcher tries again later, honouring retry_after) or PermanentError (the dispatch is dead).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from app.catalogue import Organisation


class DeliveryError(Exception):
    """Delivery failed; the message is shown to agents, so it never holds personal data."""


class RetryableError(DeliveryError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    pass


@dataclass(frozen=True)
class Delivery:
    """One enquiry on its way to one organisation."""

    dispatch_id: uuid.UUID
    reference: str
    attempt: int
    organisation: Organisation
    enquiry: dict[str, Any]  # the stored enquiry, without the citizen's details
    service_name: str
    # Only what this organisation may receive, and only with the citizen's consent; else None.
    citizen: dict[str, Any] | None


def shareable_citizen(enquiry: dict[str, Any], organisation: Organisation) -> dict[str, Any] | None:
    """The citizen's details this organisation may be sent: none without consent, and then
    only the fields its data-sharing agreement lists."""
    citizen = enquiry.get("citizen") or {}
    if not (enquiry.get("consent") or {}).get("share_contact_details"):
        return None
    shared = {k: v for k, v in citizen.items() if k in organisation.shares}
    return shared or None


@dataclass(frozen=True)
class Receipt:
    """The back-office accepted the enquiry; its own reference when it gave one."""

    remote_reference: str | None


class AdapterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    # Seconds one call may take; without it, IAP_HTTP__TIMEOUT_SECONDS.
    timeout_seconds: float | None = Field(default=None, gt=0, le=120)


class Adapter:
    """Delivers enquiries to one organisation's back-office."""

    config_model: ClassVar[type[AdapterConfig]] = AdapterConfig

    def __init__(self, *, config: Any, client: httpx.AsyncClient, timeout: float) -> None:
        self.config = config
        self.client = client
        self.timeout = timeout

    async def deliver(self, delivery: Delivery) -> Receipt:
        raise NotImplementedError


def raise_for_response(response: httpx.Response) -> None:
    """Map an HTTP answer onto the error classes: 5xx, 408, 409, 425, 429 retry; other 4xx don't."""
    status = response.status_code
    if status < 400:
        return
    summary = f"HTTP {status} from {response.request.url.host}"
    if status >= 500 or status in (408, 409, 425, 429):
        raise RetryableError(summary, retry_after=retry_after_seconds(response))
    raise PermanentError(f"{summary}: {response.text[:200]}")


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header as seconds from now (it may be seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def describe_transport_error(exc: httpx.HTTPError) -> str:
    """A short, data-free description of a transport failure."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"
