"""Request and response bodies of enquiries: submitted, read back, listed."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.catalogue.locate import normalise_postcode_or_part
from app.catalogue.status import Status
from app.core.types import Strict, Text
from app.core.vocabulary import (
    AlertChannel,
    AlertKind,
    EventType,
    MessageKind,
    OutboxState,
    Outcome,
)

# A phone number as people type it; app.core.crypto.normalise_phone finds it however written.
PHONE_PATTERN = r"^\+?[0-9 ()-]{7,20}$"


class Channel(StrEnum):
    """How the enquiry reached us: kept for service design and to reach people the same way."""

    web = "web"
    phone = "phone"
    email = "email"
    face_to_face = "face_to_face"
    kiosk = "kiosk"
    partner = "partner"
    letter = "letter"
    app = "app"
    social_media = "social_media"


class PreferredContact(StrEnum):
    email = "email"
    phone = "phone"
    post = "post"
    none = "none"


class Location(Strict):
    postcode: Annotated[str, StringConstraints(max_length=10)] | None = Field(
        default=None, examples=["OX1 1BX"]
    )
    address: Annotated[Text, StringConstraints(max_length=300)] | None = None
    uprn: Annotated[str, StringConstraints(pattern=r"^\d{1,12}$")] | None = Field(
        default=None, description="Unique Property Reference Number"
    )
    lat: float | None = Field(default=None, ge=-90, le=90, strict=True)
    lon: float | None = Field(default=None, ge=-180, le=180, strict=True)

    @field_validator("postcode")
    @classmethod
    def _uk_postcode(cls, value: str | None) -> str | None:
        if value is None:
            return None
        normalised = normalise_postcode_or_part(value)
        if normalised is None:
            raise ValueError(
                f"'{value}' is not a UK postcode, like OX1 1BX, or the start of one, like OX14"
            )
        return normalised

    @model_validator(mode="after")
    def _whole_point(self) -> Location:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        return self

    def is_empty(self) -> bool:
        return not any((self.postcode, self.address, self.uprn, self.lat is not None))


class Citizen(Strict):
    name: Annotated[Text, StringConstraints(max_length=200)] | None = None
    email: EmailStr | None = None
    phone: Annotated[str, StringConstraints(pattern=PHONE_PATTERN)] | None = None
    preferred_contact: PreferredContact | None = None
    accessibility_needs: Annotated[Text, StringConstraints(max_length=500)] | None = Field(
        default=None, examples=["Needs a BSL interpreter; large print letters"]
    )
    language: (
        Annotated[
            str, StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=35)
        ]
        | None
    ) = Field(default=None, description="BCP 47 language tag", examples=["cy", "pl"])

    @model_validator(mode="after")
    def _reachable_as_preferred(self) -> Citizen:
        if self.preferred_contact is PreferredContact.email and self.email is None:
            raise ValueError("preferred_contact is email, but no email was given")
        if self.preferred_contact is PreferredContact.phone and self.phone is None:
            raise ValueError("preferred_contact is phone, but no phone was given")
        return self


class Consent(Strict):
    # strict: consent is given by true, never by 1 or "yes" (JSON Schema's boolean).
    share_contact_details: bool = Field(
        default=False,
        strict=True,
        description="The citizen agreed that the organisations handling the enquiry may "
        "receive their contact details. Without it they receive the enquiry only.",
    )
    send_updates: bool = Field(
        default=False,
        strict=True,
        description="The citizen agreed to be sent an acknowledgement and news of progress "
        "by their preferred contact (email, or a text to their phone). Without it, nothing is "
        "sent to them.",
    )


AttributeValue = str | int | float | bool | list[str]


class EnquiryIn(Strict):
    """An enquiry as a citizen, an agent, a kiosk or a partner system submits it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "service_code": "pothole",
                    "description": "Deep pothole outside the post office; cyclists swerve round it",
                    "channel": "web",
                    "location": {"postcode": "OX14 3JE", "address": "12 Bath Street, Abingdon"},
                    "citizen": {
                        "name": "Sam Taylor",
                        "email": "sam.taylor@example.org",
                        "preferred_contact": "email",
                    },
                    "attributes": {"road_or_pavement": "road", "depth_cm": 8},
                    "consent": {"share_contact_details": True, "send_updates": True},
                }
            ]
        }
    )

    service_code: Annotated[str, StringConstraints(max_length=64)] = Field(examples=["pothole"])
    description: Annotated[Text, StringConstraints(max_length=4000)]
    channel: Channel
    location: Location | None = None
    citizen: Citizen | None = None
    attributes: dict[Annotated[str, StringConstraints(max_length=64)], AttributeValue] = Field(
        default_factory=dict, max_length=50
    )
    consent: Consent = Field(default_factory=Consent)


class Advice(BaseModel):
    code: str
    message: str


class AttemptOut(BaseModel):
    """One try at delivering to an organisation."""

    number: int
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    outcome: Outcome
    error: str | None = Field(
        default=None,
        description="Why it failed: the back-office's own error for staff "
        "(enquiries:read-all), otherwise only its kind (retrying, or given up)",
    )


class DestinationOut(BaseModel):
    organisation_id: str
    organisation_name: str
    reason: str
    state: OutboxState
    attempts: int
    last_error: str | None = Field(
        default=None,
        description="Why the last attempt failed: the back-office's own error for staff "
        "(enquiries:read-all), otherwise only its kind (retrying, or given up)",
    )
    remote_reference: str | None = None
    remote_status: Status | None = Field(
        default=None, description="The organisation's latest reported status, in our words"
    )
    remote_status_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    attempt_log: list[AttemptOut] = Field(
        default=[], description="Each delivery attempt so far, oldest first"
    )
    follow_ups: list[FollowUpOut] | None = Field(
        default=None,
        description="Information, withdrawals and reopenings carried to this organisation, "
        "oldest first (staff only)",
    )


class FollowUpOut(BaseModel):
    """One message on its way to one organisation's back-office."""

    message_id: uuid.UUID
    kind: MessageKind
    state: OutboxState
    attempts: int
    delivered_at: datetime | None = None
    remote_reference: str | None = Field(
        default=None, description="The back-office's own id for the update, when it gave one"
    )


class AttachmentOut(BaseModel):
    """A photo or document kept with the enquiry (re-encoded: no EXIF left)."""

    id: uuid.UUID
    content_type: str = Field(examples=["image/jpeg"])
    size: int = Field(description="Bytes of the file as kept")
    filename: str = Field(description="Ours, never the uploader's", examples=["photo-1.jpg"])


class MessageOut(BaseModel):
    """Something said after submission: information, a withdrawal, a reopening, or a staff
    note (staff only, never forwarded)."""

    id: uuid.UUID
    kind: MessageKind
    created_at: datetime
    text: str | None = Field(default=None, description="What was said (absent once erased)")
    attachments: list[AttachmentOut] = []
    by_citizen: bool = Field(description="Said by the citizen, else by staff or a client for them")
    actor: str | None = Field(
        default=None, description="The person who said it, for staff (enquiries:read-all) only"
    )


class EnquiryBase(BaseModel):
    reference: str = Field(examples=["K7Q-M4X-PB6"])
    status: str
    service_code: str
    destinations: list[DestinationOut]
    advice: list[Advice] = []
    created_at: datetime


class EnquiryCreated(EnquiryBase):
    access_token: str = Field(
        description="Give this to the citizen: with the reference it lets them follow the "
        "enquiry without an account (GET /v1/enquiries/{reference}?token=...). Shown only here."
    )


class AlertOut(BaseModel):
    """One message to the citizen (docs/alerts.md), as staff see it: never its address or text."""

    kind: AlertKind
    channel: AlertChannel
    status: str | None = Field(default=None, description="The status it told, if any")
    state: OutboxState
    attempts: int
    created_at: datetime
    delivered_at: datetime | None = None


class TimelineEvent(BaseModel):
    at: datetime
    type: EventType
    status: str | None = None
    organisation_id: str | None = None
    detail: str | None = None
    actor: str | None = Field(
        default=None,
        description="The person (or API client) who did it, for staff (enquiries:read-all) "
        "only; absent when the gateway did it",
    )


class EnquiryOut(EnquiryBase):
    channel: str
    description: str
    location: dict[str, Any] | None = None
    place: dict[str, Any] | None = None
    citizen: dict[str, Any] | None = None
    attributes: dict[str, Any] = {}
    updated_at: datetime
    closed_at: datetime | None = None
    anonymised_at: datetime | None = Field(
        default=None,
        description="When the citizen's personal data was removed (retention or erasure).",
    )
    timeline: list[TimelineEvent]
    messages: list[MessageOut] = Field(
        default=[],
        description="What was said after submission, oldest first: the citizen sees "
        "information, withdrawals and reopenings; staff see notes too, and who said each",
    )
    attachments: list[AttachmentOut] = Field(
        default=[], description="Every photo and document added, oldest first"
    )
    alerts: list[AlertOut] | None = Field(
        default=None,
        description="Staff with enquiries:read-all only: the messages sent (or to be sent) "
        "to the citizen, oldest first",
    )


class EnquirySummary(BaseModel):
    reference: str
    service_code: str
    status: str
    channel: str
    postcode: str | None = Field(
        default=None,
        description="Where it is, as a postcode (or the start of one) only: never a street address",
    )
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None


class EnquiryPage(BaseModel):
    items: list[EnquirySummary]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; absent on the last"
    )
