"""The staff console at /console/: one route module per area, each calling the services the API
calls (docs/console.md). `install` adds the areas to the app (each router has the /console
prefix itself: given at include time instead, the request log names a route without it) and
the console's answers to "not signed in" and "not allowed"."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from app.routers.console import (
    calls,
    dead_letters,
    enquiry,
    history,
    home,
    queue,
    sign_in,
    sso,
    stuck,
    triage,
)
from app.routers.console.session import NotAllowed, SignInNeeded, sign_in_redirect

AREAS = (sign_in, sso, home, calls, history, enquiry, triage, dead_letters, stuck, queue)


def install(app: FastAPI) -> None:
    """The console's routes, and its answers to "not signed in" and "not allowed" (a page,
    never problem+json)."""
    for area in AREAS:
        app.include_router(area.router)

    async def sign_in_needed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInNeeded)
        return sign_in_redirect(exc.back_to)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return home.not_allowed(request)

    app.add_exception_handler(SignInNeeded, sign_in_needed)
    app.add_exception_handler(NotAllowed, not_allowed)
