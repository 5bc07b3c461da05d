"""The canonical status vocabulary, and how each back-office's own words map onto it."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Status(StrEnum):
    """Where an enquiry, or one organisation's part of it, has got to."""

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
    # The citizen (or an agent for them) called it off; every back-office holding it was told.
    withdrawn = "withdrawn"
    # Opened again after it was resolved or closed ("you said fixed but it isn't").
    reopened = "reopened"
    # A back-office asked the citizen something ("which side of the road?").
    information_requested = "information_requested"


# An organisation's part is over once it reports one of these.
FINAL: frozenset[Status] = frozenset(
    {
        Status.resolved,
        Status.closed,
        Status.not_our_responsibility,
        Status.duplicate,
        Status.cancelled,
        Status.withdrawn,
    }
)

# How far along each status is; an enquiry sent to several organisations shows the one least
# far along, so it never looks finished while one of them still has work to do.
PROGRESS: Mapping[Status, int] = {
    Status.received: 0,
    Status.routed: 1,
    Status.failed: 2,
    Status.dispatched: 3,
    Status.reopened: 3,
    Status.acknowledged: 4,
    Status.in_progress: 5,
    Status.information_requested: 5,
    Status.action_scheduled: 6,
    Status.resolved: 7,
    Status.duplicate: 8,
    Status.cancelled: 8,
    Status.withdrawn: 8,
    Status.not_our_responsibility: 8,
    Status.closed: 9,
}

# Open311 GeoReport v2 has open/closed; FixMyStreet's extension adds the rest (see DOMAIN.md).
OPEN311_WORDS: Mapping[str, Status] = {
    "open": Status.acknowledged,
    "investigating": Status.acknowledged,
    "for_triage": Status.acknowledged,
    "reopen": Status.acknowledged,
    "in_progress": Status.in_progress,
    "internal_referral": Status.in_progress,
    "action_scheduled": Status.action_scheduled,
    "fixed": Status.resolved,
    "closed": Status.closed,
    "no_further_action": Status.closed,
    "duplicate": Status.duplicate,
    "not_councils_responsibility": Status.not_our_responsibility,
    "cancelled": Status.cancelled,
    "information_requested": Status.information_requested,
}

# FHIR R4 ServiceRequest.status (request-status value set).
FHIR_WORDS: Mapping[str, Status] = {
    "draft": Status.acknowledged,
    "active": Status.in_progress,
    "on-hold": Status.in_progress,
    "completed": Status.resolved,
    "revoked": Status.cancelled,
    "entered-in-error": Status.cancelled,
}


# The gateway's own progress, before any organisation has the enquiry: never an organisation's
# to report. A back-office that says "received" has it: that is an acknowledgement.
_OURS_ALONE: frozenset[Status] = frozenset(
    {Status.received, Status.routed, Status.dispatched, Status.failed}
)
_OWN_WORDS: Mapping[str, Status] = {
    **{status.value: status for status in Status if status not in _OURS_ALONE},
    "received": Status.acknowledged,
}


def canonical(word: str, *mappings: Mapping[str, Status]) -> Status | None:
    """Their word in our vocabulary: the first mapping that knows it, then the words of ours an
    organisation may report (never one that would move its part back before delivery)."""
    key = word.strip().lower()
    for mapping in mappings:
        if key in mapping:
            return mapping[key]
    return _OWN_WORDS.get(key)
