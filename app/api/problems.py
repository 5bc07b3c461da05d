"""RFC 9457 problem details: the one place that turns every error into application/problem+json."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.api.request_log import route_template
from app.core.errors import PROBLEM_TYPES as PROBLEM_TYPES
from app.core.errors import (
    DomainError,
    FieldError,
    NotFound,
    ValidationFailed,
    error_message,
)
from app.core.logs import error_type, mark_logged, safe_message

log = structlog.get_logger()
PROBLEM_JSON = "application/problem+json"


class MalformedJson(
    DomainError, slug="malformed-json", title="The body is not valid JSON", status=400
):
    """The request body could not be parsed."""


class MethodNotAllowed(
    DomainError, slug="method-not-allowed", title="Method not allowed", status=405
):
    """This address does not accept that method."""


class PayloadTooLarge(
    DomainError, slug="payload-too-large", title="Request body too large", status=413
):
    """The body is larger than the limit."""


class UnsupportedMediaType(
    DomainError, slug="unsupported-media-type", title="Unsupported media type", status=415
):
    """Send the body as application/json."""


class RateLimited(DomainError, slug="rate-limited", title="Too many requests", status=429):
    """This API key, or this address for calls without a key, has used up its rate limit; wait
    the seconds `Retry-After` gives."""


class UntrustedHost(DomainError, slug="untrusted-host", title="Unknown host", status=400):
    """The Host header names a host this gateway is not configured to answer to."""


class HeadersTooLarge(
    DomainError, slug="headers-too-large", title="Request headers too large", status=431
):
    """The request has more headers, or longer ones, than any real client sends."""


class CorsRefused(
    DomainError, slug="cors-refused", title="Cross-origin request refused", status=400
):
    """The browser's origin, method or headers are not among those this gateway allows."""


class Unavailable(DomainError, slug="unavailable", title="Not ready", status=503):
    """The database is not answering, or a background loop is down (`loops` names it); try again
    shortly."""


class InternalError(DomainError, slug="internal", title="Internal error", status=500):
    """Something went wrong on our side; it has been logged."""


# Starlette's own refusals, as the problem types they are.
_STARLETTE: dict[int, type[DomainError]] = {
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def documented_problem(description: str) -> dict[str, Any]:
    """An OpenAPI `responses` entry for an error answered as problem+json."""
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def documented_problems(
    descriptions: Mapping[int, str] | None = None, *, lacks: str | None = None
) -> dict[int | str, dict[str, Any]]:
    """A route's OpenAPI `responses` for its errors, status → description. `lacks` is what a
    key may lack for it: such a route answers 401 without a valid key and 403 without that."""
    scoped = {401: "No valid API key", 403: f"The API key lacks {lacks}"} if lacks else {}
    return {
        status: documented_problem(description)
        for status, description in sorted({**scoped, **(descriptions or {})}.items())
    }


def problem_type(slug: str) -> str:
    """The type URI of a problem: a page of this API describing it."""
    return f"/problems/{slug}"


def problem(
    error: DomainError,
    *,
    instance: str | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The problem+json answer of an error: its class gives the type, title and status;
    `extensions` are members of this answer's own (RFC 9457, section 3.2)."""
    body: dict[str, Any] = {
        "type": problem_type(error.slug),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        **(extensions or {}),
    }
    if instance:
        body["instance"] = instance
    if error.errors:
        body["errors"] = [
            {k: v for k, v in e.__dict__.items() if v is not None} for e in error.errors
        ]
    return JSONResponse(
        body, status_code=error.status, media_type=PROBLEM_JSON, headers=error.headers
    )


# Checks a request's caller (401) and rate limit (429) by raising a DomainError; run before a
# body is refused unread or unparsed, so refusals are no free way in (app.api.auth.admit).
Admit = Callable[[Request], Awaitable[None]]


async def refused_body(
    request: Request, admit: Admit | None, answer: Callable[[], JSONResponse]
) -> JSONResponse:
    """A refusal of the body, unless the caller is not admitted first (401, 429)."""
    if admit is not None:
        try:
            await admit(request)
        except DomainError as exc:
            return problem(exc, instance=request.url.path)
    return answer()


def install_problem_handlers(app: FastAPI, *, admit: Admit | None = None) -> None:
    """Route every exception the app can raise through `problem`."""

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return problem(exc, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in raw):
            # FastAPI parses the body before the route's dependencies authenticate the caller.
            return await refused_body(
                request,
                admit,
                lambda: problem(
                    MalformedJson("The request body is not valid JSON."),
                    instance=request.url.path,
                ),
            )
        errors = [_field_error(e) for e in raw]
        return problem(ValidationFailed(_summary(errors), errors), instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        def answer() -> JSONResponse:
            error = _STARLETTE.get(exc.status_code, DomainError)(
                str(exc.detail), headers=getattr(exc, "headers", None)
            )
            error.status = exc.status_code  # one with no type of its own is a bad-request
            return problem(error, instance=request.url.path)

        if exc.status_code in (400, 413, 415):  # a body FastAPI could not read
            return await refused_body(request, admit, answer)
        if exc.status_code == 405:
            # Starlette names only the first route of the path; a path may have several.
            allowed = ", ".join(allowed_methods(request.app, request.scope))
            refused = MethodNotAllowed(
                f"This address accepts {allowed}.", headers={"Allow": allowed}
            )
            return problem(refused, instance=request.url.path)
        return answer()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never the exception's own text: it may quote the statement's parameters or the body.
        log.error(
            "http.unhandled",
            method=request.method,
            route=route_template(request.scope),
            error=error_type(exc),
            message=safe_message(exc),
            exc_info=exc,
        )
        mark_logged(exc)
        return problem(
            InternalError("Something went wrong on our side."), instance=request.url.path
        )


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def allowed_methods(app: FastAPI, scope: Mapping[str, Any]) -> list[str]:
    """Every method some route of this path answers, HEAD wherever GET is."""
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**scope, "method": method})[0] is Match.FULL
            for route in app.router.routes
        )
    ]
    return sorted([*allowed, "HEAD"]) if "GET" in allowed else allowed


def _field_error(error: dict[str, Any]) -> FieldError:
    location = [str(part) for part in error.get("loc", ())]
    message = error_message(error)
    if location and location[0] == "body":
        return FieldError(message, pointer="#/" + "/".join(_escape(p) for p in location[1:]))
    if location and location[0] == "query":
        return FieldError(message, parameter=".".join(location[1:]))
    if location and location[0] == "header":
        return FieldError(message, header=".".join(location[1:]))
    return FieldError(message, parameter=".".join(location[1:]) or None)


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def _summary(errors: list[FieldError]) -> str:
    if len(errors) == 1:
        where = errors[0].pointer or errors[0].parameter or errors[0].header or ""
        return f"{where.removeprefix('#/') or 'The request'}: {errors[0].detail}"
    return f"{len(errors)} fields are not valid; see errors."
