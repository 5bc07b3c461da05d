"""The request id and the access log: outermost ASGI middleware (plain ASGI, so the ids it
binds reach every log line of the request, and it costs a few microseconds).

Each request gets an id (the trusted front end's X-Request-ID, or a new one), bound to every
log line while it is handled and returned as X-Request-ID; when it has been answered, one
`http.request` event says the method, the route's template (never the path as sent, nor its
query string: the citizen's token travels there), the status and the time taken.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.settings import Settings

log = structlog.get_logger()
HEADER = b"x-request-id"
# What a front end's id may look like: a UUID, a trace id, a short token; never a sentence.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class RequestLog:
    """Bind a request id for the request's log lines, answer it in X-Request-ID, log the answer."""

    def __init__(self, app: ASGIApp, *, trust_request_id: bool) -> None:
        self.app = app
        self.trust_request_id = trust_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._request_id(scope)
        header = (HEADER, request_id.encode())
        status = 500  # if nothing is sent, the server answers 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "http.request",
                method=scope["method"],
                route=route_template(scope),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.reset_contextvars(**tokens)
            structlog.contextvars.unbind_contextvars("client")

    def _request_id(self, scope: Scope) -> str:
        if self.trust_request_id:
            for name, value in scope["headers"]:
                if name == HEADER and _REQUEST_ID.fullmatch(value):
                    return bytes(value).decode()
        return uuid.uuid4().hex


def route_template(scope: Scope) -> str | None:
    """The template of the route that answered (`/v1/enquiries/{reference}`), if one did."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


def bind_client(name: str) -> None:
    """Name the authenticated API client on the rest of the request's log lines."""
    structlog.contextvars.bind_contextvars(client=name)


def add_request_log(app: FastAPI, settings: Settings) -> None:
    """Outermost of all, so every answer (a guard's refusal, an unexpected 500) is logged."""
    build = app.build_middleware_stack
    trust = settings.api.trust_request_id
    app.build_middleware_stack = lambda: RequestLog(build(), trust_request_id=trust)  # type: ignore[method-assign]
