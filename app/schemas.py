"""Request and response bodies of the public API (kept apart from the tables)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.locate import normalise_postcode_or_part
from app.status import Status


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain the NUL character (U+0000)")
    return text


def _in_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


# PostgreSQL cannot hold NUL in a text column, and no person types one.
NoNul = Annotated[str, AfterValidator(_no_nul)]
Text = Annotated[NoNul, StringConstraints(strip_whitespace=True, min_length=1)]
# A time in UTC (taken as UTC when it has no zone); refused when UTC has no such time
# (year 1 at +01:00), which the database could not be asked about.
UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]
AwareUtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


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
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

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
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{7,20}$")] | None = None
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
    share_contact_details: bool = Field(
        default=False,
        description="The citizen agreed that the organisations handling the enquiry may "
        "receive their contact details. Without it they receive the enquiry only.",
    )


AttributeValue = str | int | float | bool | list[str]


class EnquiryIn(Strict):
    """An enquiry as a citizen, an agent, a kiosk or a partner system submits it."""

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


class DestinationOut(BaseModel):
    organisation_id: str
    organisation_name: str
    reason: str
    state: Literal["pending", "delivering", "delivered", "dead", "cancelled"]
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


class TimelineEvent(BaseModel):
    at: datetime
    type: str = Field(examples=["dispatch.delivered"])
    status: str | None = None
    organisation_id: str | None = None
    detail: str | None = None


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


class EnquirySummary(BaseModel):
    reference: str
    service_code: str
    status: str
    channel: str
    created_at: datetime
    updated_at: datetime


class EnquiryPage(BaseModel):
    items: list[EnquirySummary]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; absent on the last"
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


class Subject(Strict):
    """A citizen, named by the email or phone number they gave (either, or both)."""

    email: EmailStr | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{7,20}$")] | None = None

    @model_validator(mode="after")
    def _named(self) -> Subject:
        if self.email is None and self.phone is None:
            raise ValueError("give the citizen's email, phone, or both")
        return self


class SharedWith(BaseModel):
    """An organisation that received the enquiry, and which of the citizen's details."""

    organisation_id: str
    organisation_name: str
    delivered_at: datetime | None = None
    remote_reference: str | None = None
    citizen_fields: list[str] = Field(
        description="The citizen's details it was sent under its data-sharing agreement "
        "(as configured now); empty when the citizen did not consent to sharing them."
    )


class StatusUpdateOut(BaseModel):
    organisation_id: str
    their_status: str
    status: str | None = None
    description: str | None = None
    updated_at: datetime
    received_via: str


class EnquiryExport(EnquiryOut):
    """Everything held about one enquiry: its record, who received it, what they said."""

    consent: dict[str, Any] | None = None
    shared_with: list[SharedWith]
    status_updates: list[StatusUpdateOut]


class SubjectAccessExport(BaseModel):
    """A subject access export (UK GDPR Article 15): every enquiry the citizen made."""

    generated_at: datetime
    matched_by: list[str] = Field(examples=[["email"]])
    enquiries: list[EnquiryExport]


class ErasureNotice(BaseModel):
    organisation_id: str
    reference: str
    remote_reference: str | None = None


class ErasureOut(BaseModel):
    """What an erasure did: the enquiries anonymised and the organisations told."""

    erased_at: datetime
    references: list[str]
    organisations_told: list[ErasureNotice]


class AuditEntryOut(BaseModel):
    id: uuid.UUID
    at: datetime
    actor: str
    actor_id: str | None = None
    action: str = Field(examples=["enquiry.read", "privacy.export", "privacy.erase"])
    subject: str | None = None
    detail: dict[str, Any] | None = None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; absent on the last"
    )


# The families of timeline event a webhook subscription may name (docs/webhooks.md).
EVENT_FAMILIES = ("enquiry", "dispatch", "status", "privacy")
_EVENT_PATTERN = re.compile(r"^(\*|[a-z]+(\.[a-z_]+)?|[a-z]+\.\*)$")


class WebhookIn(Strict):
    """A partner's endpoint, and which events it wants."""

    url: str = Field(
        max_length=2000,
        examples=["https://partner.example.org/iap/events"],
        description="Where events are POSTed: https (plain http only outside production)",
    )
    events: list[str] = Field(
        min_length=1,
        max_length=50,
        examples=[["enquiry.*", "privacy.erasure_requested"]],
        description='Event types, or a family of them ("enquiry.*"), or "*" for every event',
    )
    organisation_id: str | None = Field(
        default=None,
        max_length=64,
        description="Only events about enquiries routed to this organisation",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; the signature proves who sent it")
        return url

    @field_validator("events")
    @classmethod
    def _patterns(cls, events: list[str]) -> list[str]:
        for pattern in events:
            family = pattern.split(".", 1)[0]
            if not _EVENT_PATTERN.fullmatch(pattern) or family not in (*EVENT_FAMILIES, "*"):
                families = ", ".join(f"{f}.*" for f in EVENT_FAMILIES)
                raise ValueError(f"{pattern!r} is not an event type or one of {families}, *")
        return sorted(set(events))


class WebhookDeliveryOut(BaseModel):
    """One event sent, or being sent, to a subscription."""

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    state: Literal["pending", "delivering", "delivered", "dead", "cancelled"]
    attempts: int
    last_status: int | None = Field(default=None, description="The endpoint's HTTP status")
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    created_at: datetime


class WebhookOut(BaseModel):
    """A subscription, without its secret."""

    id: uuid.UUID
    url: str
    events: list[str]
    organisation_id: str | None = None
    state: Literal["active", "disabled"]
    disabled_reason: str | None = None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The Standard Webhooks signing secret (`whsec_…`): shown this once only",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class WebhookDetail(WebhookOut):
    deliveries: list[WebhookDeliveryOut] = Field(description="The most recent, newest first")


class WebhookList(BaseModel):
    items: list[WebhookOut]
