"""Request and response bodies of the dead-letter desk (dispatches and webhook deliveries)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.types import AwareUtcDatetime, NoNul, Strict
from app.core.vocabulary import EventType, OutboxState

_NEXT = "Pass as `cursor` for the next page; absent on the last"


class DispatchOut(BaseModel):
    """One delivery of an enquiry to one organisation, as the desk sees it: no citizen's
    details, the back-office's error in full (staff only reach this)."""

    id: uuid.UUID
    reference: str = Field(description="The enquiry's reference")
    service_code: str
    organisation_id: str
    organisation_name: str
    state: OutboxState
    reason: str = Field(description="Why the router sent the enquiry to this organisation")
    attempts: int = Field(description="Attempts since it was made, or since it was last redriven")
    last_error: str | None = Field(default=None, description="Why the last attempt failed")
    remote_reference: str | None = None
    redriven_at: datetime | None = Field(
        default=None, description="When a person last sent it again after it was given up"
    )
    closure_note: str | None = Field(
        default=None, description="A `handled` delivery: how it was seen to outside the gateway"
    )
    closed_by: str | None = Field(default=None, description="Who closed it (`staff:<id>`)")
    created_at: datetime
    updated_at: datetime
    age_seconds: float = Field(description="Since it was made")


class DispatchPage(BaseModel):
    items: list[DispatchOut]
    next_cursor: str | None = Field(default=None, description=_NEXT)


class BulkRedriveIn(Strict):
    """Every given-up delivery to one organisation since a time: after its fault was fixed."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"organisation": "oxfordshire-county", "since": "2026-12-02T09:00:00Z"}]
        }
    )

    organisation: NoNul = Field(min_length=1, max_length=64, examples=["oxfordshire-county"])
    since: AwareUtcDatetime = Field(
        description="Given up at or after this time (with its time zone)",
        examples=["2026-12-02T09:00:00Z"],
    )


class BulkRedriveOut(BaseModel):
    count: int
    ids: list[uuid.UUID] = Field(description="The deliveries sent again, oldest first")


class CloseIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"note": "Rang the county's highways duty officer and read it out"}]
        }
    )

    note: NoNul = Field(
        min_length=1,
        max_length=2000,
        description="How it was seen to outside the gateway (rang the police, posted it, ...)",
    )


class WebhookDeliveryRow(BaseModel):
    """One event on its way to one webhook subscription."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    organisation_id: str | None = Field(
        default=None, description="The subscription's organisation, if it has one"
    )
    event_id: uuid.UUID
    event_type: EventType
    state: OutboxState
    attempts: int
    last_status: int | None = Field(default=None, description="The endpoint's last HTTP status")
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime
    age_seconds: float


class WebhookDeliveryPage(BaseModel):
    items: list[WebhookDeliveryRow]
    next_cursor: str | None = Field(default=None, description=_NEXT)
