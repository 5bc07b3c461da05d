"""What the console's work queues share (triage, dead letters, stuck work, a partner's queue):
reading a posted form, refusing one without this session's CSRF field, Post/Redirect/Get with
a banner saying what was done, and a service's refusal shown as an error summary.

A banner is named by a key into a fixed table, with the reference or a count as its only
values (checked again here): a link cannot make the console say something it never said."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from app.api.state import AppState
from app.clients.sessions import SignedIn
from app.core import reference as references
from app.core.errors import DomainError, InvalidReference
from app.routers.console import session as console
from app.web import pages
from app.web.i18n import N_

MAX_FIELDS = 220  # a page of ticked rows (200) and a few more
MAX_FIELD = 2000  # the longest note a service takes


@dataclass(frozen=True)
class Posted:
    """A console form as posted: its text fields (each cut to MAX_FIELD), several values kept
    for a name that has them (ticked rows)."""

    fields: Mapping[str, list[str]]

    def one(self, name: str) -> str:
        values = self.fields.get(name) or [""]
        return values[0]

    def many(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))


async def posted(request: Request, state: AppState, person: SignedIn) -> Posted | None:
    """The form, or None when it lacks this session's CSRF field (nothing may be done)."""
    async with request.form(max_files=0, max_fields=MAX_FIELDS) as form:
        if not console.form_is_ours(state, person, form):
            return None
        fields: dict[str, list[str]] = {}
        for name, value in form.multi_items():
            if isinstance(value, str) and name != console.CSRF_FIELD:
                fields.setdefault(name, []).append(value[:MAX_FIELD])
    return Posted(fields)


def refused(request: Request, state: AppState, person: SignedIn, back: str) -> Response:
    """A form that did not come from this console's page: 400, nothing changed."""
    return console.render(
        request,
        state,
        person,
        "console/message.html",
        {
            "title": say(N_("The form could not be used")),
            "message": say(
                N_(
                    "It was out of date or did not come from this console. Nothing was "
                    "changed. Go back, reload the page and try again."
                )
            ),
            "back": back,
        },
        status=400,
    )


def done(path: str, banner: str, **values: str | int) -> Response:
    """303 to the page, which shows the banner `banner` (a key of its own BANNERS)."""
    query = urlencode({"done": banner, **{k: str(v) for k, v in values.items()}})
    return RedirectResponse(f"{path}?{query}", status_code=303, headers=pages.HEADERS)


def banner_text(
    banners: Mapping[str, str], done: str | None, ref: str | None, count: str | None
) -> str | None:
    """The banner a redirect named, its reference and count checked; None for anything else."""
    template = banners.get(done or "")
    if template is None:
        return None
    try:
        shown = references.display(references.parse(ref)) if ref else ""
    except InvalidReference:
        return None
    number = int(count) if count and count.isdigit() and len(count) < 7 else 0
    one = number == 1
    return pages.translate(
        console.ENGLISH,
        template,
        reference=shown,
        count=number,
        s="" if one else "s",
        ies="y" if one else "ies",
    )


def say(message: str) -> str:
    """A message of the console's own (marked with N_ where it is written), translated."""
    return pages.translate(console.ENGLISH, message)


def problems(exc: DomainError, at: str) -> list[tuple[str, str]]:
    """A service's refusal as error-summary entries linked to `at` (the field or the item the
    person acted on): its detail, then what each field error says."""
    return [(at, exc.detail), *((at, error.detail) for error in exc.errors if exc.status == 422)]


def shown(reference: str) -> str:
    """A reference as the pages show it (K7Q-M4X-PB6), or as typed if it cannot be one."""
    try:
        return references.display(references.parse(reference))
    except InvalidReference:
        return reference


def anchor(reference: str) -> str:
    """An id for an item's part of the page, from its reference."""
    return "item-" + "".join(ch for ch in reference if ch.isalnum()).lower()


def when(at: datetime | None) -> str:
    return pages.when(console.ENGLISH, at) if at else ""


def waited(seconds: float) -> str:
    """How long, as a person says it: 3 days 4 hours, 2 hours 5 minutes, 40 minutes."""
    minutes = int(seconds // 60)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days} day{'s' * (days != 1)} {hours} hour{'s' * (hours != 1)}"
    if hours:
        return f"{hours} hour{'s' * (hours != 1)} {mins} minute{'s' * (mins != 1)}"
    return f"{mins} minute{'s' * (mins != 1)}"
