"""The console's start page: the areas the signed-in person's role opens."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.deps import State
from app.routers.console import session as console

router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)


@router.get("/")
async def home(request: Request, state: State, person: console.Person) -> Response:
    return console.render(request, state, person, "console/home.html", {"done": None})


def not_allowed(request: Request) -> Response:
    """The 403 page: signed in, without the role this page needs."""
    state = request.app.state.iap
    return console.render(
        request,
        state,
        None,
        "console/message.html",
        {
            "title": "You cannot use this page",
            "message": "Your role does not include this work. Ask a supervisor if you need it.",
            "back": "/console/",
        },
        status=403,
    )
