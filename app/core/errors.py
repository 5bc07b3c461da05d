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
    client can act on. Its class is its problem type, in this one place: the `slug` of the type
    URI, the `title`, the HTTP `status` and what it `means` (the page /problems/{slug} serves).
    A subclass without a slug of its own shares its parent's type."""

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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "slug" in cls.__dict__:
            taken = PROBLEM_TYPES.setdefault(cls.slug, cls)
            if taken is not cls:
                raise TypeError(f"{cls.__name__} reuses the problem type of {taken.__name__}")


# Every problem type, slug → its class, filled as the classes are defined (here and the HTTP
# ones in app.api.problems).
PROBLEM_TYPES: dict[str, type[DomainError]] = {DomainError.slug: DomainError}


class ValidationFailed(DomainError):
    slug, title, status = "validation", "Your request is not valid", 422
    means = "A field is missing, malformed or too long; `errors` points at each one."


class OutOfArea(DomainError):
    slug, title, status = "out-of-area", "No organisation here covers that place", 422
    means = (
        "The postcode or point is valid but outside every area this gateway's organisations cover."
    )


class InvalidReference(DomainError):
    slug, title, status = "invalid-reference", "That is not a valid enquiry reference", 422
    means = (
        "The reference is malformed "
        "or its check character does not match: probably a typing mistake."
    )


class NotFound(DomainError):
    slug, title, status = "not-found", "Not found", 404
    means = "Nothing exists at this address."


class Unauthenticated(DomainError):
    slug, title, status = "unauthenticated", "We could not tell who sent this", 401
    means = "The credentials or the signature are missing, wrong or too old."


class NoValidKey(Unauthenticated):
    """No API key, or one that is unknown or revoked."""

    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    slug, title, status = "forbidden", "Your API key may not do this", 403
    means = "The key is valid but lacks the scope this request needs; `WWW-Authenticate` names it."

    def __init__(self, detail: str, *, needs: str) -> None:
        super().__init__(
            detail,
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needs}"'},
        )


class ClientExists(DomainError):
    slug, title, status = "conflict", "That name is taken", 409
    means = "Something with that name already exists."


class IdempotencyMismatch(DomainError):
    slug, title, status = (
        "idempotency-key-reused",
        "Idempotency-Key reused with a different request",
        422,
    )
    means = "Use a new key for a new request."


class IdempotencyInFlight(DomainError):
    slug, title, status = (
        "idempotency-key-in-flight",
        "A request with this Idempotency-Key is still being processed",
        409,
    )
    means = "Wait for the first request to finish, then retry."


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
