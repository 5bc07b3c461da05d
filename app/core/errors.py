"""One error hierarchy. Services raise these; app.problems renders them as RFC 9457."""

from __future__ import annotations

from dataclasses import dataclass


class ConfigError(Exception):
    """The configuration on disk or in the environment is wrong; raised at start-up."""


@dataclass(frozen=True)
class FieldError:
    """One thing wrong with one part of a request."""

    detail: str
    pointer: str | None = None  # JSON pointer into the body, e.g. "#/location/postcode"
    parameter: str | None = None  # a query parameter
    header: str | None = None


class DomainError(Exception):
    """A failure the client can act on; `slug` names its stable problem type."""

    slug = "bad-request"
    title = "Bad request"
    status = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class ValidationFailed(DomainError):
    slug, title, status = "validation", "Your request is not valid", 422


class OutOfArea(DomainError):
    slug, title, status = "out-of-area", "No organisation here covers that place", 422


class InvalidReference(DomainError):
    slug, title, status = "invalid-reference", "That is not a valid enquiry reference", 422


class NotFound(DomainError):
    slug, title, status = "not-found", "Not found", 404


class Unauthenticated(DomainError):
    slug, title, status = "unauthenticated", "We could not tell who sent this", 401


class NoValidKey(Unauthenticated):
    """No API key, or one that is unknown or revoked."""

    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    slug, title, status = "forbidden", "Your API key may not do this", 403

    def __init__(self, detail: str, *, needs: str) -> None:
        super().__init__(detail)
        self.headers = {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needs}"'}


class IdempotencyMismatch(DomainError):
    slug, title, status = (
        "idempotency-key-reused",
        "Idempotency-Key reused with a different request",
        422,
    )


class IdempotencyInFlight(DomainError):
    slug, title, status = (
        "idempotency-key-in-flight",
        "A request with this Idempotency-Key is still being processed",
        409,
    )
