"""ASGI middleware that guards every request before routing: the size of its headers, the host
it names, CORS for browser front ends, body size and content type; HEAD answered wherever GET
is; and security headers on every answer."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.alerts.sender import UNSUBSCRIBE_PATH
from app.api.problems import (
    Admit,
    CorsRefused,
    HeadersTooLarge,
    PayloadTooLarge,
    UnsupportedMediaType,
    UntrustedHost,
    problem,
    refused_body,
)
from app.core.settings import Environment, Settings
from app.open311.errors import PREFIX as OPEN311_PREFIX
from app.open311.errors import format_of_path, from_problem
from app.web.pages import PAGE_PREFIXES

BODY_METHODS = {"POST", "PUT", "PATCH"}
# Open311 partners push their updates as forms (the mySociety servicerequestupdates style).
_FORM_PATH = ("/v1/inbound/", "/servicerequestupdates")
# Photos and documents are uploaded as multipart forms here, with a larger limit.
_UPLOAD_PATH = ("/v1/enquiries/", "/information")
# A mail client's one-click unsubscribe (RFC 8058) posts a form, with no API key; so do the
# pages' forms (multipart where a photo may come with it).
_FORM_BODIES = (b"application/x-www-form-urlencoded", b"multipart/form-data")


class BodyGuard:
    """413 for bodies over the limit (declared or streamed), 415 for non-JSON bodies; each only
    once `admit` has let the caller through (else its 401 or 429)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        admit: Admit | None = None,
        max_upload_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.admit = admit
        self.max_upload_bytes = max_upload_bytes or max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared in (None, b"0") and b"transfer-encoding" not in headers:
            # No body, so nothing to refuse: routing answers (405 for a method the path lacks).
            await self.app(scope, receive, send)
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        limit = self._limit(content_type, scope["path"])
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._too_large(scope, receive, send, limit)
            return
        if not _acceptable(content_type, scope["path"]):
            response = await refused_body(
                Request(scope),
                self.admit,
                lambda: problem(
                    UnsupportedMediaType("Send the request body as application/json."),
                    instance=scope["path"],
                ),
            )
            await response(scope, receive, send)
            return
        if declared is not None:
            # The server holds the client to its Content-Length.
            await self.app(scope, receive, send)
            return
        body = await self._buffered(receive, limit)
        if body is None:
            await self._too_large(scope, receive, send, limit)
            return
        await self.app(scope, _replay(body, receive), send)

    def _limit(self, content_type: bytes, path: str) -> int:
        """The larger limit for an upload of photos and documents; else the body limit."""
        return self.max_upload_bytes if _is_upload(content_type, path) else self.max_body_bytes

    async def _buffered(self, receive: Receive, limit: int) -> bytes | None:
        """A body sent without Content-Length, read whole; None once it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = await refused_body(
            Request(scope),
            self.admit,
            lambda: problem(
                PayloadTooLarge(f"The request body is over {limit} bytes."),
                instance=scope["path"],
            ),
        )
        await response(scope, receive, send)


def _is_upload(content_type: bytes, path: str) -> bool:
    prefix, suffix = _UPLOAD_PATH
    if content_type != b"multipart/form-data" or not path.endswith(suffix):
        return False
    return path.startswith((prefix, *PAGE_PREFIXES))


def _acceptable(content_type: bytes, path: str) -> bool:
    if path.startswith(OPEN311_PREFIX):  # Open311 clients post forms (GeoReport v2), only
        return content_type in _FORM_BODIES
    if content_type == b"application/json" or content_type.endswith(b"+json"):
        return True
    if _is_upload(content_type, path):
        return True
    if path == UNSUBSCRIBE_PATH or path.startswith(PAGE_PREFIXES):
        return content_type in _FORM_BODIES
    prefix, suffix = _FORM_PATH
    is_form_path = path.startswith(prefix) and path.endswith(suffix)
    return is_form_path and content_type == b"application/x-www-form-urlencoded"


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body first, then whatever the client sends next (its disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


# What a browser front end sends, and the answer headers its script may read.
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")
CORS_EXPOSED_HEADERS = (
    "Location",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "Idempotent-Replayed",
    "WWW-Authenticate",
    "X-Request-ID",
)


def add_http_guards(app: FastAPI, settings: Settings) -> None:
    """CORS (only when origins are listed), trusted hosts, then security headers outermost, so
    every answer carries them, the refusals of the guards inside included."""
    if settings.api.cors_origins:
        app.add_middleware(
            ProblemCORS,
            allow_origins=settings.api.cors_origins,
            allow_methods=("GET", "POST"),
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            allow_credentials=False,  # keys travel in Authorization, never in cookies
            max_age=600,
        )
    app.add_middleware(TrustedHosts, allowed_hosts=settings.api.trusted_hosts)
    app.add_middleware(HeadAsGet)
    app.add_middleware(
        HeaderLimits,
        max_count=settings.api.max_header_count,
        max_bytes=settings.api.max_header_bytes,
    )
    # Outside Starlette's own outermost error handler, so an unexpected 500 carries them too.
    build = app.build_middleware_stack
    hsts = settings.env is Environment.production
    app.build_middleware_stack = lambda: SecurityHeaders(  # type: ignore[method-assign]
        Open311Errors(build()), hsts=hsts
    )


class Open311Errors:
    """Under /open311/, every problem+json answer (a guard's, a dependency's, a route's, an
    unexpected error's) turned into Open311's errors array, in the format the path names."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(OPEN311_PREFIX):
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def rewrite(message: Message) -> None:
            if message["type"] == "http.response.start" and _is_problem(message):
                held.append(message)
                return
            if not held or message["type"] != "http.response.body":
                await send(message)
                return
            held.append(message)
            if message.get("more_body", False):
                return
            start, *parts = held
            body = b"".join(part.get("body", b"") for part in parts)
            status, content, content_type = from_problem(
                start["status"], body, format_of_path(scope["path"])
            )
            headers = [
                (name, value)
                for name, value in start["headers"]
                if name not in (b"content-type", b"content-length", b"www-authenticate")
            ]
            headers += [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(content)).encode()),
            ]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, rewrite)


def _is_problem(start: Message) -> bool:
    return any(
        name == b"content-type" and value.startswith(b"application/problem+json")
        for name, value in start["headers"]
    )


class ProblemCORS(CORSMiddleware):
    """Starlette's CORS rules; a refused preflight answered as problem+json like every error."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = problem(CorsRefused(f"{bytes(response.body).decode()}."))
        for name in (b"vary", b"access-control-allow-methods", b"access-control-max-age"):
            value = response.headers.get(name.decode())
            if value is not None:
                refused.headers[name.decode()] = value
        return refused


class HeaderLimits:
    """431 for a request with more headers, or more header bytes, than a real client sends."""

    def __init__(self, app: ASGIApp, *, max_count: int, max_bytes: int) -> None:
        self.app = app
        self.max_count = max_count
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope.get("headers", ())
        if scope["type"] == "http" and (
            len(headers) > self.max_count
            or sum(len(name) + len(value) for name, value in headers) > self.max_bytes
        ):
            response = problem(
                HeadersTooLarge(
                    f"Send at most {self.max_count} headers and {self.max_bytes} bytes of them."
                ),
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class HeadAsGet:
    """HEAD answered wherever GET is: the GET's status and headers, without its body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_head(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_head)


_TRUSTED = "iap.trusted_host"


async def _mark_trusted(scope: Scope, receive: Receive, send: Send) -> None:
    scope[_TRUSTED] = True


async def _discard(message: Message) -> None:
    return None


class TrustedHosts:
    """Starlette's TrustedHostMiddleware decides; a refusal is answered as problem+json (400)
    like every other error, rather than its plain-text one."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allow_any = "*" in allowed_hosts
        self.check = TrustedHostMiddleware(
            _mark_trusted, allowed_hosts=allowed_hosts, www_redirect=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.check(scope, receive, _discard)
        if scope.pop(_TRUSTED, False):
            await self.app(scope, receive, send)
            return
        response = problem(
            UntrustedHost("This gateway does not answer to the host named in the Host header."),
            instance=scope["path"],
        )
        await response(scope, receive, send)


# default-src 'none': an API answer is data, never a page that may load anything. The docs
# pages (Swagger UI, ReDoc) load their scripts and styles from the gateway itself, but run an
# inline script and ReDoc's workers, so HTML answers get only frame-ancestors; they show no
# personal data.
_API_CSP = b"default-src 'none'; frame-ancestors 'none'"
_PAGE_CSP = b"frame-ancestors 'none'"
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),  # a token in a URL must not leak onwards
)
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class SecurityHeaders:
    """Headers on every answer: no sniffing, no framing, no referrer, no caching (answers carry
    citizens' personal data), a content security policy, and HSTS in production."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.extra = (*_ALWAYS, _HSTS) if hsts else _ALWAYS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self._headers(list(message.get("headers", ())))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        names = {name.lower(): value for name, value in headers}
        if b"cache-control" not in names:
            headers.append((b"cache-control", b"no-store"))
        # A page that sets its own, stricter policy keeps it (the tracking page's).
        if b"content-security-policy" not in names:
            page = names.get(b"content-type", b"").startswith(b"text/html")
            headers.append((b"content-security-policy", _PAGE_CSP if page else _API_CSP))
        headers.extend(self.extra)
        return headers
