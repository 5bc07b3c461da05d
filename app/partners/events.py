"""The partner event catalogue: one versioned payload model per event type, with an example.

Every message is a Standard Webhooks payload: `type` (an `EventType`, which names the schema
of `data`), `version` (of that schema), `timestamp` (when the event happened, not when this
attempt was sent: that is the `webhook-timestamp` header) and `data`. app.partners.sender
builds the bodies; these models say what they hold, for the OpenAPI document's `webhooks`
(app.api.openapi) and docs/webhooks.md (scripts/event_catalogue.py), and a test validates what
the sender really sends against them.

The promise within a version: fields may be added (to the envelope, to `data`, to the stuck
summary's counts), so a receiver must ignore what it does not know; no field is removed,
renamed, or changed in type or meaning. A change that would break a reader gets a new version
number and models of its own (`EnquiryReceivedV2`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date
from functools import cache
from typing import Annotated, Any, Literal, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, create_model
from pydantic.json_schema import SkipJsonSchema

from app.catalogue.status import Status
from app.core.reference import ALPHABET
from app.core.vocabulary import EventType, StuckKind

EVENT_VERSION = 1  # of every event type's payload; the `version` of every message


class _Open(BaseModel):
    """A part of a message: fields may be added within a version, so readers keep what they
    know and ignore the rest."""

    model_config = ConfigDict(extra="allow")


_CHARACTER = f"[{ALPHABET}]"
Reference = Annotated[
    str,
    StringConstraints(pattern=f"^{_CHARACTER}{{3}}-{_CHARACTER}{{3}}-{_CHARACTER}{{3}}$"),
    Field(
        description="The enquiry's reference, as the citizen was given it", examples=["K7Q-M4X-PB6"]
    ),
]
EventId = Annotated[
    uuid.UUID,
    Field(description="The event's id; `webhook-id` is `msg_` and its 32 hex digits"),
]
EnquiryStatus = Annotated[
    Status, Field(description="The enquiry's status when the message was sent")
]
Detail = Annotated[
    str | None,
    Field(
        description="What happened, in words for a person; null where this feed may not see "
        "it (one organisation's feed, of a line about another's part)"
    ),
]


class EnquiryEventDataV1(_Open):
    """What every event about one enquiry carries: never the citizen's name, email, phone or
    address (read the enquiry with the right scope for those)."""

    reference: Reference
    event_id: EventId
    enquiry_status: EnquiryStatus
    organisation_id: str | None = Field(description="The organisation whose part this is about")
    dispatch_id: uuid.UUID | None = Field(description="That organisation's part (its delivery)")
    status: Status | None = Field(description="The status this event set, if any")
    detail: Detail


class WholeEnquiryDataV1(EnquiryEventDataV1):
    """An event about the enquiry as a whole: it names no organisation and no part."""

    organisation_id: None = Field(description="Always null: about the enquiry as a whole")
    dispatch_id: None = Field(description="Always null: about the enquiry as a whole")


class EnquiryStatusDataV1(WholeEnquiryDataV1):
    """The enquiry as a whole moved to a status (`enquiry.received` is its first, `routed`)."""

    status: Status = Field(description="The enquiry's new status")


class TriageDataV1(EnquiryEventDataV1):
    """The triage desk moved the enquiry on: an organisation sent it there, or a person there
    handed it on or corrected its place."""

    organisation_id: str | None = Field(
        description="The triage desk's organisation id; null for `enquiry.relocated`"
    )
    dispatch_id: uuid.UUID | None = Field(
        description="The triage desk's part; null for `enquiry.rerouted`, made before it"
    )
    status: None = Field(description="Always null")


class PartDataV1(EnquiryEventDataV1):
    """About one organisation's part: its delivery, a follow-up to it, or an erasure request."""

    organisation_id: str = Field(description="The organisation whose part this is about")
    dispatch_id: uuid.UUID = Field(description="That organisation's part (its delivery)")
    status: None = Field(description="Always null")


class StatusUpdateDataV1(EnquiryEventDataV1):
    """One organisation reported progress on its part."""

    organisation_id: str = Field(description="The organisation that reported it")
    dispatch_id: uuid.UUID = Field(description="Its part")
    status: Status | None = Field(
        description="Its status in the gateway's vocabulary; null for a word the gateway does "
        "not know (`detail` has the words it used)"
    )


Counts = dict[StuckKind, int]


def _absent_when_not_sent(schema: dict[str, Any]) -> None:
    """Left out, not null: the schema has no default (a null one would not be its type)."""
    schema.pop("default", None)


class StuckCountsV1(_Open):
    """How much work is stuck, by why (the kinds of `GET /v1/stuck`)."""

    day: date = Field(description="The day (UTC) the summary is of")
    total: int = Field(ge=0, description="Deliveries stuck, each counted once")
    by_kind: Counts = Field(description="Every kind, with 0 where none is stuck")
    by_organisation: dict[str, Counts] | SkipJsonSchema[None] = Field(
        default=None,
        description="Only in the whole gateway's summary (absent from one organisation's): "
        "each organisation with stuck work, and its kinds that are not 0",
        json_schema_extra=_absent_when_not_sent,
    )


class StuckSummaryDataV1(_Open):
    """The day's stuck work, whole or one organisation's: counts only, no enquiry, no one."""

    event_id: EventId
    organisation_id: str | None = Field(
        description="The organisation the summary is of; null: the whole gateway's"
    )
    detail: str = Field(description="The counts in words")
    summary: StuckCountsV1 = Field(description="The counts")


class PingDataV1(_Open):
    """A test message (`POST /v1/webhooks/{id}/test`): about nothing."""

    event_id: EventId
    organisation_id: None = Field(description="Always null")
    detail: str = Field(description="Says it is a test")
    summary: None = Field(description="Always null")


class SubscriptionDataV1(_Open):
    """A subscription of the same client was disabled or enabled again: which, and why."""

    event_id: EventId
    detail: str = Field(description="What happened and why (the endpoint's failures, a 410)")
    subscription_id: uuid.UUID = Field(description="The subscription it is about")


# One per status (`received` is `enquiry.received`, whose status is `routed`).
_WHOLE = tuple(EventType.enquiry_status(status) for status in Status)
_DATA: Mapping[EventType, type[BaseModel]] = {
    **dict.fromkeys(_WHOLE, EnquiryStatusDataV1),
    EventType.enquiry_information_added: WholeEnquiryDataV1,
    EventType.enquiry_anonymised: WholeEnquiryDataV1,
    EventType.enquiry_rerouted: TriageDataV1,
    EventType.enquiry_handed_on: TriageDataV1,
    EventType.enquiry_relocated: TriageDataV1,
    **{e: PartDataV1 for e in EventType if e.family in ("dispatch", "follow_up")},
    EventType.privacy_erasure_requested: PartDataV1,
    EventType.status_updated: StatusUpdateDataV1,
    EventType.work_stuck_summary: StuckSummaryDataV1,
    EventType.ping: PingDataV1,
    EventType.webhook_disabled: SubscriptionDataV1,
    EventType.webhook_enabled: SubscriptionDataV1,
}


def data_model(event: EventType) -> type[BaseModel]:
    """The model of an event type's `data`."""
    return _DATA[event]


def model_name(event: EventType) -> str:
    """An event type's payload model's name: `enquiry.received` → `EnquiryReceivedV1`."""
    words = event.value.replace(".", "_").split("_")
    return "".join(word.capitalize() for word in words) + f"V{EVENT_VERSION}"


@cache
def event_models() -> Mapping[EventType, type[BaseModel]]:
    """Every event type's payload model, in the enum's order."""
    return {event: _envelope(event) for event in EventType}


def event_model(event: EventType) -> type[BaseModel]:
    """The payload model of one event type."""
    return event_models()[event]


def _envelope(event: EventType) -> type[BaseModel]:
    kind: Any = cast(Any, Literal)[event.value]
    version: Any = cast(Any, Literal)[EVENT_VERSION]
    model: type[BaseModel] = create_model(
        model_name(event),
        __base__=_Open,
        __doc__=f"`{event}`: {event.when}.",
        type=(kind, Field(description="The event type; it names the schema of `data`")),
        version=(
            version,
            Field(
                description="The version of this type's payload schema; fields may be added "
                "within a version, never removed or changed in meaning"
            ),
        ),
        timestamp=(
            AwareDatetime,
            Field(
                description="When the event happened (ISO 8601, UTC), the same on every "
                "attempt; the attempt's time is the `webhook-timestamp` header"
            ),
        ),
        data=(data_model(event), Field(description="What happened")),
    )
    model.model_config["json_schema_extra"] = {"examples": [example(event)]}
    model.model_rebuild(force=True)
    return model


# --- examples: an Oxfordshire pothole, one event of each type -------------------------------

_REFERENCE = "K7Q-M4X-PB6"
_EVENT_ID = "4b0c6f0e-2d8a-4b7f-9a61-c3e2b5d7f901"
_DISPATCH_ID = "0d7e5a3c-91b4-4c2e-8f6a-2b1d9e7c4a55"
_SUBSCRIPTION_ID = "9f3b2a71-6c0d-4e58-b1a4-7d2e8c6f0b13"
_COUNTY = "oxfordshire-county"
_TRIAGE = "contact-centre"
_COUNTY_NAME = "Oxfordshire County Council"
_TIMESTAMP = "2026-11-26T10:17:36.120511+00:00"

_EXAMPLE_DETAIL: Mapping[EventType, str | None] = {
    EventType.enquiry_received: f"{_COUNTY}: potholes are a county service; {_COUNTY_NAME} "
    "covers OX4 1AA",
    EventType.enquiry_routed: "the enquiry is now routed",
    EventType.enquiry_dispatched: "every organisation has received it",
    EventType.enquiry_failed: "it could not be delivered everywhere; the contact centre can "
    "see why",
    EventType.enquiry_acknowledged: "the enquiry is now acknowledged",
    EventType.enquiry_in_progress: "the enquiry is now in progress",
    EventType.enquiry_action_scheduled: "the enquiry is now action scheduled",
    EventType.enquiry_resolved: "the enquiry is now resolved",
    EventType.enquiry_closed: "the enquiry is now closed",
    EventType.enquiry_not_our_responsibility: "the enquiry is now not our responsibility",
    EventType.enquiry_duplicate: "the enquiry is now duplicate",
    EventType.enquiry_cancelled: "the enquiry is now cancelled",
    EventType.enquiry_withdrawn: f"the enquiry was withdrawn; it is being sent to {_COUNTY_NAME}",
    EventType.enquiry_reopened: f"the enquiry was reopened; it is being sent to {_COUNTY_NAME}",
    EventType.enquiry_information_requested: "the enquiry is now information requested",
    EventType.enquiry_information_added: "more information was added with 1 file; it is being "
    f"sent to {_COUNTY_NAME}",
    EventType.enquiry_anonymised: "personal data removed: the citizen asked for erasure",
    EventType.enquiry_rerouted: f"{_COUNTY_NAME} said it is not theirs (private road); sent to "
    "Oxfordshire Contact Centre (triage desk) to find the right organisation",
    EventType.enquiry_handed_on: f"handed on to {_COUNTY_NAME}: the road was adopted in 2024",
    EventType.enquiry_relocated: f"the place is now OX4 1AA (postcode); routed again to {_COUNTY}",
    EventType.dispatch_delivered: f"{_COUNTY_NAME} accepted it as OCC-2026-004512",
    EventType.dispatch_retry: "the delivery failed for now; it will be retried",
    EventType.dispatch_dead: "the delivery was given up; the contact centre is following it up",
    EventType.dispatch_cancelled: f"not sent to {_COUNTY_NAME}: the enquiry's personal data "
    "was removed",
    EventType.dispatch_redriven: f"sent again to {_COUNTY_NAME} after it was given up; its "
    "attempts start again",
    EventType.dispatch_handled: "phoned through to the highways duty officer",
    EventType.follow_up_delivered: f"the withdrawal reached {_COUNTY_NAME}",
    EventType.follow_up_dead: "the withdrawal was given up; the contact centre is following it up",
    EventType.follow_up_cancelled: f"the information was not sent to {_COUNTY_NAME}: its part "
    "is over",
    EventType.status_updated: f"{_COUNTY_NAME}: investigating (a highways inspector will visit)",
    EventType.privacy_erasure_requested: f"erase the citizen's details held for {_REFERENCE} "
    "(your reference OCC-2026-004512)",
    EventType.work_stuck_summary: "2026-12-03: 3 stuck: 1 dead, 2 unacknowledged",
    EventType.ping: "A test message: the subscription's endpoint and secret work.",
    EventType.webhook_disabled: "every attempt failed from 2026-11-21T10:17:36+00:00 to "
    "2026-11-26T10:17:36+00:00 (5 days or more) with none delivered",
    EventType.webhook_enabled: "The subscription was enabled again: events from now on are "
    "sent to it.",
}
# The enquiry's status when each example was sent, where not the status the event set.
_EXAMPLE_ENQUIRY_STATUS: Mapping[EventType, Status] = {
    EventType.enquiry_received: Status.routed,
    EventType.enquiry_information_added: Status.in_progress,
    EventType.enquiry_anonymised: Status.closed,
    EventType.enquiry_rerouted: Status.routed,
    EventType.enquiry_handed_on: Status.routed,
    EventType.enquiry_relocated: Status.routed,
    EventType.dispatch_delivered: Status.dispatched,
    EventType.dispatch_retry: Status.routed,
    EventType.dispatch_dead: Status.failed,
    EventType.dispatch_cancelled: Status.cancelled,
    EventType.dispatch_redriven: Status.routed,
    EventType.dispatch_handled: Status.dispatched,
    EventType.follow_up_delivered: Status.withdrawn,
    EventType.follow_up_dead: Status.withdrawn,
    EventType.follow_up_cancelled: Status.resolved,
    EventType.status_updated: Status.in_progress,
    EventType.privacy_erasure_requested: Status.closed,
}


def example(event: EventType) -> dict[str, Any]:
    """A realistic message of this type, as a partner receives it (its JSON, parsed)."""
    return {
        "type": event.value,
        "version": EVENT_VERSION,
        "timestamp": _TIMESTAMP,
        "data": _example_data(event),
    }


def _example_data(event: EventType) -> dict[str, Any]:
    model, detail = data_model(event), _EXAMPLE_DETAIL[event]
    if model is PingDataV1:
        return {"event_id": _EVENT_ID, "organisation_id": None, "detail": detail, "summary": None}
    if model is SubscriptionDataV1:
        return {"event_id": _EVENT_ID, "detail": detail, "subscription_id": _SUBSCRIPTION_ID}
    if model is StuckSummaryDataV1:
        return {
            "event_id": _EVENT_ID,
            "organisation_id": None,
            "detail": detail,
            "summary": {
                "day": "2026-12-03",
                "total": 3,
                "by_kind": {kind.value: 0 for kind in StuckKind} | {"dead": 1, "unacknowledged": 2},
                "by_organisation": {
                    _COUNTY: {"dead": 1},
                    "thames-valley-police": {"unacknowledged": 2},
                },
            },
        }
    status = _example_status(event)
    organisation, dispatch = _example_part(event, model)
    return {
        "reference": _REFERENCE,
        "event_id": _EVENT_ID,
        "enquiry_status": _EXAMPLE_ENQUIRY_STATUS.get(event, status),
        "organisation_id": organisation,
        "dispatch_id": dispatch,
        "status": status,
        "detail": detail,
    }


def _example_status(event: EventType) -> Status | None:
    if event is EventType.enquiry_received:
        return Status.routed
    if event is EventType.status_updated:
        return Status.in_progress
    if data_model(event) is EnquiryStatusDataV1:
        return Status(event.value.removeprefix("enquiry."))
    return None


def _example_part(event: EventType, model: type[BaseModel]) -> tuple[str | None, str | None]:
    if event is EventType.enquiry_relocated:
        return None, _DISPATCH_ID
    if event is EventType.enquiry_rerouted:
        return _TRIAGE, None
    if model is TriageDataV1:
        return _TRIAGE, _DISPATCH_ID
    if model in (PartDataV1, StatusUpdateDataV1):
        return _COUNTY, _DISPATCH_ID
    return None, None
