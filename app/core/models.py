"""Database tables. Alembic migrations in app/migrations own the schema; these mirror it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    inspect,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite keeps none of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _json(*, nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=nullable))


class Enquiry(SQLModel, table=True):
    __tablename__ = "enquiry"
    __table_args__ = (
        Index("ix_enquiry_created", "created_at", "id"),
        Index("ix_enquiry_client", "client_id", "created_at"),
        Index("ix_enquiry_email_hash", "citizen_email_hash"),
        Index("ix_enquiry_phone_hash", "citizen_phone_hash"),
        Index("ix_enquiry_closed", "closed_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    reference: str = Field(max_length=16, unique=True)
    service_code: str = Field(max_length=64)
    status: str = Field(max_length=32, index=True)
    channel: str = Field(max_length=32)
    description: str = Field(sa_column=Column(Text, nullable=False))
    location: dict[str, Any] | None = _json()
    place: dict[str, Any] | None = _json()
    # The citizen's details, sealed (app/crypto.py), and keyed hashes of their email and phone.
    citizen_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    citizen_email_hash: str | None = Field(default=None, max_length=64)
    citizen_phone_hash: str | None = Field(default=None, max_length=64)
    attributes: dict[str, Any] | None = _json()
    consent: dict[str, Any] | None = _json()
    advice: list[dict[str, Any]] | None = _json()
    client_id: str | None = Field(default=None, max_length=64)
    # SHA-256 of the citizen's access token (GET /v1/enquiries/{reference}?token=...).
    access_token_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    # When it reached a final status (retention counts from here), and when its personal
    # data was removed (retention or erasure).
    closed_at: datetime | None = _ts(nullable=True)
    anonymised_at: datetime | None = _ts(nullable=True)
    # When the citizen followed the unsubscribe link of a message: no more alerts are sent.
    alerts_stopped_at: datetime | None = _ts(nullable=True)


class Dispatch(SQLModel, table=True):
    """One destination of an enquiry: the outbox row the dispatcher delivers."""

    __tablename__ = "dispatch"
    __table_args__ = (
        Index("ix_dispatch_due", "state", "next_attempt_at"),
        Index("ix_dispatch_remote", "organisation_id", "remote_reference"),
    )

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    enquiry_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    organisation_id: str = Field(max_length=64, index=True)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    state: str = Field(max_length=16)  # an OutboxState (app/core/vocabulary.py)
    attempts: int = 0
    claims: int = 0
    next_attempt_at: datetime = _ts()
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _ts(nullable=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    remote_reference: str | None = Field(default=None, max_length=128)
    delivered_at: datetime | None = _ts(nullable=True)
    # The organisation's latest reported status, in our vocabulary, and when it reported it.
    remote_status: str | None = Field(default=None, max_length=32)
    remote_status_at: datetime | None = _ts(nullable=True)
    # The triage desk: who holds the item now (a staff id) and until when; a claim expires.
    claimed_by: str | None = Field(default=None, max_length=64)
    claimed_until: datetime | None = _ts(nullable=True)
    # How a person closed this part (a Closure at the triage desk; a dead delivery handled
    # outside the gateway is state `handled`), who did, and their note.
    closure: str | None = Field(default=None, max_length=32)
    closure_note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    closed_by: str | None = Field(default=None, max_length=64)
    # When a person last sent it again after it was given up (the dead-letter desk): its next
    # attempt looks the case up first, as a repeat does, since an earlier one may have landed.
    redriven_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class DispatchAttempt(SQLModel, table=True):
    __tablename__ = "dispatch_attempt"

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    dispatch_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("dispatch.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    number: int
    outcome: str = Field(max_length=16)  # an Outcome
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    worker: str = Field(max_length=64)
    started_at: datetime = _ts()
    finished_at: datetime = _ts()


class Event(SQLModel, table=True):
    """One line of an enquiry's timeline, or an event about the gateway's work as a whole
    (no enquiry: the daily stuck-work summary, its counts in `data`)."""

    __tablename__ = "event"
    __table_args__ = (
        Index("ix_event_enquiry", "enquiry_id", "created_at"),
        # The feeds (alerts, webhooks) read every event past a time, every few seconds.
        Index("ix_event_created", "created_at", "id"),
    )

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    enquiry_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(Uuid, ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=True),
    )
    dispatch_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    organisation_id: str | None = Field(default=None, max_length=64)
    type: str = Field(max_length=64)  # an EventType
    status: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The person who did it (a staff id and name), shown to staff only; None: the gateway.
    actor_id: str | None = Field(default=None, max_length=64)
    actor: str | None = Field(default=None, max_length=200)
    # A gateway-wide event's structured detail (counts, never personal data); None otherwise.
    data: dict[str, Any] | None = _json()
    created_at: datetime = _ts()


class Message(SQLModel, table=True):
    """Something said about an enquiry after it was submitted: more information (its text and
    attachments), a withdrawal or a reopening and why, or a staff note (never forwarded)."""

    __tablename__ = "message"
    __table_args__ = (Index("ix_message_enquiry", "enquiry_id", "created_at"),)

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    enquiry_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False)
    )
    kind: str = Field(max_length=16)  # a MessageKind
    # What was said: personal data, like the description (None once erased).
    text: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Who said it: "citizen" (by token), or the API client's name; a person's id and name
    # when staff (shown to staff only), and a partner's staff's organisation.
    by: str = Field(max_length=64)
    actor_id: str | None = Field(default=None, max_length=64)
    actor: str | None = Field(default=None, max_length=200)
    organisation_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts()


class Attachment(SQLModel, table=True):
    """A photo or document added to an enquiry: re-encoded (no EXIF), sealed, and kept in the
    attachment store (app/attachments) under `storage_key`."""

    __tablename__ = "attachment"
    __table_args__ = (Index("ix_attachment_enquiry", "enquiry_id", "created_at"),)

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    enquiry_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False)
    )
    message_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("message.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    content_type: str = Field(max_length=64)  # as found in the content, never as named
    size: int  # bytes of the stored (re-encoded) file, before sealing
    sha256: str = Field(max_length=64)  # of the stored file, before sealing
    storage_key: str = Field(max_length=200)
    created_at: datetime = _ts()


# The extension each kept kind of file is given out under (app/attachments finds the kind).
ATTACHMENT_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "application/pdf": "pdf",
}


def attachment_filename(content_type: str, number: int) -> str:
    """The name a file is given out under, ours, never the uploader's: photo-1.jpg,
    document-2.pdf (`number` counts the enquiry's attachments from 1). Here, below every
    package that names files (intake's read, the attachments, the follow-ups)."""
    kind = "photo" if content_type.startswith("image/") else "document"
    return f"{kind}-{number}.{ATTACHMENT_EXTENSIONS.get(content_type, 'bin')}"


class FollowUp(SQLModel, table=True):
    """One message (information, withdrawal, reopening) for one organisation's part: the
    outbox row the follow-up sender delivers through the organisation's adapter, once."""

    __tablename__ = "follow_up"
    __table_args__ = (
        UniqueConstraint("message_id", "dispatch_id", name="uq_follow_up"),
        Index("ix_follow_up_due", "state", "next_attempt_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    message_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("message.id", ondelete="CASCADE"), nullable=False)
    )
    dispatch_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("dispatch.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    enquiry_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    organisation_id: str = Field(max_length=64)
    kind: str = Field(max_length=16)  # a MessageKind, never note
    state: str = Field(max_length=16)  # an OutboxState
    attempts: int = 0
    claims: int = 0
    next_attempt_at: datetime = _ts()
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _ts(nullable=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    remote_reference: str | None = Field(default=None, max_length=128)  # their id for it
    delivered_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Alert(SQLModel, table=True):
    """One message to the citizen about one change (the acknowledgement, a status worth
    telling, a back-office's question), by one channel: the outbox row the alert sender
    delivers; unique per (event, channel), so no change is ever told twice."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("event_id", "channel", name="uq_alert"),
        Index("ix_alert_due", "state", "next_attempt_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    enquiry_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    event_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("event.id", ondelete="CASCADE"), nullable=False)
    )
    kind: str = Field(max_length=16)  # an AlertKind
    channel: str = Field(max_length=8)  # an AlertChannel
    language: str = Field(max_length=35)  # the template's language (BCP 47)
    status: str | None = Field(default=None, max_length=32)  # the status told, if any
    state: str = Field(max_length=16)  # an OutboxState
    attempts: int = 0
    claims: int = 0
    next_attempt_at: datetime = _ts()
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _ts(nullable=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    provider_reference: str | None = Field(default=None, max_length=128)  # Notify id, Message-ID
    delivered_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class FeedCursor(SQLModel, table=True):
    """How far a reader of the event table has got (the alert feed): each scan re-reads a
    little before it, and what it makes from an event is unique, so a re-read adds nothing."""

    __tablename__ = "feed_cursor"

    name: str = Field(primary_key=True, max_length=64)
    fed_until: datetime = _ts()
    updated_at: datetime = _ts()


class IdempotencyRecord(SQLModel, table=True):
    """A stored answer for an Idempotency-Key, per client."""

    __tablename__ = "idempotency_record"

    client_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)
    state: str = Field(max_length=16)  # an IdempotencyState
    response_status: int | None = None
    response_body: dict[str, Any] | None = _json()
    created_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)


class GazetteerPostcode(SQLModel, table=True):
    """A full postcode from the ONS Postcode Directory."""

    __tablename__ = "gazetteer_postcode"
    __table_args__ = (Index("ix_gazetteer_point", "latitude", "longitude"),)

    postcode: str = Field(primary_key=True, max_length=8)
    county_code: str | None = Field(default=None, max_length=9)
    district_code: str | None = Field(default=None, max_length=9)
    police_area: str | None = Field(default=None, max_length=9)
    health_area: str | None = Field(default=None, max_length=9)
    latitude: float | None = None
    longitude: float | None = None
    terminated: bool = False


class Circuit(SQLModel, table=True):
    """A circuit breaker per organisation: open after most attempts in a window failed, so
    dispatches wait for the cool-down instead of spending their attempts on a back-office that
    is down; after it closes, calls ramp up (1, 2, 4, ... at once) rather than all at once."""

    __tablename__ = "circuit"

    organisation_id: str = Field(primary_key=True, max_length=64)
    failures: int = 0
    successes: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    window_started_at: datetime | None = _ts(nullable=True)
    # Calls allowed at once while ramping up after the circuit closed; 0: no ramp.
    ramp: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    opened_until: datetime | None = _ts(nullable=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    updated_at: datetime = _ts()


class StatusUpdate(SQLModel, table=True):
    """A status change an organisation reported, recorded once however often it arrives."""

    __tablename__ = "status_update"
    __table_args__ = (UniqueConstraint("organisation_id", "update_id", name="uq_status_update"),)

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    organisation_id: str = Field(max_length=64)
    update_id: str = Field(max_length=255)
    dispatch_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("dispatch.id", ondelete="CASCADE"), nullable=False)
    )
    enquiry_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    their_status: str = Field(max_length=64)
    status: str | None = Field(default=None, max_length=32)  # None: a word we do not know
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    updated_at: datetime = _ts()
    received_via: str = Field(max_length=16)  # a ReceivedVia
    created_at: datetime = _ts()


class InboundMessage(SQLModel, table=True):
    """A pushed message's id, kept so that a replay is recognised and ignored."""

    __tablename__ = "inbound_message"

    organisation_id: str = Field(primary_key=True, max_length=64)
    message_id: str = Field(primary_key=True, max_length=255)
    received_at: datetime = _ts(index=True)


class PollState(SQLModel, table=True):
    """Where polling an organisation's back-office has got to, and who is doing it now."""

    __tablename__ = "poll_state"

    organisation_id: str = Field(primary_key=True, max_length=64)
    cursor: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    next_poll_at: datetime = _ts()
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _ts(nullable=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    updated_at: datetime = _ts()


class ApiClient(SQLModel, table=True):
    """A system allowed to call the API (a front end, an agent's desk, a kiosk, a partner)."""

    __tablename__ = "api_client"

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    name: str = Field(max_length=64, unique=True)
    # The key's non-secret middle part, so a request's key is found by one indexed look-up.
    key_id: str = Field(max_length=16, unique=True)
    secret_hash: str = Field(max_length=64)  # SHA-256 hex of the key's secret part
    scopes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    channel: str | None = Field(default=None, max_length=32)
    # A person's own token (app/clients/staff.py): their role gives the scopes.
    staff_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(Uuid, ForeignKey("staff.id", ondelete="CASCADE"), nullable=True),
    )
    # An organisation's key (a catalogue id): its scopes are for that organisation's parts.
    organisation_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)


class Staff(SQLModel, table=True):
    """A person who works enquiries: contact-centre staff, or a partner's (organisation_id)."""

    __tablename__ = "staff"

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    name: str = Field(max_length=200)
    email: str = Field(max_length=254, unique=True)  # stored lower-cased
    role: str = Field(max_length=32)  # a StaffRole (app/clients/staff.py)
    organisation_id: str | None = Field(default=None, max_length=64)
    password_hash: str | None = Field(default=None, max_length=200)  # argon2id; None: none set
    created_at: datetime = _ts()
    disabled_at: datetime | None = _ts(nullable=True)
    # The console's second factor: the TOTP secret, sealed; the last time step used (a code is
    # good once); None: no second factor for this person.
    totp_secret: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    totp_last_step: int | None = None
    # The person's subject at the council's OpenID Connect provider, once they have signed in
    # with it (matched by email the first time).
    oidc_subject: str | None = Field(default=None, max_length=255, unique=True)


class ConsoleSession(SQLModel, table=True):
    """A person signed in to the console: the cookie holds a random token, this its hash."""

    __tablename__ = "console_session"

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    token_hash: str = Field(max_length=64, unique=True)
    staff_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("staff.id", ondelete="CASCADE"), nullable=False)
    )
    created_at: datetime = _ts()
    last_seen_at: datetime = _ts(index=True)
    # The password was right but the second factor is still to come: nothing else is open.
    second_factor_due: bool = False
    ended_at: datetime | None = _ts(nullable=True)


class SignInLockout(SQLModel, table=True):
    """Failed console sign-ins by email (its keyed hash, as for look-ups), whether or not the
    email is a person's, so a lockout tells nobody which emails are staff."""

    __tablename__ = "sign_in_lockout"

    email_hash: str = Field(max_length=64, primary_key=True)
    failures: int = 0
    first_failed_at: datetime = _ts()
    locked_until: datetime | None = _ts(nullable=True)


class AuditEntry(SQLModel, table=True):
    """Who read, exported or erased personal data, and when. The database refuses changes."""

    __tablename__ = "audit_log"

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    at: datetime = _ts(index=True)
    actor_id: str | None = Field(default=None, max_length=64)
    actor: str = Field(max_length=64)  # the API client's name, or the command that ran
    action: str = Field(max_length=64, index=True)  # an AuditAction
    subject: str | None = Field(default=None, max_length=128, index=True)
    detail: dict[str, Any] | None = _json()


class WebhookSubscription(SQLModel, table=True):
    """A partner's endpoint and the timeline events it wants (docs/webhooks.md)."""

    __tablename__ = "webhook_subscription"

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    client_id: str = Field(max_length=64, index=True)  # the API client that made it
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: list[str] = Field(sa_column=Column(JSON, nullable=False))
    # Only events about enquiries routed to this organisation; else, unless all_enquiries,
    # only those about enquiries the subscribing client submitted.
    organisation_id: str | None = Field(default=None, max_length=64)
    all_enquiries: bool = False
    secret_sealed: str = Field(sa_column=Column(Text, nullable=False))  # app/crypto.py
    # After a rotation the old secret signs too, until previous_secret_until (the overlap).
    previous_secret_sealed: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    previous_secret_until: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    description: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Enabled again then: events made while it was disabled are not sent.
    enabled_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    state: str = Field(max_length=16)  # a SubscriptionState
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The newest event time fed so far: each scan re-reads a little before it.
    fed_until: datetime = _ts()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class WebhookDelivery(SQLModel, table=True):
    """One event for one subscription: the outbox row the webhook sender delivers."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("subscription_id", "event_id", name="uq_webhook_delivery"),
        Index("ix_webhook_delivery_due", "state", "next_attempt_at"),
        Index("ix_webhook_delivery_recent", "subscription_id", "created_at"),
    )

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    subscription_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("webhook_subscription.id", ondelete="CASCADE"), nullable=False
        )
    )
    event_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("event.id", ondelete="CASCADE"), nullable=False)
    )
    event_type: str = Field(max_length=64)  # an EventType
    state: str = Field(max_length=16)  # an OutboxState
    attempts: int = 0
    claims: int = 0
    next_attempt_at: datetime = _ts()
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = _ts(nullable=True)
    last_status: int | None = None  # the endpoint's HTTP status at the last attempt
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    delivered_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class WebhookAttempt(SQLModel, table=True):
    """One POST of a webhook delivery to its endpoint: when, how long, what came back (its
    first KiB), and where it left the delivery."""

    __tablename__ = "webhook_attempt"
    __table_args__ = (Index("ix_webhook_attempt_delivery", "delivery_id", "started_at"),)

    id: uuid.UUID = Field(sa_column=Column(Uuid, primary_key=True))
    delivery_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("webhook_delivery.id", ondelete="CASCADE"), nullable=False
        )
    )
    number: int  # 1 for the delivery's first attempt, counted on across resends
    started_at: datetime = _ts()
    duration_ms: int
    status: int | None = None  # the endpoint's HTTP status; None: no answer
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    response: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    state: str = Field(max_length=16)  # the OutboxState the attempt left the delivery in


def table(model: type[SQLModel]) -> Table:
    """The Core table behind a table model, typed (SQLModel sets `__table__` untyped)."""
    mapped = inspect(model).local_table
    assert isinstance(mapped, Table)
    return mapped


Model = TypeVar("Model", bound=SQLModel)


async def fetch_all(conn: AsyncConnection, model: type[Model], query: Executable) -> list[Model]:
    """The rows of `query`, a select of `model`'s columns, as typed models.

    Run on the caller's Core connection rather than in an ORM session, so its transaction and
    snapshot stay as they are; the models are plain values, never tracked or flushed."""
    return [model(**row) for row in (await conn.execute(query)).mappings()]


async def fetch_one(
    conn: AsyncConnection,
    model: type[Model],
    query: Executable,
    parameters: dict[str, Any] | None = None,
) -> Model | None:
    """The first row of `query` (with its bound `parameters`) as a typed model; None if it
    finds none."""
    row = (await conn.execute(query, parameters)).mappings().first()
    return None if row is None else model(**row)


enquiry_table = table(Enquiry)
dispatch_table = table(Dispatch)
attempt_table = table(DispatchAttempt)
event_table = table(Event)
idempotency_table = table(IdempotencyRecord)
gazetteer_table = table(GazetteerPostcode)
circuit_table = table(Circuit)
status_update_table = table(StatusUpdate)
inbound_message_table = table(InboundMessage)
poll_state_table = table(PollState)
api_client_table = table(ApiClient)
staff_table = table(Staff)
console_session_table = table(ConsoleSession)
sign_in_lockout_table = table(SignInLockout)
audit_table = table(AuditEntry)
webhook_subscription_table = table(WebhookSubscription)
webhook_delivery_table = table(WebhookDelivery)
webhook_attempt_table = table(WebhookAttempt)
message_table = table(Message)
attachment_table = table(Attachment)
follow_up_table = table(FollowUp)
alert_table = table(Alert)
feed_cursor_table = table(FeedCursor)
