"""The sandbox's one record of what every simulated back-office received, whatever the protocol.

Every case, whichever simulator made it, is a dict in `BackOffice.cases[organisation][case_id]`:

    id, organisation, protocol ("http-json", "open311", "rest-json", "fhir", "email"),
    reference     our enquiry reference ("K7Q-M4X-PB6") as the back-office saw it
    description   what the citizen wrote, as received
    citizen       the personal data that reached the back-office (absent when none did)
    status        the back-office's own word ("open", "new", "active", "received", ...)
    updates       [{update_id, status, description, updated_at}], oldest first
    dedupe_key    what the protocol dedupes on (see below), or None
    received      the request as it arrived (secrets such as api_key left out)
    created_at, updated_at   aware UTC datetimes

Create calls are counted before anything can fail, per organisation (`posts`) and per
(organisation, dedupe key) (`posts_by_key`), so "the back-office holds no duplicate" reads the
same for every protocol. The dedupe key is the Idempotency-Key header (http-json, rest-json),
attribute[iap_reference] (open311), the ServiceRequest identifier value (fhir) and the
Message-ID without its angle brackets (email). `by_key` gives the case a key first made.

After submission, every follow-up a back-office takes (information, a withdrawal, a
reopening; by Open311 servicerequestupdates, a case comment or status change, a FHIR
Communication or status, a follow-up email) is appended to its case's `follow_ups`:

    key           what the protocol dedupes a follow-up on (Open311 update_id, the
                  Idempotency-Key, the Communication identifier, the email's Message-ID)
    kind          "information", "withdrawal" or "reopening"
    text          the text as received (the reason, for a withdrawal or reopening)
    status        the status word it asked for, where the protocol carries one
    attachments   [{content_type, size, sha256, exif}]: as the back-office got each file
                  (fetched from media_url for Open311); exif is whether it still had EXIF
    received      the request's own fields as it arrived (secrets left out)
    received_at

Each follow-up call is counted per (organisation, key) (`follow_up_posts`) before anything can
fail, and a repeat of a key already taken adds nothing to `follow_ups`.

`BackOffice()` is empty: tests reset it in place with `office.__init__()`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

# When `timeout` is set without a latency: longer than any caller waits.
DEFAULT_HOLD_SECONDS = 60.0


class Behaviour(BaseModel):
    """How the simulated back-offices misbehave; all organisations ("*"), or one."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=600_000)
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    fail_status: int = Field(default=503, ge=400, le=599)
    retry_after_seconds: int | None = Field(default=None, ge=0)
    down: bool = False
    # Down from now until this many seconds have passed, then back by itself.
    down_for_seconds: float | None = Field(default=None, gt=0)
    # Accept the request (the case is made), then hold the answer for latency_ms (or a minute):
    # a caller that gives up sees a timeout although the back-office has the case.
    timeout: bool = False
    # Open311 only: answer a create with a token; the id shows at tokens/{token}.json later.
    answer_with_token: bool = False
    token_delay_seconds: float = Field(default=0.0, ge=0, le=3600)
    # Open311 only: the GeoReport v2 spec and no more. No dedupe on our reference (every create
    # makes a case), and list answers in the spec's shape, without attributes or iap_reference.
    plain: bool = False
    # Open311 only: at most this many requests in a list answer, the oldest first.
    list_limit: int | None = Field(default=None, ge=1)

    _down_until: float | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        """Start the down_for_seconds clock when the behaviour is set."""
        if self.down_for_seconds is not None:
            self._down_until = time.monotonic() + self.down_for_seconds

    def is_down(self) -> bool:
        """Down now: for good, or until down_for_seconds have passed."""
        return self.down or (self._down_until is not None and time.monotonic() < self._down_until)

    def hold_seconds(self) -> float:
        """How long a `timeout` answer is held back."""
        return self.latency_ms / 1000 if self.latency_ms else DEFAULT_HOLD_SECONDS


def utc_now() -> datetime:
    """Now, aware UTC."""
    return datetime.now(UTC)


@dataclass
class BackOffice:
    """Cases received, by organisation; every create call counted, duplicates included."""

    cases: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    by_key: dict[tuple[str, str], str] = field(default_factory=dict)
    posts: dict[str, int] = field(default_factory=dict)
    posts_by_key: dict[tuple[str, str], int] = field(default_factory=dict)
    behaviour: dict[str, Behaviour] = field(default_factory=dict)
    next_number: int = 1
    # OAuth2 access token → (organisation, expiry as time.monotonic()).
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    # Open311 token → (organisation, case id, time.monotonic() from which the id is known).
    open311_tokens: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    # Every message the SMTP sink accepted, repeats included, in order of arrival.
    mail: list[dict[str, Any]] = field(default_factory=list)
    # Every push to the gateway: organisation, case_id, update_id, url, attempts, outcome.
    pushes: list[dict[str, Any]] = field(default_factory=list)
    # Follow-up calls per (organisation, key), repeats included (see the module's docstring).
    follow_up_posts: dict[tuple[str, str], int] = field(default_factory=dict)
    # Every SMS and email the Notify simulator was asked to send, repeats included.
    notify: list[dict[str, Any]] = field(default_factory=list)

    def behaviour_for(self, organisation: str) -> Behaviour:
        """This organisation's behaviour, else everyone's, else good behaviour."""
        return self.behaviour.get(organisation) or self.behaviour.get("*") or Behaviour()

    def count_create(self, organisation: str, key: str | None) -> None:
        """Count one create call, before anything about it can fail."""
        self.posts[organisation] = self.posts.get(organisation, 0) + 1
        slot = (organisation, key or "")
        self.posts_by_key[slot] = self.posts_by_key.get(slot, 0) + 1

    def record_follow_up(self, case: dict[str, Any], entry: dict[str, Any]) -> bool:
        """Count one follow-up call and file it on its case, unless its key was taken before;
        True if it is new. `entry` holds the fields in the module's docstring but received_at."""
        slot = (case["organisation"], str(entry["key"]))
        self.follow_up_posts[slot] = self.follow_up_posts.get(slot, 0) + 1
        held = case.setdefault("follow_ups", [])
        if any(taken["key"] == entry["key"] for taken in held):
            return False
        held.append({**entry, "received_at": utc_now()})
        return True

    def take_number(self) -> int:
        """The next case number (shared by every organisation, as one sandbox)."""
        number = self.next_number
        self.next_number += 1
        return number

    def add_case(self, case: dict[str, Any]) -> dict[str, Any]:
        """File a new case; the first case made for a dedupe key is the one `by_key` names."""
        organisation = case["organisation"]
        self.cases.setdefault(organisation, {})[case["id"]] = case
        key = case.get("dedupe_key")
        if key:
            self.by_key.setdefault((organisation, key), case["id"])
        return case

    def case(self, organisation: str, case_id: str) -> dict[str, Any] | None:
        """One case, if this organisation has it."""
        return self.cases.get(organisation, {}).get(case_id)

    def duplicates(self, organisation: str) -> dict[str, list[str]]:
        """References this organisation holds more than one case for: reference → case ids."""
        held: dict[str, list[str]] = {}
        for case in self.cases.get(organisation, {}).values():
            if case.get("reference"):
                held.setdefault(str(case["reference"]), []).append(case["id"])
        return {reference: ids for reference, ids in held.items() if len(ids) > 1}

    def stats(self) -> dict[str, Any]:
        """Counts a person (or a benchmark) can read at a glance."""
        by_key: dict[str, dict[str, int]] = {}
        for (organisation, key), count in self.posts_by_key.items():
            by_key.setdefault(organisation, {})[key] = count
        outcomes = Counter(str(push["outcome"]) for push in self.pushes)
        return {
            "posts": self.posts,
            "posts_by_key": by_key,
            "cases": {org: len(cases) for org, cases in self.cases.items()},
            "duplicates": {org: self.duplicates(org) for org in self.cases if self.duplicates(org)},
            "updates": sum(len(c["updates"]) for cs in self.cases.values() for c in cs.values()),
            "pushes": dict(outcomes),
            "mail": len(self.mail),
            "follow_ups": sum(
                len(c.get("follow_ups", [])) for cs in self.cases.values() for c in cs.values()
            ),
            "notify": len(self.notify),
        }
