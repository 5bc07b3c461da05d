"""The gateway's words for where durable work has got to, and every event on a timeline.

States and outcomes are stored as these strings; event types are also public: partners
subscribe to them (docs/webhooks.md lists each one, and a test holds the two together).
"""

from __future__ import annotations

from enum import StrEnum


class OutboxState(StrEnum):
    """Where one row of an outbox (a dispatch, a webhook delivery) has got to."""

    pending = "pending"  # waiting for its next attempt (new, or retried later)
    delivering = "delivering"  # claimed under a lease by one worker
    delivered = "delivered"
    dead = "dead"  # given up: a person must look at it
    cancelled = "cancelled"  # called off before delivery (erasure, a disabled subscription)


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
    dispatch_delivered = "dispatch.delivered"
    dispatch_retry = "dispatch.retry"
    dispatch_dead = "dispatch.dead"
    dispatch_cancelled = "dispatch.cancelled"
    status_updated = "status.updated"
    privacy_erasure_requested = "privacy.erasure_requested"

    @property
    def family(self) -> str:
        """`enquiry`, `dispatch`, `status` or `privacy`: what `family.*` subscribes to."""
        return self.value.split(".", 1)[0]

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


EVENT_FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(e.family for e in EventType))
