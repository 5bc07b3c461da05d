"""Response bodies of the catalogue: services, organisations and their circuits."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
)


class AttributeOut(BaseModel):
    code: str
    description: str
    datatype: str
    required: bool
    values: list[dict[str, str]] = []


class ServiceOut(BaseModel):
    code: str
    name: str
    group: str
    description: str
    lgsl: int | None
    tiers: list[str]
    needs_location: bool
    attributes: list[AttributeOut]


class CircuitOut(BaseModel):
    state: Literal["closed", "open", "half_open"] = Field(
        description="open: deliveries wait for the cool-down; half_open: the next one tests it"
    )
    failures: int = Field(description="Failed attempts in the current window")
    open_until: datetime | None = None
    last_error: str | None = None


class StatusUpdatesOut(BaseModel):
    pushed_by: Literal["webhook", "open311"] | None = Field(
        default=None, description="How the organisation pushes updates to us, if it does"
    )
    poll_seconds: float | None = Field(
        default=None, description="How often we ask it for updates; null: we do not poll"
    )
    next_poll_at: datetime | None = None
    last_poll_error: str | None = None


class OrganisationOut(BaseModel):
    id: str
    name: str
    kind: str
    areas: list[str]
    adapter: str
    shares: list[str] = Field(
        description="The citizen's details it may receive, and only with their consent"
    )
    max_concurrent: int = Field(description="At most this many calls to it at once")
    unverified_repeats: int | None = Field(
        default=None,
        description="Deliveries made after more than one attempt to a back-office whose repeats"
        " cannot be recognised (Open311 with `lookup: false`): each may have left a second case"
        " there, for a person to check. Null where repeats are recognised.",
    )
    circuit: CircuitOut
    status_updates: StatusUpdatesOut
