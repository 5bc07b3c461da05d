"""Open311's errors: an array of `{code, description}`, with the spec's statuses.

GeoReport v2 answers 403 for a missing or bad api_key, 404 for an unknown service, request,
jurisdiction or token, and 400 for anything else wrong with the request; the gateway keeps
405, 413 (too large), 415 (not a form), 429 (rate limit, with Retry-After) and 5xx as they
are, because a client should act on them differently.

Every error under /open311/ is made as problem+json first, by the one error handler, and
turned into this shape on its way out (app.api.middleware.Open311Errors): so an error from a
guard, a dependency or the route itself reads alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.open311.formats import Format, render_bytes

PREFIX = "/open311/"
_KEPT = frozenset({403, 404, 405, 413, 415, 429})


def open311_status(status: int) -> int:
    """The status Open311 gives to what the gateway answered `status`."""
    if status == 401:
        return 403
    if status in _KEPT or status >= 500:
        return status
    return 400


def format_of_path(path: str) -> Format:
    """The format a path asks for by its suffix; JSON when it names none we speak."""
    last = path.rsplit("/", 1)[-1]
    named = Format.of(last.rsplit(".", 1)[-1]) if "." in last else None
    return named or Format.json


def description_of(problem: Mapping[str, Any]) -> str:
    """A problem's words, with each field problem named, in one line."""
    parts = [str(problem.get("detail") or problem.get("title") or "The request was refused.")]
    for field in problem.get("errors") or []:
        where = field.get("parameter") or _form_name(str(field.get("pointer") or ""))
        parts.append(f"{where}: {field.get('detail')}" if where else str(field.get("detail")))
    return " ".join(parts)


def _form_name(pointer: str) -> str:
    """A JSON pointer into the enquiry as the form field it came from."""
    parts = pointer.removeprefix("#/").split("/")
    if parts[0] == "attributes" and len(parts) > 1:
        return f"attribute[{parts[1]}]"
    return ".".join(part for part in parts if part)


def from_problem(status: int, body: bytes, fmt: Format) -> tuple[int, bytes, str]:
    """(status, body, content type) of the Open311 error for a problem+json answer."""
    try:
        problem = json.loads(body)
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    code = open311_status(status)
    errors = [{"code": code, "description": description_of(problem)}]
    content, content_type = render_bytes(errors, fmt, root="errors")
    return code, content, content_type
