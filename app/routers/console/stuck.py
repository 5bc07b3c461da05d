"""Stuck work in the console (scope deliveries:manage): the deliveries that need a person,
grouped as GET /v1/stuck groups them (app/casework/stuck.py), each linked to its enquiry's
page, a given-up one with its "send again" (the dead-letter desk's)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.deps import State
from app.api.state import AppState
from app.casework.stuck import stuck_work
from app.clients.service import Scope
from app.clients.sessions import SignedIn
from app.core.vocabulary import StuckKind
from app.routers.console import session as console
from app.routers.console import work
from app.web.i18n import N_

router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)
Manager = Annotated[SignedIn, Depends(console.needs(Scope.deliveries_manage))]
Short = Annotated[str | None, Query(max_length=200)]
BANNERS = {"redriven": N_("The delivery of {reference} was sent again; its attempts start again.")}
KINDS = {
    StuckKind.dead: (N_("Given up"), N_("Not delivered after every attempt, and not yet seen to.")),
    StuckKind.pending: (N_("Waiting too long"), N_("Still waiting to be delivered.")),
    StuckKind.past_resolve_target: (N_("Past the resolve target"), N_("Not finished in time.")),
    StuckKind.past_acknowledge_target: (
        N_("Past the acknowledge target"),
        N_("No word back from the organisation in time."),
    ),
    StuckKind.unacknowledged: (N_("Silent"), N_("Delivered, and nothing heard since.")),
}


@router.get("/stuck")
async def stuck(
    request: Request, state: State, person: Manager, done: Short = None, ref: Short = None
) -> Response:
    return await page(request, state, person, banner=work.banner_text(BANNERS, done, ref, None))


async def page(
    request: Request,
    state: AppState,
    person: SignedIn,
    *,
    banner: str | None = None,
    errors: list[tuple[str, str]] | None = None,
    status: int = 409,
) -> Response:
    """The report now (at the refusal's status when a redrive from it was refused)."""
    report = await stuck_work(
        engine=state.engine,
        catalogue=state.catalogue,
        settings=state.settings.stuck,
        caller=person.caller,
    )
    groups = [
        (kind, *KINDS[kind], [i for i in report.items if i.kind is kind])
        for kind in StuckKind
        if report.counts.get(kind)
    ]
    context: dict[str, Any] = {
        "groups": groups,
        "total": len(report.items),
        "errors": errors or [],
        "done": banner,
        "when": work.when,
        "waited": work.waited,
    }
    return console.render(
        request, state, person, "console/stuck.html", context, status=status if errors else 200
    )
