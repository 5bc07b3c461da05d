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
from app.core.errors import DomainError, FieldError
from app.core.logs import error_type, mark_logged, safe_message

log = structlog.get_logger()
PROBLEM_JSON = "application/problem+json"

# Every problem type this API answers with: slug → (title, when it happens).
PROBLEM_TYPES: dict[str, tuple[str, str]] = {
    "validation": (
        "Your request is not valid",
        "A field is missing, malformed or too long; `errors` points at each one.",
    ),
    "malformed-json": ("The body is not valid JSON", "The request body could not be parsed."),
    "out-of-area": (
        "No organisation here covers that place",
        "The postcode or point is valid but outside every area this gateway's organisations cover.",
    ),
    "invalid-reference": (
        "That is not a valid enquiry reference",
        "The reference is malformed "
        "or its check character does not match: probably a typing mistake.",
    ),
    "not-found": ("Not found", "Nothing exists at this address."),
    "unauthenticated": (
        "We could not tell who sent this",
        "The credentials or the signature are missing, wrong or too old.",
    ),
    "forbidden": (
        "Your API key may not do this",
        "The key is valid but lacks the scope this request needs; `WWW-Authenticate` names it.",
    ),
    "conflict": ("That name is taken", "Something with that name already exists."),
    "method-not-allowed": ("Method not allowed", "This address does not accept that method."),
    "idempotency-key-reused": (
        "Idempotency-Key reused with a different request",
        "Use a new key for a new request.",
    ),
    "idempotency-key-in-flight": (
        "Request with this Idempotency-Key in progress",
        "Wait for the first request to finish, then retry.",
    ),
    "payload-too-large": ("Request body too large", "The body is larger than the limit."),
    "unsupported-media-type": ("Unsupported media type", "Send the body as application/json."),
    "bad-request": ("Bad request", "The request could not be understood."),
    "rate-limited": (
        "Too many requests",
        "This API key, or this address for calls without a key, has used up its rate limit; "
        "wait the seconds `Retry-After` gives.",
    ),
    "untrusted-host": (
        "Unknown host",
        "The Host header names a host this gateway is not configured to answer to.",
    ),
    "headers-too-large": (
        "Request headers too large",
        "The request has more headers, or longer ones, than any real client sends.",
    ),
    "cors-refused": (
        "Cross-origin request refused",
        "The browser's origin, method or headers are not among those this gateway allows.",
    ),
    "unavailable": (
        "Not ready",
        "The database is not answering, or a background loop is down (`loops` names it); "
        "try again shortly.",
    ),
    "internal": ("Internal error", "Something went wrong on our side; it has been logged."),
}


def documented_problem(description: str) -> dict[str, Any]:
    """An OpenAPI `responses` entry for an error answered as problem+json."""
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def problem_type(slug: str) -> str:
    """The type URI of a problem: a page of this API describing it."""
    return f"/problems/{slug}"


def problem(
    status: int,
    slug: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response; `extensions` are members of its own (RFC 9457, section 3.2)."""
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title or PROBLEM_TYPES.get(slug, (slug,))[0],
        "status": status,
        "detail": detail,
        **(extensions or {}),
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = [{k: v for k, v in e.__dict__.items() if v is not None} for e in errors]
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


# Checks a request's caller (401) and rate limit (429) by raising a DomainError; run before a
# body is refused unread or unparsed, so refusals are no free way in (app.auth.admit).
Admit = Callable[[Request], Awaitable[None]]


def domain_problem(exc: DomainError, instance: str) -> JSONResponse:
    """The problem+json answer of a domain error."""
    return problem(
        exc.status,
        exc.slug,
        exc.detail,
        title=exc.title,
        errors=exc.errors,
        instance=instance,
        headers=exc.headers,
    )


async def refused_body(
    request: Request, admit: Admit | None, answer: Callable[[], JSONResponse]
) -> JSONResponse:
    """A refusal of the body, unless the caller is not admitted first (401, 429)."""
    if admit is not None:
        try:
            await admit(request)
        except DomainError as exc:
            return domain_problem(exc, request.url.path)
    return answer()


def install_problem_handlers(app: FastAPI, *, admit: Admit | None = None) -> None:
    """Route every exception the app can raise through `problem`."""

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return domain_problem(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in raw):
            # FastAPI parses the body before the route's dependencies authenticate the caller.
            return await refused_body(
                request,
                admit,
                lambda: problem(
                    400,
                    "malformed-json",
                    "The request body is not valid JSON.",
                    instance=request.url.path,
                ),
            )
        errors = [_field_error(e) for e in raw]
        return problem(
            422, "validation", _summary(errors), errors=errors, instance=request.url.path
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {
            404: "not-found",
            405: "method-not-allowed",
            413: "payload-too-large",
            415: "unsupported-media-type",
        }.get(exc.status_code, "bad-request")

        def answer() -> JSONResponse:
            return problem(
                exc.status_code,
                slug,
                str(exc.detail),
                instance=request.url.path,
                headers=getattr(exc, "headers", None),
            )

        if exc.status_code in (400, 413, 415):  # a body FastAPI could not read
            return await refused_body(request, admit, answer)
        if exc.status_code == 405:
            # Starlette names only the first route of the path; a path may have several.
            allowed = ", ".join(allowed_methods(request.app, request.scope))
            return problem(
                405,
                slug,
                f"This address accepts {allowed}.",
                instance=request.url.path,
                headers={"Allow": allowed},
            )
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
            500, "internal", "Something went wrong on our side.", instance=request.url.path
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
