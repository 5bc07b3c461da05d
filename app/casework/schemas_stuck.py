"""Response bodies of the stuck-work report."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from app.core.vocabulary import OutboxState, StuckKind


class StuckItem(BaseModel):
    """One delivery that needs a person: which, why, since when and how long over."""

    dispatch_id: uuid.UUID
    reference: str
    service_code: str
    organisation_id: str
    organisation_name: str
    kind: StuckKind
    state: OutboxState
    remote_status: str | None = None
    since: datetime = Field(description="When the clock this kind counts on started")
    due: datetime = Field(description="When it became stuck (since + the threshold)")
    over_seconds: float = Field(description="How long past `due` it is now")


class StuckReport(BaseModel):
    at: datetime
    counts: dict[StuckKind, int] = Field(description="How many of each kind")
    items: list[StuckItem] = Field(description="Longest over first")
