"""The one interface every back-office adapter implements, and the errors it may raise.

Adapters never retry, sleep or swallow errors: they deliver once, or raise RetryableError (the
dispatcher tries again later, honouring retry_after) or PermanentError (the dispatch is dead).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

import httpx
from pydantic import AnyUrl, BaseModel, ConfigDict, Field

from app.catalogue.catalogue import Organisation
from app.catalogue.status import Status

# Defined in core, which the outbound guard needs too; named here, where adapters raise them.
from app.core.errors import DeliveryError as DeliveryError
from app.core.errors import LeaseLost as LeaseLost
from app.core.errors import PermanentError as PermanentError
from app.core.errors import RetryableError as RetryableError
from app.core.models import Enquiry
from app.core.reference import display
from app.core.vocabulary import MessageKind


async def no_fence() -> None:
    """The fence of a delivery no lease guards (a one-off call outside the dispatcher)."""


Fence = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class EnquirySnapshot:
    """The enquiry as adapters see it, fixed when an attempt starts: what was asked, and only
    the citizen's details this organisation may receive. Built in one place (`of`), so no
    adapter reads a stored row or a field the data-sharing rules withhold."""

    reference: str  # as people read it: K7Q-M4X-PB6
    service_code: str
    service_name: str
    channel: str
    description: str
    location: Mapping[str, Any] | None
    attributes: Mapping[str, Any]
    created_at: datetime
    # Only what this organisation may receive, and only with the citizen's consent; else None.
    # The citizen's language and accessibility needs are among these fields.
    citizen: Mapping[str, Any] | None

    @classmethod
    def of(
        cls,
        enquiry: Enquiry,
        *,
        citizen: Mapping[str, Any] | None,
        organisation: Organisation,
        service_name: str | None,
    ) -> EnquirySnapshot:
        """The snapshot of a stored enquiry and its opened citizen's details, for one
        organisation; `service_name` None (a service since removed) shows its code."""
        return cls(
            reference=display(enquiry.reference),
            service_code=enquiry.service_code,
            service_name=service_name or enquiry.service_code,
            channel=enquiry.channel,
            description=enquiry.description,
            location=_read_only(enquiry.location),
            attributes=MappingProxyType(dict(enquiry.attributes or {})),
            created_at=enquiry.created_at,
            citizen=_read_only(shareable_citizen(citizen, enquiry.consent, organisation)),
        )


def _read_only(values: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A read-only copy: no adapter can change what the next one, or a retry, is given."""
    return None if values is None else MappingProxyType(dict(values))


@dataclass(frozen=True)
class Delivery:
    """One enquiry on its way to one organisation."""

    dispatch_id: uuid.UUID
    attempt: int
    organisation: Organisation
    enquiry: EnquirySnapshot
    # Awaited before every call that may create the enquiry at the back-office: raises
    # LeaseLost once this delivery is no longer ours to make.
    fence: Fence = no_fence
    # A person sent it again after it was given up: its attempts count from 1 again, but an
    # attempt before may have reached the back-office.
    redriven: bool = False

    @property
    def is_repeat(self) -> bool:
        """Whether an earlier attempt may have made the case already: look before creating."""
        return self.attempt > 1 or self.redriven


def shareable_citizen(
    citizen: Mapping[str, Any] | None,
    consent: Mapping[str, Any] | None,
    organisation: Organisation,
) -> dict[str, Any] | None:
    """The citizen's details this organisation may be sent: none without consent, and then
    only the fields its data-sharing agreement lists."""
    if not (consent or {}).get("share_contact_details"):
        return None
    shared: dict[str, Any] = {k: v for k, v in (citizen or {}).items() if k in organisation.shares}
    return shared or None


@dataclass(frozen=True)
class Receipt:
    """The back-office accepted the enquiry; its own reference when it gave one."""

    remote_reference: str | None


@dataclass(frozen=True)
class AttachmentFile:
    """A photo or document added to an enquiry, as adapters send it: already re-encoded (an
    image has no EXIF left) and opened from the store."""

    attachment_id: uuid.UUID
    filename: str  # ours, never the uploader's: photo-1.jpg, document-2.pdf
    content_type: str  # found in the content: image/jpeg, image/png, application/pdf
    content: bytes
    # A signed URL the gateway serves this file at until it expires (Open311's media_url).
    url: str


@dataclass(frozen=True)
class FollowUp:
    """Something said after submission (more information, a withdrawal, a reopening), on its
    way to one organisation whose back-office holds the case. Sent once: `follow_up_id` is
    the key a back-office dedupes a repeat on (Open311 update_id, Idempotency-Key, FHIR
    identifier, the follow-up email's Message-ID)."""

    follow_up_id: uuid.UUID
    attempt: int
    kind: MessageKind  # information, withdrawal or reopening; never a note
    organisation: Organisation
    # The enquiry's first delivery to this organisation: an email follow-up threads on its
    # Message-ID (app.adapters.smtp.message_id), and remote_reference is that delivery's case.
    dispatch_id: uuid.UUID
    remote_reference: str  # the back-office's reference for the case
    enquiry: EnquirySnapshot  # as for a delivery: only what this organisation may receive
    text: str | None  # the information, or why it was withdrawn or reopened
    attachments: tuple[AttachmentFile, ...]
    created_at: datetime  # when the citizen or agent said it
    by_citizen: bool = True  # said by the citizen (by their token), else by staff for them
    fence: Fence = no_fence  # awaited before every call that may make the update

    @property
    def is_repeat(self) -> bool:
        """Whether an earlier attempt may have made the update already."""
        return self.attempt > 1


@dataclass(frozen=True)
class FollowUpReceipt:
    """The back-office took the follow-up."""

    remote_reference: str | None  # its own id for the update or comment, when it gave one
    # A reopening the protocol makes as a new case (FHIR: a new ServiceRequest that
    # `replaces` the completed one): the part's back-office reference moves to it.
    case_reference: str | None = None


@dataclass(frozen=True)
class Tracked:
    """A delivered dispatch whose progress is followed at the back-office."""

    dispatch_id: uuid.UUID
    reference: str  # ours, as people read it: K7Q-M4X-PB6
    remote_reference: str
    delivered_at: datetime


@dataclass(frozen=True)
class RemoteUpdate:
    """One change reported by a back-office, in its own words."""

    remote_reference: str
    # Unique per organisation: an update seen twice (pushed and polled) is recorded once.
    update_id: str
    status: str
    description: str | None
    updated_at: datetime


@dataclass(frozen=True)
class PollResult:
    updates: list[RemoteUpdate]
    # Back-office references learnt after delivery (an Open311 token resolved), by dispatch.
    references: dict[uuid.UUID, str] = field(default_factory=dict)
    # Where the next poll starts, opaque to the poller (e.g. a start_date); None keeps the last.
    cursor: str | None = None


class AdapterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    # Seconds one call may take; without it, IAP_HTTP__TIMEOUT_SECONDS.
    timeout_seconds: float | None = Field(default=None, gt=0, le=120)
    # At most this many calls to this organisation at once, across every worker.
    max_concurrent: int = Field(default=8, ge=1, le=256)
    # Ask the back-office for status changes this often; None: it pushes them, or never tells.
    poll_seconds: float | None = Field(default=None, gt=0, le=86_400)

    def outbound_urls(self) -> dict[str, str]:
        """Every address this adapter calls, by field, for the outbound rules: its URL fields."""
        return {name: str(value) for name, value in self if isinstance(value, AnyUrl)}


class OutboundCheck(Protocol):
    """The outbound rules (app.core.outbound.OutboundGuard), for adapters that connect by
    themselves."""

    async def check_url(self, url: str) -> None:
        """Raise PermanentError unless `url` may be called."""


class Adapter:
    """Delivers enquiries to one organisation's back-office."""

    config_model: ClassVar[type[AdapterConfig]] = AdapterConfig
    # The back-office's status words in our vocabulary; an organisation's status_map adds more.
    status_words: ClassVar[Mapping[str, Status]] = {}
    # Whether poll() is implemented, so that poll_seconds may be set.
    can_poll: ClassVar[bool] = False

    def __init__(
        self,
        *,
        config: Any,
        client: httpx.AsyncClient,
        timeout: float,
        outbound: OutboundCheck | None = None,
    ) -> None:
        self.config = config
        self.client = client  # checks the outbound rules itself, on every request
        self.timeout = timeout
        # For connections made without `client` (SMTP); None: nothing is refused.
        self.outbound = outbound

    async def deliver(self, delivery: Delivery) -> Receipt:
        """Create the enquiry at the back-office once; safe to repeat after an ambiguous failure."""
        raise NotImplementedError

    async def follow_up(self, follow_up: FollowUp) -> FollowUpReceipt:
        """Give the back-office more information, a withdrawal or a reopening for a case it
        holds, once; safe to repeat after an ambiguous failure (dedupe on follow_up_id)."""
        raise PermanentError(f"{self.config.type} back-offices cannot be sent follow-ups")

    def recognises_repeats(self) -> bool:
        """Whether a repeat after an ambiguous attempt is known not to make a second case (by
        the back-office's key, condition or Message-ID, or by our look-up)."""
        return True

    async def poll(self, tracked: Sequence[Tracked], *, cursor: str | None) -> PollResult:
        """Changes to these dispatches since `cursor` (the last poll's cursor, None at first)."""
        raise NotImplementedError


def enquiry_record(delivery: Delivery) -> dict[str, Any]:
    """The enquiry as one JSON document: what it is, and the citizen's details the organisation
    may have (for adapters that send it whole)."""
    enquiry = delivery.enquiry
    record: dict[str, Any] = {
        "reference": enquiry.reference,
        "dispatch_id": str(delivery.dispatch_id),
        "service_code": enquiry.service_code,
        "service_name": enquiry.service_name,
        "description": enquiry.description,
        "channel": enquiry.channel,
        "location": dict(enquiry.location) if enquiry.location is not None else None,
        "attributes": dict(enquiry.attributes),
        "submitted_at": enquiry.created_at.isoformat(),
    }
    if enquiry.citizen is not None:
        record["citizen"] = dict(enquiry.citizen)
    return record


def raise_for_response(
    response: httpx.Response, *, detail: Callable[[httpx.Response], str] | None = None
) -> None:
    """Map an HTTP answer onto the error classes: 5xx, 408, 409, 425, 429 retry; other 4xx don't.

    `detail` gives a protocol's own data-free summary of the answer (": ..."), for either
    class; without it a refusal names its RFC 9457 title. Never the body: a refusal may echo
    back the fields it rejected, the citizen's among them.
    """
    status = response.status_code
    if status < 400:
        return
    summary = f"HTTP {status} from {response.request.url.host}"
    if status >= 500 or status in (408, 409, 425, 429):
        suffix = detail(response) if detail else ""
        raise RetryableError(f"{summary}{suffix}", retry_after=retry_after_seconds(response))
    raise PermanentError(f"{summary}{(detail or problem_title)(response)}")


def problem_title(response: httpx.Response) -> str:
    """ ": title" of an RFC 9457 problem answer, else nothing. A title is the same for every
    occurrence of its type, so it holds no personal data."""
    try:
        answer = response.json()
    except ValueError:
        return ""
    title = answer.get("title") if isinstance(answer, dict) else None
    return f": {title[:200]}" if isinstance(title, str) and title else ""


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header as seconds from now (it may be seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def describe_transport_error(exc: httpx.HTTPError) -> str:
    """A short, data-free description of a transport failure."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"


def transport_error(exc: httpx.HTTPError) -> RetryableError:
    """The retryable error for a failed call; ambiguous unless the request was never sent
    (no connection could be made, or none was free in the pool)."""
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return RetryableError(describe_transport_error(exc), ambiguous=not unsent)
