"""A partner organisation's own queue in the console (its staff: scope parts:update with an
organisation): their organisation's parts delivered and not yet finished, each to acknowledge,
resolve, or send back as not theirs, through the same service as
POST /v1/enquiries/{reference}/parts/{organisation_id}/updates (app/casework/parts.py). They
never see another organisation's part: the services filter by the person's organisation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from app.api.deps import Adapters, Catalogue, Engine, State
from app.api.state import AppState
from app.casework import parts
from app.catalogue.status import Status
from app.clients.service import Scope
from app.clients.sessions import SignedIn
from app.core.errors import DomainError
from app.routers.console import session as console
from app.routers.console import work
from app.web.i18n import N_

router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)
PATH = f"{console.CONSOLE_PATH}/queue"
Reference = Annotated[str, Path(max_length=32)]
Short = Annotated[str | None, Query(max_length=200)]
PAGE_SIZE = 50
# The moves this page offers, by the word the service takes; any other word is refused here.
MOVES = {
    Status.acknowledged: N_("{reference}: your part is acknowledged."),
    Status.in_progress: N_("{reference}: your part is in progress."),
    Status.resolved: N_("{reference}: your part is resolved."),
    Status.not_our_responsibility: N_("{reference} was sent back to the triage desk as not yours."),
}
BANNERS = {str(status): text for status, text in MOVES.items()}
NEEDS_NOTE = {Status.not_our_responsibility}
# How a part still open is named in the queue (a status of ours, as a person reads it).
LABELS = {
    Status.dispatched: N_("New"),
    Status.acknowledged: N_("Acknowledged"),
    Status.in_progress: N_("In progress"),
    Status.action_scheduled: N_("Action scheduled"),
    Status.information_requested: N_("Waiting for the caller"),
    Status.reopened: N_("Reopened"),
}


async def partner(
    person: Annotated[SignedIn, Depends(console.needs(Scope.parts_update))],
) -> SignedIn:
    """A partner organisation's staff: the gateway's own staff work the desks instead."""
    if person.caller.organisation_id is None:
        raise console.NotAllowed
    return person


Partner = Annotated[SignedIn, Depends(partner)]


@router.get("/queue")
async def queue(
    request: Request,
    state: State,
    person: Partner,
    cursor: Short = None,
    done: Short = None,
    ref: Short = None,
) -> Response:
    banner = work.banner_text(BANNERS, done, ref, None)
    return await _page(request, state, person, cursor=cursor, banner=banner)


@router.post("/queue/{reference}/update")
async def update(
    request: Request,
    state: State,
    person: Partner,
    engine: Engine,
    catalogue: Catalogue,
    adapters: Adapters,
    reference: Reference,
) -> Response:
    form = await work.posted(request, state, person)
    if form is None:
        return work.refused(request, state, person, PATH)
    at = work.anchor(reference)
    said, note = form.one("status"), form.one("description").strip()
    entered = {"ref": work.shown(reference), "description": note}
    if said not in BANNERS:
        errors = [(f"{at}-description", work.say(N_("Choose what to do with this part")))]
        return await _page(request, state, person, errors=errors, entered=entered, status=422)
    if Status(said) in NEEDS_NOTE and not note:
        errors = [(f"{at}-description", work.say(N_("Say whose it is, or why it is not yours")))]
        return await _page(request, state, person, errors=errors, entered=entered, status=422)
    try:
        answer = await parts.update_part(
            engine=engine,
            catalogue=catalogue,
            adapters=adapters,
            caller=person.caller,
            reference=reference,
            organisation_id=person.caller.organisation_id or "",
            change=parts.PartUpdateIn(status=said, description=note or None),
        )
    except DomainError as exc:
        errors = work.problems(exc, f"{at}-description")
        return await _page(
            request, state, person, errors=errors, entered=entered, status=exc.status
        )
    return work.done(PATH, said, ref=answer.reference)


async def _page(
    request: Request,
    state: AppState,
    person: SignedIn,
    *,
    cursor: str | None = None,
    banner: str | None = None,
    errors: list[tuple[str, str]] | None = None,
    entered: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    try:
        found = await parts.open_parts(
            engine=state.engine,
            catalogue=state.catalogue,
            caller=person.caller,
            cursor=cursor,
            limit=PAGE_SIZE,
        )
    except DomainError as exc:  # a cursor this console did not give out
        errors, status, cursor = [("parts", exc.detail)], exc.status, None
        found = await parts.open_parts(
            engine=state.engine, catalogue=state.catalogue, caller=person.caller, limit=PAGE_SIZE
        )
    organisation = state.catalogue.organisations.get(person.caller.organisation_id or "")
    context: dict[str, Any] = {
        "items": found.items,
        "organisation_name": organisation.name if organisation else person.caller.organisation_id,
        "next_query": {"cursor": found.next_cursor} if found.next_cursor else None,
        "first": bool(cursor),
        "errors": errors or [],
        "entered": entered or {},
        "done": banner,
        "anchor": work.anchor,
        "when": work.when,
        "labels": LABELS,
    }
    return console.render(request, state, person, "console/queue.html", context, status=status)
