"""The dead-letter desk in the console (scope deliveries:manage): deliveries given up, each sent
again or closed as handled outside the gateway (by phone, with a note), and many sent again at
once once the cause is fixed (an organisation's since a time, or the rows ticked). The same
services as GET /v1/dispatches and its acts (app/casework/deliveries.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from app.api.deps import Catalogue, Engine, State
from app.api.state import AppState
from app.casework import deliveries
from app.clients.service import Scope
from app.clients.sessions import SignedIn
from app.core.errors import DomainError, NotFound, ValidationFailed
from app.core.vocabulary import OutboxState
from app.routers.console import session as console
from app.routers.console import stuck, work
from app.web import pages
from app.web.i18n import N_

router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)
PATH = f"{console.CONSOLE_PATH}/dead-letters"
STUCK_PATH = f"{console.CONSOLE_PATH}/stuck"
Manager = Annotated[SignedIn, Depends(console.needs(Scope.deliveries_manage))]
DispatchId = Annotated[str, Path(max_length=64)]
Short = Annotated[str | None, Query(max_length=200)]
PAGE_SIZE = 50
MAX_TICKED = 200
BANNERS = {
    "redriven": N_("The delivery of {reference} was sent again; its attempts start again."),
    "handled": N_("The delivery of {reference} was closed as handled outside the gateway."),
    "redriven_many": N_("{count} given-up deliver{ies} sent again."),
}


@router.get("/dead-letters")
async def dead_letters(
    request: Request,
    state: State,
    person: Manager,
    engine: Engine,
    catalogue: Catalogue,
    organisation: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Short = None,
    done: Short = None,
    ref: Short = None,
    count: Short = None,
) -> Response:
    banner = work.banner_text(BANNERS, done, ref, count)
    return await _page(
        request, state, person, organisation=organisation or None, cursor=cursor, banner=banner
    )


@router.post("/dead-letters/redrive")
async def redrive_many(
    request: Request, state: State, person: Manager, engine: Engine, catalogue: Catalogue
) -> Response:
    """Every dead delivery to one organisation given up since a time (UK time, as typed)."""
    form = await work.posted(request, state, person)
    if form is None:
        return work.refused(request, state, person, PATH)
    entered = {"many_organisation": form.one("organisation"), "since": form.one("since")}
    errors = []
    if entered["many_organisation"] not in catalogue.organisations:
        errors.append(
            ("many-organisation", work.say(N_("Choose the organisation whose deliveries to send")))
        )
    since = _uk_time(entered["since"])
    if since is None:
        errors.append(("since", work.say(N_("Enter since when, as a date and time"))))
    if errors or since is None:
        return await _page(request, state, person, errors=errors, entered=entered, status=422)
    try:
        answer = await deliveries.redrive_many(
            engine=engine,
            catalogue=catalogue,
            caller=person.caller,
            organisation_id=entered["many_organisation"],
            since=since,
        )
    except DomainError as exc:
        errors = work.problems(exc, "many-organisation")
        return await _page(request, state, person, errors=errors, entered=entered, status=422)
    return work.done(PATH, "redriven_many", count=answer.count)


@router.post("/dead-letters/redrive-ticked")
async def redrive_ticked(
    request: Request, state: State, person: Manager, engine: Engine, catalogue: Catalogue
) -> Response:
    """The rows ticked, each sent again (each on its own: one no longer dead stops no other)."""
    form = await work.posted(request, state, person)
    if form is None:
        return work.refused(request, state, person, PATH)
    ticked = list(dict.fromkeys(form.many("dispatch")))[:MAX_TICKED]
    if not ticked:
        errors = [("ticked", work.say(N_("Tick the deliveries to send again")))]
        return await _page(request, state, person, errors=errors, status=422)
    sent, errors, status = 0, [], 200
    for value in ticked:
        try:
            await deliveries.redrive_dispatch(
                engine=engine, catalogue=catalogue, caller=person.caller, dispatch_id=_id(value)
            )
            sent += 1
        except DomainError as exc:
            errors += work.problems(exc, "ticked")
            status = max(status, exc.status)
    if errors:
        errors.append(("ticked", f"{sent} of the {len(ticked)} ticked were sent again."))
        return await _page(request, state, person, errors=errors, status=status)
    return work.done(PATH, "redriven_many", count=sent)


@router.post("/dead-letters/{dispatch_id}/redrive")
async def redrive_one(
    request: Request,
    state: State,
    person: Manager,
    engine: Engine,
    catalogue: Catalogue,
    dispatch_id: DispatchId,
) -> Response:
    form = await work.posted(request, state, person)
    back = STUCK_PATH if form is not None and form.one("back") == "stuck" else PATH
    if form is None:
        return work.refused(request, state, person, back)
    try:
        answer = await deliveries.redrive_dispatch(
            engine=engine, catalogue=catalogue, caller=person.caller, dispatch_id=_id(dispatch_id)
        )
    except DomainError as exc:
        if back == STUCK_PATH:
            return await stuck.page(request, state, person, errors=work.problems(exc, "items"))
        errors = work.problems(exc, f"row-{dispatch_id}")
        return await _page(request, state, person, errors=errors, status=exc.status)
    return work.done(back, "redriven", ref=answer.reference)


@router.post("/dead-letters/{dispatch_id}/close")
async def close_one(
    request: Request,
    state: State,
    person: Manager,
    engine: Engine,
    catalogue: Catalogue,
    dispatch_id: DispatchId,
) -> Response:
    form = await work.posted(request, state, person)
    if form is None:
        return work.refused(request, state, person, PATH)
    note = form.one("note").strip()
    at = f"note-{dispatch_id}"
    entered = {"note_for": dispatch_id, "note": note}
    if not note:
        errors = [(at, work.say(N_("Enter how it was seen to, for example who you rang")))]
        return await _page(request, state, person, errors=errors, entered=entered, status=422)
    try:
        answer = await deliveries.close_dispatch(
            engine=engine,
            catalogue=catalogue,
            caller=person.caller,
            dispatch_id=_id(dispatch_id),
            note=note,
        )
    except DomainError as exc:
        errors = work.problems(exc, at)
        return await _page(
            request, state, person, errors=errors, entered=entered, status=exc.status
        )
    return work.done(PATH, "handled", ref=answer.reference)


def _id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("There is no such delivery.") from None


def _uk_time(value: str) -> datetime | None:
    """A datetime-local field's value (2026-12-03T09:00), read as UK time, in UTC."""
    try:
        typed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if typed.tzinfo is not None or not 2000 <= typed.year <= 9998:
        return None
    return typed.replace(tzinfo=pages.LONDON).astimezone(UTC)


async def _page(
    request: Request,
    state: AppState,
    person: SignedIn,
    *,
    organisation: str | None = None,
    cursor: str | None = None,
    banner: str | None = None,
    errors: list[tuple[str, str]] | None = None,
    entered: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    catalogue = state.catalogue
    filters = deliveries.DispatchFilter(state=OutboxState.dead, organisation_id=organisation)
    try:
        found = await deliveries.list_dispatches(
            engine=state.engine,
            catalogue=catalogue,
            caller=person.caller,
            filters=filters,
            cursor=cursor,
            limit=PAGE_SIZE,
        )
    except ValidationFailed as exc:  # a cursor this console did not give out
        errors, status, cursor = work.problems(exc, "organisation"), exc.status, None
        found = await deliveries.list_dispatches(
            engine=state.engine,
            catalogue=catalogue,
            caller=person.caller,
            filters=filters,
            cursor=None,
            limit=PAGE_SIZE,
        )
    own = person.caller.organisation_id
    organisations = sorted(
        ((o.id, o.name) for o in catalogue.organisations.values() if own in (None, o.id)),
        key=lambda o: o[1],
    )
    query = {"organisation": organisation} if organisation else {}
    context: dict[str, Any] = {
        "items": found.items,
        "organisations": organisations,
        "organisation": organisation,
        "next_query": {**query, "cursor": found.next_cursor} if found.next_cursor else None,
        "first_query": query if cursor else None,
        "errors": errors or [],
        "entered": entered or {},
        "done": banner,
        "when": work.when,
        "waited": work.waited,
    }
    return console.render(
        request, state, person, "console/dead_letters.html", context, status=status
    )
