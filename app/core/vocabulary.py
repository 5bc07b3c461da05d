"""The gateway's stored words: where durable work has got to, and every event on a timeline.

States and outcomes are stored as these strings; event types are also public: partners
subscribe to them, and docs/webhooks.md's table of them is generated from `EventType.when`
(scripts/event_catalogue.py; a test fails while the page is out of date).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class OutboxState(StrEnum):
    """Where one row of an outbox (a dispatch, a webhook delivery) has got to."""

    pending = "pending"  # waiting for its next attempt (new, or retried later)
    delivering = "delivering"  # claimed under a lease by one worker
    delivered = "delivered"
    dead = "dead"  # given up: a person must look at it
    cancelled = "cancelled"  # called off before delivery (erasure, a disabled subscription)
    handled = "handled"  # given up here, then seen to outside the gateway by a person (a note)


class Outcome(StrEnum):
    """How one delivery attempt ended."""

    delivered = "delivered"
    retry = "retry"  # failed for now; tried again later
    dead = "dead"  # refused for good, or out of attempts
    cancelled = "cancelled"
    interrupted = "interrupted"  # the worker stopped mid-call; it may have arrived
    lease_lost = "lease_lost"  # another worker holds the row now: record nothing
    disable = "disable"  # a webhook endpoint is gone (410): its subscription is disabled


class BreakerState(StrEnum):
    """Whether an organisation's circuit breaker lets deliveries through."""

    closed = "closed"
    open = "open"  # failing: nothing is sent until its cool-down ends
    half_open = "half_open"  # cooled down: one trial delivery tests the back-office


class BreakerChange(StrEnum):
    """How one counted attempt moved an organisation's circuit breaker."""

    opened = "opened"
    closed = "closed"


class SubscriptionState(StrEnum):
    """Whether a partner's webhook subscription is sent events."""

    active = "active"
    disabled = "disabled"  # its endpoint said 410 Gone


class IdempotencyState(StrEnum):
    """Where the request that claimed an Idempotency-Key has got to."""

    in_flight = "in_flight"
    completed = "completed"  # its answer is stored, to be replayed


class ReceivedVia(StrEnum):
    """How an organisation's status update reached the gateway."""

    poll = "poll"
    webhook = "webhook"
    open311_push = "open311-push"
    staff = "staff"  # the organisation's own staff, through the API (no status-returning system)
    organisation_key = "organisation-key"  # the organisation's own system, with its API key


class Closure(StrEnum):
    """How a person at the triage desk closed its part of an enquiry."""

    handed_on = "handed_on"  # the triage desk gave it to the right organisation(s)
    first_contact = "first_contact"  # resolved at the desk: the advice given is the note
    outside_remit = "outside_remit"  # no partner's work: the signposting given is the note
    withdrawn = "withdrawn"  # the citizen called the enquiry off (any part, not only triage)


class MessageKind(StrEnum):
    """What was said about an enquiry after it was submitted (a `message` row)."""

    information = "information"  # more detail, photos or documents: forwarded
    withdrawal = "withdrawal"  # the citizen calls it off, and why: forwarded
    reopening = "reopening"  # not fixed after all, and why: forwarded
    note = "note"  # staff only: never forwarded, never shown to the citizen


class AlertKind(StrEnum):
    """Why the citizen is sent a message (an `alert` row)."""

    acknowledgement = "acknowledgement"  # received, with the reference
    status = "status"  # a status change worth telling (configured per service)
    question = "question"  # a back-office asked the citizen something


class AlertChannel(StrEnum):
    """How a message reaches the citizen: their preferred contact."""

    email = "email"  # through SMTP
    sms = "sms"  # through a GOV.UK Notify-compatible API


class StuckKind(StrEnum):
    """Why a delivery is listed as stuck (GET /v1/stuck, the daily `work.stuck_summary`); each
    delivery is listed once, under the first of these that applies."""

    dead = "dead"  # given up and not yet handled by a person
    pending = "pending"  # still waiting to be delivered, longer than the threshold
    past_resolve_target = "past_resolve_target"  # not finished within its service's target
    past_acknowledge_target = "past_acknowledge_target"  # no word back within the target
    unacknowledged = "unacknowledged"  # delivered, and silent longer than its organisation's
    # silence_hours (the police's mailbox never reports back)


class AuditAction(StrEnum):
    """What an audit log entry records. Not timeline events: the audit log is for staff and
    is never sent to partners."""

    enquiry_read = "enquiry.read"
    privacy_export = "privacy.export"
    privacy_erase = "privacy.erase"
    privacy_keys_rotated = "privacy.keys_rotated"
    retention_anonymised = "retention.anonymised"
    staff_created = "staff.created"
    staff_disabled = "staff.disabled"
    staff_signed_in = "staff.signed_in"  # to the console (how: password, second factor, SSO)
    staff_second_factor = "staff.second_factor_enrolled"
    caller_history = "enquiry.caller_history"  # a search of a caller's enquiries by phone/email
    triage_claimed = "triage.claimed"
    triage_released = "triage.released"  # a claim let go before it expired
    triage_handed_on = "triage.handed_on"
    triage_relocated = "triage.relocated"
    triage_closed = "triage.closed"
    dispatch_redriven = "dispatch.redriven"
    dispatch_handled = "dispatch.handled"
    webhook_redriven = "webhook.redriven"
    subscription_enabled = "webhook.subscription_enabled"
    subscription_disabled = "webhook.subscription_disabled"  # by the gateway or its client
    signing_key_rotated = "webhook.secret_rotated"
    webhook_resent = "webhook.resent"  # one delivery queued again by its client
    webhook_recovered = "webhook.recovered"  # a window of missed deliveries queued again
    part_updated = "part.updated"  # an organisation's staff moved their part
    information_added = "enquiry.information_added"  # by staff (a citizen's own is not audited)
    withdrawn = "enquiry.withdrawn"
    reopened = "enquiry.reopened"
    note_added = "enquiry.note_added"
    attachment_read = "attachment.read"  # staff opened a citizen's photo or document
    alerts_stopped = "alerts.stopped"  # the citizen's unsubscribe link was followed


class EventType(StrEnum):
    """Every event that can appear on an enquiry's timeline, and so in a partner's feed."""

    enquiry_received = "enquiry.received"
    enquiry_routed = "enquiry.routed"
    enquiry_dispatched = "enquiry.dispatched"
    enquiry_failed = "enquiry.failed"
    enquiry_acknowledged = "enquiry.acknowledged"
    enquiry_in_progress = "enquiry.in_progress"
    enquiry_action_scheduled = "enquiry.action_scheduled"
    enquiry_resolved = "enquiry.resolved"
    enquiry_closed = "enquiry.closed"
    enquiry_not_our_responsibility = "enquiry.not_our_responsibility"
    enquiry_duplicate = "enquiry.duplicate"
    enquiry_cancelled = "enquiry.cancelled"
    enquiry_rerouted = "enquiry.rerouted"
    enquiry_anonymised = "enquiry.anonymised"
    enquiry_handed_on = "enquiry.handed_on"
    enquiry_relocated = "enquiry.relocated"
    enquiry_withdrawn = "enquiry.withdrawn"
    enquiry_reopened = "enquiry.reopened"
    enquiry_information_requested = "enquiry.information_requested"
    enquiry_information_added = "enquiry.information_added"
    dispatch_delivered = "dispatch.delivered"
    dispatch_retry = "dispatch.retry"
    dispatch_dead = "dispatch.dead"
    dispatch_cancelled = "dispatch.cancelled"
    dispatch_redriven = "dispatch.redriven"
    dispatch_handled = "dispatch.handled"
    follow_up_delivered = "follow_up.delivered"
    follow_up_dead = "follow_up.dead"
    follow_up_cancelled = "follow_up.cancelled"
    status_updated = "status.updated"
    privacy_erasure_requested = "privacy.erasure_requested"
    work_stuck_summary = "work.stuck_summary"
    webhook_disabled = "webhook.disabled"
    webhook_enabled = "webhook.enabled"
    ping = "ping"  # a test message to one subscription (POST /v1/webhooks/{id}/test)

    @property
    def family(self) -> str:
        """`enquiry`, `dispatch`, `follow_up`, `status`, `privacy`, `work` or `webhook`: what
        `family.*` subscribes to."""
        return self.value.split(".", 1)[0]

    @property
    def when(self) -> str:
        """When the event happens, in one line for partners (docs/webhooks.md)."""
        return _WHEN[self]

    @classmethod
    def enquiry_status(cls, status: str) -> EventType:
        """The event of an enquiry's status changing to `status` (`enquiry.resolved`)."""
        return cls(f"enquiry.{status}")

    @classmethod
    def dispatch_outcome(cls, outcome: Outcome) -> EventType:
        """The timeline event of a delivery attempt's outcome; an interrupted attempt reads as
        one that will be retried."""
        if outcome is Outcome.interrupted:
            return cls.dispatch_retry
        return cls(f"dispatch.{outcome}")


def _changed_to(status: str) -> str:
    return f"the enquiry's status changed to `{status}` on an organisation's update"


_WHEN: Mapping[EventType, str] = {
    EventType.enquiry_received: "the enquiry was accepted and routed (`detail` lists the "
    "destinations and why)",
    EventType.enquiry_routed: "the enquiry waits to be delivered again and its new destination "
    "does not have it yet: an organisation said it is not theirs (`enquiry.rerouted`), the "
    "triage desk handed it on (`enquiry.handed_on`), or a given-up delivery was sent again "
    "(`dispatch.redriven`)",
    EventType.enquiry_dispatched: "every destination has it (about the enquiry as a whole: no "
    "`organisation_id`, no `dispatch_id`)",
    EventType.enquiry_failed: "one destination could not be given it (about the enquiry as a "
    "whole; the `dispatch.dead` event before it says which)",
    EventType.enquiry_acknowledged: _changed_to("acknowledged"),
    EventType.enquiry_in_progress: _changed_to("in_progress"),
    EventType.enquiry_action_scheduled: _changed_to("action_scheduled"),
    EventType.enquiry_resolved: _changed_to("resolved"),
    EventType.enquiry_closed: _changed_to("closed") + " (or every organisation finished, "
    "in different ways)",
    EventType.enquiry_not_our_responsibility: _changed_to("not_our_responsibility")
    + ": every organisation, the triage desk too, said it is not theirs",
    EventType.enquiry_duplicate: _changed_to("duplicate"),
    EventType.enquiry_cancelled: _changed_to("cancelled") + ", or its deliveries were called "
    "off before they were made (an erasure)",
    EventType.enquiry_rerouted: "an organisation said it is not theirs, so the triage desk has it",
    EventType.enquiry_anonymised: "the gateway removed the enquiry's personal data (erasure "
    "or retention)",
    EventType.enquiry_handed_on: "a person at the triage desk gave the enquiry to the "
    "organisation(s) that must act (`detail` names them and says why)",
    EventType.enquiry_relocated: "a person at the triage desk corrected the enquiry's place "
    "(the caller gave the full address or postcode) and it was routed again",
    EventType.enquiry_withdrawn: "the citizen (or an agent for them) withdrew the enquiry; "
    "deliveries not yet made were called off, and each organisation holding it is told "
    "(`follow_up.*`)",
    EventType.enquiry_reopened: "the citizen (or an agent) reopened a resolved or closed "
    "enquiry; each organisation that had finished is told (`follow_up.*`)",
    EventType.enquiry_information_requested: _changed_to("information_requested")
    + ": a back-office asked the citizen something (`detail` of the `status.updated` "
    "before it is the question)",
    EventType.enquiry_information_added: "the citizen or an agent added information, photos "
    "or documents; each organisation holding a live part is sent it (`follow_up.*`)",
    EventType.dispatch_delivered: "a delivery to one organisation succeeded",
    EventType.dispatch_retry: "a delivery to one organisation failed and will be retried "
    "(`detail` says only that, except in an admin's feed of every enquiry, which has the "
    "back-office's error: it is for staff, [security.md](security.md))",
    EventType.dispatch_dead: "a delivery to one organisation was given up (`detail` as for "
    "`dispatch.retry`)",
    EventType.dispatch_cancelled: "a delivery to one organisation was called off unsent "
    "because the enquiry's personal data was removed first: erased while a worker was "
    "already taking it, or by retention while it waited (an erasure calls off deliveries "
    "still waiting without this event)",
    EventType.dispatch_redriven: "a person sent a given-up delivery again after the cause "
    "was fixed (its attempts start again)",
    EventType.dispatch_handled: "a person closed a given-up delivery as seen to outside the "
    "gateway (`detail` is their note)",
    EventType.follow_up_delivered: "information, a withdrawal or a reopening reached one "
    "organisation's back-office",
    EventType.follow_up_dead: "information, a withdrawal or a reopening could not be given to "
    "one organisation (`detail` as for `dispatch.retry`)",
    EventType.follow_up_cancelled: "information, a withdrawal or a reopening was not sent to "
    "one organisation: its part was over, or the enquiry's personal data was removed first",
    EventType.status_updated: "an organisation reported progress (`status` in the gateway's "
    "vocabulary, null for a word it does not know)",
    EventType.privacy_erasure_requested: "the citizen's data was erased here; the organisation "
    "named must erase what it holds for this enquiry (`detail` names its own reference)",
    EventType.work_stuck_summary: "once a day: the work that is stuck (deliveries waiting too "
    "long, never acknowledged, past their service's target, given up and not handled); about "
    "no one enquiry",
    EventType.webhook_disabled: "the gateway stopped sending to one of the client's "
    "subscriptions (its endpoint answered 410 Gone, every attempt failed for days, or the client "
    "paused it); sent to the client's other subscriptions and to admin feeds of every enquiry, "
    "never to the one disabled (`data.subscription_id` names it, `detail` says why)",
    EventType.webhook_enabled: "a disabled subscription was enabled again (`POST "
    "/v1/webhooks/{id}/enable` or `PATCH` with `enabled: true`); sent as `webhook.disabled` is",
    EventType.ping: "a test asked for with `POST /v1/webhooks/{id}/test`: sent to that one "
    "subscription, whatever its `events`, and to no other",
}

# `ping` is no family: it is sent only to the subscription that asks for it.
EVENT_FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(e.family for e in EventType if "." in e))
ANY_EVENT = "*"
# What a webhook subscription may name: every event, a family of them, or one type.
EVENT_PATTERNS: frozenset[str] = frozenset(
    {ANY_EVENT, *(f"{family}.*" for family in EVENT_FAMILIES), *EventType}
)
