"""The triage queue in the console (scope triage): the enquiries waiting for a person to place
them, oldest first, each with why it is here, how long it has waited, its place, who holds it
and its candidates; claim and release, hand on to a candidate in one click, close at first
contact. The same service as GET /v1/triage and its acts (app/casework/triage.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.api.deps import Desk, State
from app.api.state import AppState
from app.casework import triage
from app.casework.schemas_triage import CloseIn, HandOnIn, TriageOrder
from app.clients.service import Scope
from app.clients.sessions import SignedIn
from app.core.errors import DomainError, ValidationFailed
from app.routers.console import session as console
from app.routers.console import work
from app.web.i18n import N_

router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)
PATH = f"{console.CONSOLE_PATH}/triage"
Agent = Annotated[SignedIn, Depends(console.needs(Scope.triage))]
Reference = Annotated[str, Path(max_length=32)]
Short = Annotated[str | None, Query(max_length=200)]
PAGE_SIZE = 20
# Why the agent handed it on, when they chose a candidate without saying more.
CHOSEN = "chosen from the candidates at the triage desk"
BANNERS = {
    "claimed": N_("You hold {reference}. Nobody else can act on it while you do."),
    "released": N_("You let go of {reference}: anyone at the desk can take it."),
    "handed_on": N_("{reference} was handed on. It is no longer at the triage desk."),
    "closed": N_("{reference} was closed at the desk."),
}
OUTCOMES = [
    ("first_contact", N_("Resolved at first contact"), N_("The note is the advice you gave.")),
    (
        "outside_remit",
        N_("Outside every partner's remit"),
        N_("The note is where you signposted them."),
    ),
]


@dataclass(frozen=True)
class Filters:
    service_code: str | None = None
    order: TriageOrder = TriageOrder.oldest
    cursor: str | None = None

    def query(self, **more: str) -> dict[str, str]:
        found = {"service_code": self.service_code or "", "order": self.order.value, **more}
        return {k: v for k, v in found.items() if v}


@dataclass
class Shown:
    """What the page shows besides the queue: the refusal, what the person had typed."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    entered: dict[str, str] = field(default_factory=dict)
    banner: str | None = None
    status: int = 200


@router.get("/triage")
async def queue(
    request: Request,
    state: State,
    person: Agent,
    desk: Desk,
    service_code: Annotated[str | None, Query(max_length=64)] = None,
    order: Short = None,
    cursor: Short = None,
    done: Short = None,
    ref: Short = None,
) -> Response:
    chosen = TriageOrder.newest if order == TriageOrder.newest else TriageOrder.oldest
    filters = Filters(service_code or None, chosen, cursor or None)
    shown = Shown(banner=work.banner_text(BANNERS, done, ref, None))
    if order not in (None, "", *TriageOrder):
        shown = Shown(
            errors=[("order", work.say(N_("Choose oldest first or newest first")))], status=422
        )
    return await _page(request, state, person, desk, filters, shown)


@router.post("/triage/{reference}/claim")
async def claim(
    request: Request, state: State, person: Agent, desk: Desk, reference: Reference
) -> Response:
    form = await work.posted(request, state, person)
    if form is None:
        return work.refused(request, state, person, PATH)
    try:
        taken = await triage.claim(desk, reference=reference, caller=person.caller)
    except DomainError as exc:
        return await _refusal(request, state, person, desk, exc, reference)
    return work.done(PATH, "claimed", ref=taken.reference)


@router.post("/triage/{reference}/release")
async def release(
    request: Request, state: State, person: Agent, desk: Desk, reference: Reference
) -> Response:
    form = await work.posted(request, state, person)
    if form is None:
        return work.refused(request, state, person, PATH)
    try:
        await triage.release(desk, reference=reference, caller=person.caller)
    except DomainError as exc:
        return await _refusal(request, state, person, desk, exc, reference)
    return work.done(PATH, "released", ref=reference)


@router.post("/triage/{reference}/hand-on")
async def hand_on(
    request: Request, state: State, person: Agent, desk: Desk, reference: Reference
) -> Response:
    """One click per candidate: the button names the organisation; the reason is optional."""
    form = await work.posted(request, state, person)
    if form is None:
        return work.refused(request, state, person, PATH)
    at = work.anchor(reference)
    entered = {"ref": work.shown(reference), "reason": form.one("reason")}
    try:
        body = HandOnIn(
            organisations=[o for o in form.many("organisation") if o][:5],
            reason=form.one("reason").strip()[:500] or CHOSEN,
        )
        answer = await triage.hand_on(desk, reference=reference, body=body, caller=person.caller)
    except ValidationError:
        problem = ValidationFailed(work.say(N_("Choose an organisation to hand it on to.")))
        return await _refusal(request, state, person, desk, problem, reference, entered)
    except DomainError as exc:
        return await _refusal(request, state, person, desk, exc, reference, entered, at)
    return work.done(PATH, "handed_on", ref=answer.reference)


@router.post("/triage/{reference}/close")
async def close(
    request: Request, state: State, person: Agent, desk: Desk, reference: Reference
) -> Response:
    form = await work.posted(request, state, person)
    if form is None:
        return work.refused(request, state, person, PATH)
    at = work.anchor(reference)
    outcome, note = form.one("outcome"), form.one("note")
    entered = {"ref": work.shown(reference), "outcome": outcome, "note": note}
    errors = []
    if outcome not in {code for code, _, _ in OUTCOMES}:
        errors.append((f"{at}-outcome", work.say(N_("Choose how it was closed"))))
    if not note.strip():
        errors.append((f"{at}-note", work.say(N_("Enter the advice or signposting you gave"))))
    if errors:
        shown = Shown(errors=errors, entered=entered, status=422)
        return await _page(request, state, person, desk, Filters(), shown)
    try:
        body = CloseIn.model_validate({"outcome": outcome, "note": note})
        answer = await triage.close(desk, reference=reference, body=body, caller=person.caller)
    except DomainError as exc:
        return await _refusal(request, state, person, desk, exc, reference, entered, at)
    return work.done(PATH, "closed", ref=answer.reference)


async def _refusal(
    request: Request,
    state: AppState,
    person: SignedIn,
    desk: triage.TriageDesk,
    exc: DomainError,
    reference: str,
    entered: dict[str, str] | None = None,
    at: str | None = None,
) -> Response:
    """The queue again at the service's status, its refusal at the top, linked to the item."""
    errors = work.problems(exc, at or work.anchor(reference))
    shown = Shown(errors=errors, entered=entered or {}, status=exc.status)
    return await _page(request, state, person, desk, Filters(), shown)


async def _page(
    request: Request,
    state: AppState,
    person: SignedIn,
    desk: triage.TriageDesk,
    filters: Filters,
    shown: Shown,
) -> Response:
    try:
        found = await triage.list_items(
            desk,
            service_code=filters.service_code,
            order=filters.order,
            cursor=filters.cursor,
            limit=PAGE_SIZE,
        )
    except DomainError as exc:  # a cursor this console did not give out
        shown = Shown(errors=[("order", exc.detail)], status=exc.status)
        filters = Filters(filters.service_code, filters.order)
        found = await triage.list_items(
            desk, service_code=filters.service_code, order=filters.order, limit=PAGE_SIZE
        )
    context: dict[str, Any] = {
        "items": found.items,
        "next_query": filters.query(cursor=found.next_cursor) if found.next_cursor else None,
        "first_query": filters.query() if filters.cursor else None,
        "filters": filters,
        "services": sorted(
            ((s.code, s.name) for s in desk.catalogue.services.values()), key=lambda s: s[1]
        ),
        "outcomes": OUTCOMES,
        "errors": shown.errors,
        "entered": shown.entered,
        "done": shown.banner,
        "anchor": work.anchor,
        "when": work.when,
        "waited": work.waited,
        "me": person.staff.name,
    }
    return console.render(
        request, state, person, "console/triage.html", context, status=shown.status
    )
