"""Request and response bodies of partner webhook subscriptions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from app.core.types import AwareUtcDatetime, Strict, WholeNumber
from app.core.vocabulary import (
    ANY_EVENT,
    EVENT_FAMILIES,
    EVENT_PATTERNS,
    EventType,
    OutboxState,
    SubscriptionState,
)


class WebhookIn(Strict):
    """A partner's endpoint, and which events it wants."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://partner.example.org/iap/events",
                    "events": ["enquiry.*", "privacy.erasure_requested"],
                    "organisation_id": "vale-of-white-horse",
                    "description": "Cases system, production",
                }
            ]
        }
    )

    url: str = Field(
        max_length=2000,
        examples=["https://partner.example.org/iap/events"],
        description="Where events are POSTed: https (plain http only outside production)",
    )
    events: list[str] = Field(
        min_length=1,
        max_length=50,
        examples=[["enquiry.*", EventType.privacy_erasure_requested]],
        description='Event types, or a family of them ("enquiry.*"), or "*" for every event',
    )
    organisation_id: str | None = Field(
        default=None,
        max_length=64,
        description="Only events about enquiries routed to this organisation",
    )
    description: str | None = Field(
        default=None,
        max_length=500,
        examples=["Cases system, production"],
        description="What the endpoint is, for the people managing it",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return partner_url(url)

    @field_validator("events")
    @classmethod
    def _patterns(cls, events: list[str]) -> list[str]:
        return event_patterns(events)


def partner_url(url: str) -> str:
    """An endpoint URL a partner may give: http(s), a host, no credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not carry credentials; the signature proves who sent it")
    return url


def event_patterns(events: list[str]) -> list[str]:
    """Known event types or families, each once, sorted."""
    for pattern in events:
        if pattern not in EVENT_PATTERNS:
            families = ", ".join(f"{f}.*" for f in EVENT_FAMILIES)
            raise ValueError(f"{pattern!r} is not an event type or one of {families}, {ANY_EVENT}")
    return sorted(set(events))


def _not_null(schema: dict[str, Any]) -> None:
    """The field's schema without its null branch: absent means unchanged, null is refused."""
    branches = schema.pop("anyOf")
    schema.update(next(b for b in branches if b.get("type") != "null"))


class WebhookPatch(Strict):
    """A JSON merge patch of a subscription: only the fields given change."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"events": ["enquiry.*", "dispatch.*"], "description": "Cases system"}]
        }
    )

    url: str | None = Field(
        default=None,
        max_length=2000,
        examples=["https://partner.example.org/iap/v2/events"],
        description="A new endpoint, checked as when subscribing",
        json_schema_extra=_not_null,
    )
    events: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        examples=[["enquiry.*"]],
        description="The event types wanted from now on (replacing the list)",
        json_schema_extra=_not_null,
    )
    description: str | None = Field(
        default=None, max_length=500, description="A new description; null removes it"
    )
    enabled: bool | None = Field(
        default=None,
        strict=True,
        description="false stops sending; true sends a disabled subscription events again",
        json_schema_extra=_not_null,
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str:
        if url is None:
            raise ValueError("may not be removed")
        return partner_url(url)

    @field_validator("events")
    @classmethod
    def _patterns(cls, events: list[str] | None) -> list[str]:
        if events is None:
            raise ValueError("may not be removed")
        return event_patterns(events)

    @field_validator("enabled")
    @classmethod
    def _enabled(cls, enabled: bool | None) -> bool:
        if enabled is None:
            raise ValueError("may not be removed")
        return enabled


MAX_OVERLAP_SECONDS = 7 * 24 * 3600
DEFAULT_OVERLAP_SECONDS = 24 * 3600


class RotateIn(Strict):
    """How long the old secret keeps signing beside the new one."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"overlap_seconds": 3600}]})

    overlap_seconds: WholeNumber = Field(
        default=DEFAULT_OVERLAP_SECONDS,
        ge=0,
        le=MAX_OVERLAP_SECONDS,
        strict=True,
        examples=[3600],
        description="0 to 604800 (7 days); 0 stops the old secret at once",
    )


class WebhookDeliveryOut(BaseModel):
    """One event sent, or being sent, to a subscription."""

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: EventType
    state: OutboxState
    attempts: int
    last_status: int | None = Field(default=None, description="The endpoint's HTTP status")
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    created_at: datetime


class WebhookAttemptOut(BaseModel):
    """One POST of a delivery to the endpoint."""

    number: int = Field(description="1 for the first attempt, counted on across resends")
    started_at: datetime
    duration_ms: int
    status: int | None = Field(default=None, description="The endpoint's HTTP status")
    error: str | None = Field(default=None, description="Why it failed, if it did")
    response: str | None = Field(
        default=None, description="The first KiB of the endpoint's answer, as text"
    )
    state: OutboxState = Field(description="Where the attempt left the delivery")


class WebhookDeliveryDetail(WebhookDeliveryOut):
    attempt_log: list[WebhookAttemptOut] = Field(description="Every attempt, newest first")


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDeliveryOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; null on the last"
    )


class RecoverIn(Strict):
    """A window of events to send again: those not delivered, and those never queued."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"since": "2026-12-01T08:00:00Z"}]},
    )

    since: AwareUtcDatetime = Field(
        examples=["2026-12-01T08:00:00Z"], description="From this time (with its offset)"
    )
    until: AwareUtcDatetime | None = Field(
        default=None, description="Up to this time; now if not given"
    )


class RecoverOut(BaseModel):
    queued: int = Field(description="How many deliveries are now waiting to be sent")
    requeued: int = Field(description="Of them, given up or called off before, sent again")
    missed: int = Field(description="Of them, events never queued (made while it was disabled)")


class WebhookOut(BaseModel):
    """A subscription, without its secret."""

    id: uuid.UUID
    url: str
    events: list[str]
    organisation_id: str | None = None
    description: str | None = None
    state: SubscriptionState
    disabled_reason: str | None = None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The Standard Webhooks signing secret (`whsec_…`): shown this once only",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookRotated(WebhookOut):
    secret: str = Field(
        description="The new signing secret (`whsec_…`): shown this once only",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    previous_secret_until: datetime | None = Field(
        description="Until then every message is signed with the old secret too"
    )


class WebhookDetail(WebhookOut):
    deliveries: list[WebhookDeliveryOut] = Field(description="The most recent, newest first")


class WebhookList(BaseModel):
    items: list[WebhookOut]
