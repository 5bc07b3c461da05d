"""The triage desk's request and answer bodies."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.catalogue.status import Status
from app.core.types import Strict, Text
from app.intake.schemas import DestinationOut, Location


class TriageOrder(StrEnum):
    """How the queue is sorted (by when each item reached the desk; there are no service
    targets to sort by yet)."""

    oldest = "oldest"
    newest = "newest"


class Candidate(BaseModel):
    """An organisation that could be the right one, and why."""

    organisation_id: str | None = Field(
        description="Null for a council outside this gateway's partners: signpost the caller"
    )
    organisation_name: str
    evidence: str = Field(examples=["231 of 277 postcodes in sector OX14 3"])
    postcodes: int | None = Field(
        default=None, description="Its postcodes in the straddling sector or district"
    )


class SaidNotOurs(BaseModel):
    """The organisation that sent the enquiry back, and its words."""

    organisation_id: str
    organisation_name: str
    words: str | None = Field(description="What it said (its status update's description)")
    sent_because: str = Field(description="Why the enquiry had been sent to it")


class PlaceSummary(BaseModel):
    """Where the enquiry is, without a street address."""

    postcode: str | None = None
    precision: str = "none"


class TriageItem(BaseModel):
    reference: str
    service_code: str
    service_name: str
    status: Status
    reason: str = Field(
        description="Why it is at the desk: the router's reason, or who said it is not theirs"
    )
    said_not_ours: SaidNotOurs | None = None
    waiting_since: datetime
    waiting_seconds: int
    place: PlaceSummary
    claimed_by: str | None = Field(default=None, description="Who holds it now (a name)")
    claimed_until: datetime | None = None
    candidates: list[Candidate]


class TriagePage(BaseModel):
    items: list[TriageItem]
    next_cursor: str | None = None


class ClaimOut(BaseModel):
    reference: str
    claimed_by: str
    claimed_until: datetime


OrganisationId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class HandOnIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "organisations": ["oxfordshire-county"],
                    "reason": "A pothole on a county road: the county's highways team",
                }
            ]
        }
    )

    organisations: list[OrganisationId] = Field(min_length=1, max_length=5)
    reason: Annotated[Text, StringConstraints(max_length=500)]

    @field_validator("organisations")
    @classmethod
    def _once_each(cls, ids: list[str]) -> list[str]:
        if len(set(ids)) != len(ids):
            raise ValueError("name each organisation once")
        return ids


class RelocateIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"location": {"postcode": "OX1 1BX", "address": "St Aldate's, Oxford"}}]
        }
    )

    location: Location


class CloseIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "outcome": "outside_remit",
                    "note": "A private road: told the caller to contact the residents' association",
                }
            ]
        }
    )

    outcome: Literal["first_contact", "outside_remit"] = Field(
        description="first_contact: resolved at the desk (the note is the advice given); "
        "outside_remit: no partner's work (the note is the signposting given)"
    )
    note: Annotated[Text, StringConstraints(max_length=2000)]


class TriageActOut(BaseModel):
    """The enquiry after an act at the desk."""

    reference: str
    status: Status
    still_at_triage: bool = Field(description="True while the desk still holds the enquiry")
    destinations: list[DestinationOut]
