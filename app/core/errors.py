"""One error hierarchy. Services raise these; app.api.problems renders them as RFC 9457."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


class ConfigError(Exception):
    """The configuration on disk or in the environment is wrong; raised at start-up."""


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with one part of a request."""

    detail: str
    pointer: str | None = None  # JSON pointer into the body, e.g. "#/location/postcode"
    parameter: str | None = None  # a query parameter
    header: str | None = None


def error_message(error: Mapping[str, Any]) -> str:
    """A pydantic error as a person reads it: a text's length is in characters (pydantic says
    "items" once a validator of ours has run first), without "Value error, "."""
    context = error.get("ctx") or {}
    if error.get("type") == "too_long" and isinstance(error.get("input"), str):
        return f"should have at most {_characters(context.get('max_length'))}"
    if error.get("type") == "too_short" and isinstance(error.get("input"), str):
        return f"should have at least {_characters(context.get('min_length'))}"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def _characters(count: Any) -> str:
    return "1 character" if count == 1 else f"{count} characters"


class DomainError(Exception):
    """A failure answered to the client as problem+json; services raise these for what the
    client can act on. Its class is its problem type, in this one place: the class keywords
    give the `slug` of the type URI, the `title` and the HTTP `status`, its docstring what it
    `means` (the page /problems/{slug} serves). A subclass without a slug of its own shares its
    parent's type."""

    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"
    status: int = 400  # an instance overrides it only for a status Starlette chose
    means: ClassVar[str] = "The request could not be understood."
    headers: dict[str, str] | None = None

    def __init__(
        self,
        detail: str,
        errors: list[FieldError] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        if headers is not None:
            self.headers = headers

    def __init_subclass__(
        cls,
        *,
        slug: str | None = None,
        title: str | None = None,
        status: int | None = None,
        **kwargs: Any,
    ) -> None:
        """A problem type is declared in the class's keywords, and its docstring is what it
        means: `class NotFound(DomainError, slug=..., title=..., status=404): "..."`."""
        super().__init_subclass__(**kwargs)
        if slug is not None:
            if title is None or status is None or not cls.__doc__:
                raise TypeError(f"{cls.__name__} needs a title, a status and a docstring")
            cls.slug, cls.title, cls.status = slug, title, status
            cls.means = " ".join(cls.__doc__.split())
        if "slug" in cls.__dict__:  # however it was set, a slug is one type's alone
            taken = PROBLEM_TYPES.setdefault(cls.slug, cls)
            if taken is not cls:
                raise TypeError(f"{cls.__name__} reuses the problem type of {taken.__name__}")


# Every problem type, slug → its class, filled as the classes are defined (here and the HTTP
# ones in app.api.problems).
PROBLEM_TYPES: dict[str, type[DomainError]] = {DomainError.slug: DomainError}


class ValidationFailed(
    DomainError, slug="validation", title="Your request is not valid", status=422
):
    """A field is missing, malformed or too long; `errors` points at each one."""


class OutOfArea(
    DomainError, slug="out-of-area", title="No organisation here covers that place", status=422
):
    """The postcode or point is valid but outside every area this gateway's organisations cover."""


class InvalidReference(
    DomainError, slug="invalid-reference", title="That is not a valid enquiry reference", status=422
):
    """The reference is malformed or its check character does not match: probably a typing
    mistake."""


class NotFound(DomainError, slug="not-found", title="Not found", status=404):
    """Nothing exists at this address."""


class Unauthenticated(
    DomainError, slug="unauthenticated", title="We could not tell who sent this", status=401
):
    """The credentials or the signature are missing, wrong or too old."""


class NoValidKey(Unauthenticated):
    """No API key, or one that is unknown or revoked."""

    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError, slug="forbidden", title="Your API key may not do this", status=403):
    """The key is valid but lacks the scope this request needs; `WWW-Authenticate` names it."""

    def __init__(self, detail: str, *, needs: str) -> None:
        super().__init__(
            detail,
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needs}"'},
        )


class InvalidLink(DomainError, slug="invalid-link", title="That link is not valid", status=403):
    """A signed link (the unsubscribe link of a message to the citizen) whose signature is
    not the gateway's for what it names."""


class ClientExists(DomainError, slug="conflict", title="That name is taken", status=409):
    """Something with that name already exists."""


class StateConflict(
    DomainError, slug="state-conflict", title="That cannot be done to it now", status=409
):
    """What it acts on is not in a state that allows this (already handed on, not given up,
    held by another person); `detail` says what state it is in. Read it again and decide."""


class IdempotencyMismatch(
    DomainError,
    slug="idempotency-key-reused",
    title="Idempotency-Key reused with a different request",
    status=422,
):
    """Use a new key for a new request."""


class IdempotencyInFlight(
    DomainError,
    slug="idempotency-key-in-flight",
    title="A request with this Idempotency-Key is still being processed",
    status=409,
):
    """Wait for the first request to finish, then retry."""


# What an adapter may raise (app.adapters.base); here because the outbound guard raises them too.
class DeliveryError(Exception):
    """Delivery failed; the message is shown to agents, so it never holds personal data."""


class RetryableError(DeliveryError):
    def __init__(
        self, message: str, *, retry_after: float | None = None, ambiguous: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # The request may have reached the back-office (it timed out or the connection broke
        # after it was sent): the next attempt waits to let it settle, then looks it up.
        self.ambiguous = ambiguous


class PermanentError(DeliveryError):
    pass


class LeaseLost(DeliveryError):
    """The dispatcher no longer holds this delivery: another worker may be sending it, so no
    further call may be made. Adapters let it through."""


class AttachmentTooLarge(
    DomainError, slug="attachment-too-large", title="That file is too large", status=413
):
    """A photo or document is larger than the gateway keeps (in bytes, or an image in
    pixels), or a request has more files than it takes; `detail` gives the limit."""


class UnsupportedAttachment(
    DomainError,
    slug="unsupported-attachment",
    title="That kind of file is not accepted",
    status=415,
):
    """Only photos (JPEG, PNG, WebP, GIF) and PDF documents are kept; the kind is found in
    the file's content, never in its name."""


class UnreadableAttachment(
    DomainError, slug="unreadable-attachment", title="That file could not be read", status=422
):
    """The file is empty, cut short or damaged: it looks like a photo or document but does
    not open as one."""


class SignedLinkRefused(
    DomainError, slug="signed-link-refused", title="This link is wrong or has expired", status=403
):
    """A signed attachment link (an Open311 media_url) whose signature is not the gateway's
    for this file, or whose time is up; ask the gateway's API for the file instead."""
