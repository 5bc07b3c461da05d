"""The event catalogue: every event the gateway can write is an `EventType`, each one is in
docs/webhooks.md (generated from the enum), and a subscription may name exactly those."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.catalogue.status import Status
from app.core.vocabulary import EVENT_FAMILIES, EVENT_PATTERNS, EventType, Outcome
from app.partners.schemas import WebhookIn

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "webhooks.md"


def test_the_catalogue_is_exactly_the_events_the_code_can_write():
    status_changes = {EventType.enquiry_status(status) for status in Status}
    attempts = {
        EventType.dispatch_outcome(o)
        for o in Outcome
        if o not in (Outcome.lease_lost, Outcome.disable)
    }
    others = {
        EventType.enquiry_rerouted,
        EventType.enquiry_anonymised,
        EventType.status_updated,
        EventType.privacy_erasure_requested,
        EventType.enquiry_handed_on,  # app/casework/triage.py: hand on, relocate
        EventType.enquiry_relocated,  # app/casework/triage.py: relocate
        # The dead-letter desk (app/casework/deliveries.py) and the daily stuck-work summary
        # (app/casework/stuck.py).
        EventType.dispatch_redriven,
        EventType.dispatch_handled,
        EventType.work_stuck_summary,
        # After submission (app/conversation): information added, and its follow-ups' outcomes.
        EventType.enquiry_information_added,
        EventType.follow_up_delivered,
        EventType.follow_up_dead,
        EventType.follow_up_cancelled,
    }
    assert status_changes | attempts | others == set(EventType)
    assert EventType.dispatch_outcome(Outcome.interrupted) is EventType.dispatch_retry
    assert EVENT_FAMILIES == (
        "enquiry",
        "dispatch",
        "follow_up",
        "status",
        "privacy",
        "work",
    )
    assert all(event.when for event in EventType)  # each described, for the docs


def test_the_webhooks_page_is_generated_from_the_catalogue():
    check = [sys.executable, str(ROOT / "scripts" / "event_catalogue.py"), "--check"]
    done = subprocess.run(check, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_webhooks_page_lists_every_event_type_and_family():
    page = PAGE.read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| ", page, flags=re.MULTILINE)
    assert sorted(listed) == sorted(EventType)
    [events_row] = [line for line in page.splitlines() if line.startswith("| `events` |")]
    assert re.findall(r"`([a-z_]+)\.\*`", events_row) == list(EVENT_FAMILIES)


def subscribe(pattern: str) -> WebhookIn:
    return WebhookIn(url="https://partner.example.org/events", events=[pattern])


@pytest.mark.parametrize("pattern", sorted(EVENT_PATTERNS))
def test_a_subscription_may_name_any_event_type_family_or_all(pattern):
    assert subscribe(pattern).events == [pattern]


@pytest.mark.parametrize(
    "pattern",
    ["enquiry.nonexistent", "enquiry", "dispatch.interrupted", "privacy.erase", "audit.*", "**"],
)
def test_a_subscription_may_name_nothing_outside_the_catalogue(pattern):
    with pytest.raises(ValidationError) as refused:
        subscribe(pattern)
    [error] = refused.value.errors()
    assert error["loc"] == ("events",)
    assert error["msg"] == (
        f"Value error, {pattern!r} is not an event type or one of "
        "enquiry.*, dispatch.*, follow_up.*, status.*, privacy.*, work.*, *"
    )
