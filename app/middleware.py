"""ASGI middleware that guards every request before routing: body size and content type."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.problems import problem

_BODY_METHODS = {"POST", "PUT", "PATCH"}
# Open311 partners push their updates as forms (the mySociety servicerequestupdates style).
_FORM_PATH = ("/v1/inbound/", "/servicerequestupdates")


class BodyGuard:
    """413 for bodies over the limit (declared or streamed), 415 for non-JSON bodies."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await self._too_large(scope, receive, send)
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if not _acceptable(content_type, scope["path"]):
            response = problem(
                415,
                "unsupported-media-type",
                "Send the request body as application/json.",
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return
        if declared is not None:
            # The server holds the client to its Content-Length.
            await self.app(scope, receive, send)
            return
        body = await self._buffered(receive)
        if body is None:
            await self._too_large(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _buffered(self, receive: Receive) -> bytes | None:
        """A body sent without Content-Length, read whole; None once it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            "payload-too-large",
            f"The request body is over {self.max_body_bytes} bytes.",
            instance=scope["path"],
        )
        await response(scope, receive, send)


def _acceptable(content_type: bytes, path: str) -> bool:
    if content_type == b"application/json" or content_type.endswith(b"+json"):
        return True
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
