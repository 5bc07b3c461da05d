"""The canonical status vocabulary, and how each organisation's own words map onto it."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    received = "received"
    routed = "routed"
    dispatched = "dispatched"
    acknowledged = "acknowledged"
    in_progress = "in_progress"
    action_scheduled = "action_scheduled"
    resolved = "resolved"
    closed = "closed"
    not_our_responsibility = "not_our_responsibility"
    duplicate = "duplicate"
    cancelled = "cancelled"
    failed = "failed"


# How far along an enquiry is; an enquiry with several destinations is as far as the least
# advanced of them. Duplicate and cancelled end the work as closed does.
PROGRESS: dict[Status, int] = {
    Status.received: 0,
    Status.routed: 1,
    Status.failed: 1,
    Status.dispatched: 2,
    Status.acknowledged: 3,
    Status.in_progress: 4,
    Status.action_scheduled: 5,
    Status.resolved: 6,
    Status.closed: 7,
    Status.duplicate: 7,
    Status.cancelled: 7,
    Status.not_our_responsibility: 7,
}

# Open311 GeoReport v2 and the mySociety extension's words, as FixMyStreet's partners use them.
OPEN311_WORDS: dict[str, Status] = {
    "open": Status.acknowledged,
    "investigating": Status.in_progress,
    "in_progress": Status.in_progress,
    "action_scheduled": Status.action_scheduled,
    "fixed": Status.resolved,
    "closed": Status.closed,
    "duplicate": Status.duplicate,
    "not_councils_responsibility": Status.not_our_responsibility,
    "no_further_action": Status.closed,
    "internal_referral": Status.not_our_responsibility,
    "cancelled": Status.cancelled,
    "reopen": Status.acknowledged,
    "for_triage": Status.acknowledged,
}

# HL7 FHIR R4 ServiceRequest.status.
FHIR_WORDS: dict[str, Status] = {
    "draft": Status.acknowledged,
    "active": Status.in_progress,
    "on-hold": Status.in_progress,
    "completed": Status.resolved,
    "revoked": Status.cancelled,
    "entered-in-error": Status.cancelled,
}
