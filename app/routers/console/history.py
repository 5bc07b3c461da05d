"""Caller history (`/console/history`): before taking a call, the agent finds the caller's
earlier enquiries by the phone number or email they give, through the service the API's
GET /v1/enquiries?phone=... uses (app.casework.history, which audits each search, naming the
person). The page's search is posted, not put in the address, so no phone number or email is
left in the browser's history; `?phone=` or `?email=` also works, for a link from another page."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import EmailStr, TypeAdapter, ValidationError

from app.api.deps import State
from app.api.state import AppState
from app.casework.history import caller_history
from app.clients.service import Scope
from app.clients.sessions import SignedIn
from app.core.errors import DomainError
from app.intake.reading import EnquiryFilter
from app.intake.schemas import PHONE_PATTERN
from app.routers.console import session as console
from app.routers.console.calls import refused
from app.routers.track import STATUS_LABELS
from app.web import pages
from app.web.i18n import N_

router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)
Reader = Annotated[SignedIn, Depends(console.needs(Scope.enquiries_read_all))]

_PHONE = re.compile(PHONE_PATTERN)
_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)
MAX_FIELD = 254
PAGE_SIZE = 50
NOTHING = N_("Enter the caller\u2019s phone number or email address")
NOT_EITHER = N_(
    "Enter a phone number, like 07700 900123, or an email address, like name@example.org"
)


@router.get("/history")
async def history_page(
    request: Request, state: State, person: Reader, phone: str = "", email: str = ""
) -> Response:
    """The search form; with `phone` or `email` (a link from another page, as the API's
    parameters), that caller's enquiries at once."""
    who = (phone or email).strip()[:MAX_FIELD]
    if not who:
        return _page(request, state, person, who="")
    return await _search(request, state, person, who, cursor=None)


@router.post("/history")
async def search(request: Request, state: State, person: Reader) -> Response:
    """The caller's enquiries, newest first (the search is audited by the service)."""
    async with request.form(max_files=0, max_fields=8) as form:
        if not console.form_is_ours(state, person, form):
            return refused(request, state, person)
        given = form.get("who")
        cursor = form.get("cursor")
    who = given.strip()[:MAX_FIELD] if isinstance(given, str) else ""
    return await _search(
        request, state, person, who, cursor=cursor if isinstance(cursor, str) else None
    )


async def _search(
    request: Request, state: AppState, person: SignedIn, who: str, *, cursor: str | None
) -> Response:
    by = _kind(who)
    if by is None:
        message = NOT_EITHER if who else NOTHING
        return _page(request, state, person, who=who, errors=[("who", message)], status=422)
    try:
        page = await caller_history(
            engine=state.engine,
            sealer=state.sealer,
            caller=person.caller,
            filters=EnquiryFilter.for_reader(person.caller),
            cursor=cursor or None,
            limit=PAGE_SIZE,
            phone=who if by == "phone" else None,
            email=who if by == "email" else None,
        )
    except DomainError as exc:
        return _page(request, state, person, who=who, errors=[("who", exc.detail)], status=422)
    rows = [
        {
            "reference": item.reference,
            "service": _service_name(state, item.service_code),
            "status": STATUS_LABELS.get(item.status, (item.status, ""))[0],
            "channel": item.channel.replace("_", " "),
            "received": pages.when(console.ENGLISH, item.created_at),
        }
        for item in page.items
    ]
    context = {"rows": rows, "by": by, "next_cursor": page.next_cursor}
    return _page(request, state, person, who=who, searched=True, found=context)


def _kind(who: str) -> str | None:
    """`email` or `phone`, as the API's parameters take them; None when it is neither."""
    if "@" in who:
        try:
            _EMAIL.validate_python(who)
        except ValidationError:
            return None
        return "email"
    return "phone" if _PHONE.match(who) and any(c.isdigit() for c in who) else None


def _service_name(state: AppState, code: str) -> str:
    service = state.catalogue.services.get(code)
    return service.name if service else code


def _page(
    request: Request,
    state: AppState,
    person: SignedIn,
    *,
    who: str,
    errors: list[tuple[str, str]] | None = None,
    status: int = 200,
    searched: bool = False,
    found: dict[str, Any] | None = None,
) -> Response:
    values = {
        "who": who,
        "errors": errors or [],
        "searched": searched,
        "may_take_call": person.allows(Scope.enquiries_submit),
        **(found or {}),
    }
    return console.render(request, state, person, "console/history.html", values, status=status)
