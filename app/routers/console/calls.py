"""Taking a call (`/console/calls/new`): an agent on the phone finds the service by the words
the caller uses, answers its questions, gives the place and sees where it will go before
sending (the routing intake itself uses, app.intake.service.locate_and_route), takes the
caller's details and reads them the consent script, then sends it through intake as the API's
POST /v1/enquiries does, on the channel `phone`, under an idempotency key kept in the form (a
double click sends one enquiry). The reference is then shown to read back.

Everything is one form posted back to itself (its `action` button says what to do), so it
works without JavaScript; console-calls.js only refreshes the routing preview as the postcode
is typed (GET /console/calls/preview) and stops a second click."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from app.api.deps import State
from app.api.state import AppState
from app.casework.schemas_triage import Candidate
from app.casework.triage import candidates_for
from app.catalogue.catalogue import Service
from app.catalogue.search import find_services
from app.clients.service import Scope
from app.clients.sessions import SignedIn
from app.core.errors import (
    DomainError,
    IdempotencyInFlight,
    IdempotencyMismatch,
    InvalidReference,
    NotFound,
    ValidationFailed,
    error_message,
)
from app.intake.idempotency import StoredResponse
from app.intake.reading import get_enquiry
from app.intake.schemas import Channel, EnquiryIn, Location, PreferredContact
from app.intake.service import accept_enquiry, checked_attributes, locate_and_route
from app.routers.console import session as console
from app.web import pages
from app.web.i18n import N_

router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)
CALLS = f"{console.CONSOLE_PATH}/calls"
Agent = Annotated[SignedIn, Depends(console.needs(Scope.enquiries_submit))]

_KEY = re.compile(r"^[0-9a-f]{32}$")
MAX_FIELD = 4000
# The caller's details, as EnquiryIn's `citizen` takes them, in the order the page asks.
CITIZEN_FIELDS = ("name", "phone", "email", "preferred_contact", "language", "accessibility_needs")
# What a form carries from one step to the next (the service's own answers are its alone).
CARRIED = ("q", "description", "postcode", "address", *CITIZEN_FIELDS, "share", "updates")
YES, NO = "yes", "no"
# The page's fields in the order it shows them: the error summary lists problems so.
ORDER = (
    *("service", "attributes", "description", "postcode", "address"),
    *CITIZEN_FIELDS,
    *("share", "updates", "send"),
)

LABELS: Mapping[str, str] = {
    "description": N_("What the caller says"),
    "postcode": N_("Postcode"),
    "address": N_("Address or description of the place"),
    "name": N_("Full name"),
    "phone": N_("Phone number"),
    "email": N_("Email address"),
    "preferred_contact": N_("How they would like to be contacted"),
    "language": N_("Language"),
    "accessibility_needs": N_("Accessibility needs"),
}
# What to say when intake refuses a field left empty (what must be given is intake's rule).
EMPTY: Mapping[str, str] = {
    "description": N_("Enter what the caller says"),
    "postcode": N_("Enter the postcode or describe the place"),
}
REQUIRED_ANSWER = N_("Answer the question “{question}”")
# What to say when a detail given is not one EnquiryIn takes (the rule is EnquiryIn's).
INVALID: Mapping[str, str] = {
    "phone": N_("Enter a phone number, like 07700 900123 or +44 7700 900123"),
    "email": N_("Enter an email address, like name@example.org"),
    "language": N_("Enter a language tag, like cy for Welsh or pl for Polish"),
}
UNREACHABLE: Mapping[str, str] = {
    "email": N_("Enter their email address, or choose another way to contact them"),
    "phone": N_("Enter their phone number, or choose another way to contact them"),
}
NO_SERVICE = N_("Select the service the call is about")
NO_SHARE = N_("Select whether the caller agrees to their details being passed on")
NO_UPDATES = N_("Select whether the caller wants updates")
ALREADY_SENT = N_(
    "This call was sent already (the form was used twice with different answers). "
    "Start a new call to send another enquiry."
)
STILL_SENDING = N_("The first click is still being sent. Wait a moment and send again.")
PREFERRED = (
    (PreferredContact.phone.value, N_("Phone (a call or a text)")),
    (PreferredContact.email.value, N_("Email")),
    (PreferredContact.post.value, N_("Post")),
    (PreferredContact.none.value, N_("They do not want to be contacted")),
)
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_LETTERS = (
    "Alfa Bravo Charlie Delta Echo Foxtrot Golf Hotel India Juliett Kilo Lima Mike November "
    "Oscar Papa Quebec Romeo Sierra Tango Uniform Victor Whiskey X-ray Yankee Zulu"
)
# Each character of a reference as it is said over the phone ("K for Kilo", "7 seven").
SPOKEN = {
    **{str(n): f"{n} {word}" for n, word in enumerate(_DIGITS)},
    **{word[0]: f"{word[0]} for {word}" for word in _LETTERS.split(" ")},
}
# A second click arrives while the first is still being stored: wait for its answer.
IN_FLIGHT_TRIES, IN_FLIGHT_WAIT = 40, 0.25


@dataclass
class CallForm:
    """What the agent has typed so far, as the form carries it."""

    key: str = ""
    service: str = ""
    answers: dict[str, str | list[str]] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, form: FormData) -> CallForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value.strip()[:MAX_FIELD] if isinstance(value, str) else ""

        answers: dict[str, str | list[str]] = {}
        for name in form:
            if name.startswith("attr-"):
                chosen = [v.strip() for v in form.getlist(name) if isinstance(v, str)]
                answers[name[5:]] = chosen if len(chosen) != 1 else chosen[0]
        key = text("key")
        return cls(
            key=key if _KEY.match(key) else uuid.uuid4().hex,
            service=text("service"),
            answers=answers,
            values={name: text(name) for name in CARRIED},
        )

    def get(self, name: str) -> str:
        return self.values.get(name, "")


@dataclass(frozen=True)
class Going:
    """One organisation the enquiry would go to, and why; the triage desk's candidates."""

    name: str
    reason: str
    triage: bool
    candidates: list[Candidate]


@dataclass(frozen=True)
class Preview:
    """Where the enquiry would go as the form stands, or why that cannot be said yet."""

    going: list[Going] = field(default_factory=list)
    problem: str | None = None
    waiting: bool = False  # no place given yet


@router.get("/calls/new")
async def new_call(
    request: Request,
    state: State,
    person: Agent,
    q: str = "",
    service: str = "",
) -> Response:
    """The first step (which service?), or, for a service named, its questions. (Odd query
    values are cut short or found to be no service: a page, never a refusal.)"""
    form = CallForm(key=uuid.uuid4().hex, service=service[:64], values={"q": q.strip()[:200]})
    chosen = state.catalogue.services.get(service)
    if chosen is None:
        return _chooser(request, state, person, form)
    return await _details(request, state, person, form, chosen, preview=False)


@router.post("/calls/new")
async def call_step(request: Request, state: State, person: Agent) -> Response:
    """A step of the form posted back: find services, choose one, change it, check where it
    goes, or send it (the button pressed says which)."""
    async with request.form(max_files=0, max_fields=80) as raw:
        if not console.form_is_ours(state, person, raw):
            return refused(request, state, person)
        form = CallForm.read(raw)
        action = raw.get("action")
    chosen = state.catalogue.services.get(form.service)
    if action in ("find", "change", "start") or (action != "choose" and chosen is None):
        return _chooser(request, state, person, form)
    if chosen is None:
        errors = [("service", NO_SERVICE)]
        return _chooser(request, state, person, form, errors=errors, status=422)
    if action == "send":
        return await _send(request, state, person, form, chosen)
    return await _details(request, state, person, form, chosen, preview=action == "check")


@router.get("/calls/preview")
async def preview_fragment(
    request: Request,
    state: State,
    person: Agent,
    service: str = "",
    postcode: str = "",
    address: str = "",
) -> Response:
    """The routing preview alone, for console-calls.js to put in the page as the postcode is
    typed. `address` only says whether one is given (its text stays in the form)."""
    chosen = state.catalogue.services.get(service)
    if chosen is None:
        raise NotFound(f"There is no service '{service}'.")
    given = "given" if address else ""
    shown = await routing_preview(state, chosen, postcode.strip()[:20], given)
    return pages.render(request, "console/calls_preview.html", console.ENGLISH, {"preview": shown})


@router.get("/calls/sent/{reference}")
async def sent(
    request: Request,
    state: State,
    person: Agent,
    reference: str,
) -> Response:
    """The reference, large and in groups, to read back to the caller; where it went."""
    caller = person.caller
    try:
        view = await get_enquiry(
            engine=state.engine,
            catalogue=state.catalogue,
            sealer=state.sealer,
            reference=reference[:32],
            reader=caller,
            client_id=None if caller.allows(Scope.enquiries_read_all) else caller.client_id,
        )
    except (NotFound, InvalidReference):
        return _message(request, state, person, N_("No such enquiry"), 404)
    groups = view.reference.split("-")
    context = {
        "view": view,
        "groups": groups,
        "spoken": [[SPOKEN.get(c, c) for c in group] for group in groups],
        "service": state.catalogue.services.get(view.service_code),
    }
    return console.render(request, state, person, "console/calls_sent.html", context)


async def routing_preview(
    state: AppState, service: Service, postcode: str, address: str
) -> Preview:
    """Where an enquiry for the service at this place would go, by intake's own locating and
    routing; the triage desk's candidates when it cannot decide."""
    if not postcode and not address and service.needs_location:
        return Preview(waiting=True)
    try:
        location = Location(postcode=postcode or None, address=address or None)
    except ValidationError as exc:
        return Preview(problem=error_message(exc.errors()[0]))
    try:
        place, destinations = await locate_and_route(
            service=service,
            location=None if location.is_empty() else location,
            catalogue=state.catalogue,
            locator=state.intake.locator,
        )
    except DomainError as exc:
        return Preview(problem=exc.detail)
    catalogue = state.catalogue
    going = []
    for destination in destinations:
        organisation = catalogue.organisations[destination.organisation_id]
        triage = organisation.id == catalogue.triage.id
        candidates = (
            candidates_for(service=service, place=place, catalogue=catalogue) if triage else []
        )
        going.append(Going(organisation.name, destination.reason, triage, candidates))
    return Preview(going=going)


async def _send(
    request: Request, state: AppState, person: SignedIn, form: CallForm, service: Service
) -> Response:
    errors = _consent_errors(form)
    enquiry: EnquiryIn | None = None
    try:
        enquiry = EnquiryIn.model_validate(_body(form, service))
    except ValidationError as exc:
        errors += _pydantic_errors(exc, form)
        errors += _attribute_errors(service, form)
        errors += await _place_errors(state, service, form)
    if enquiry is None or errors:
        return await _refuse(request, state, person, form, service, errors)
    try:
        reference = await _accept(state, person, enquiry, form.key)
    except IdempotencyMismatch:
        return await _refuse(request, state, person, form, service, [("send", ALREADY_SENT)])
    except IdempotencyInFlight:
        return await _refuse(request, state, person, form, service, [("send", STILL_SENDING)])
    except DomainError as exc:
        refusals = _intake_errors(exc, form, service)
        return await _refuse(request, state, person, form, service, refusals)
    return RedirectResponse(f"{CALLS}/sent/{reference}", status_code=303, headers=pages.HEADERS)


async def _accept(state: AppState, person: SignedIn, enquiry: EnquiryIn, key: str) -> str:
    """Through intake, as POST /v1/enquiries with an Idempotency-Key: the form's key, so the
    same form sent twice gives the first enquiry's reference."""
    for _ in range(IN_FLIGHT_TRIES):
        try:
            answer = await accept_enquiry(
                enquiry=enquiry,
                context=state.intake,
                caller=person.caller,
                idempotency_key=f"console-call-{key}",
            )
        except IdempotencyInFlight:
            await asyncio.sleep(IN_FLIGHT_WAIT)
            continue
        if isinstance(answer, StoredResponse):
            return str(answer.body["reference"])
        return answer.reference
    raise IdempotencyInFlight("The first request with this form is still being stored.")


def _body(form: CallForm, service: Service) -> dict[str, Any]:
    """The form as the JSON body POST /v1/enquiries takes, on the channel `phone`."""
    location = {k: form.get(k) for k in ("postcode", "address") if form.get(k)}
    citizen = {k: form.get(k) for k in CITIZEN_FIELDS if form.get(k)}
    return {
        "service_code": service.code,
        "description": form.get("description"),
        "channel": Channel.phone.value,
        "location": location or None,
        "citizen": citizen or None,
        "attributes": _answers(service, form),
        "consent": {
            "share_contact_details": form.get("share") == YES,
            "send_updates": form.get("updates") == YES,
        },
    }


def _answers(service: Service, form: CallForm) -> dict[str, Any]:
    """The answers given, typed as the service's questions want them (a number as a number)."""
    answers: dict[str, Any] = {}
    for code, value in form.answers.items():
        if value in ("", []):
            continue
        attribute = service.attribute(code)
        if attribute is not None and attribute.datatype == "multivaluelist":
            value = [value] if isinstance(value, str) else value
        if attribute is not None and attribute.datatype == "number" and isinstance(value, str):
            answers[code] = _number(value)
            continue
        answers[code] = value
    return answers


def _number(text: str) -> int | float | str:
    """A number as typed ("12", "7.5"); else the text, for intake to refuse."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _has_contact(form: CallForm) -> bool:
    return any(form.get(k) for k in ("name", "phone", "email"))


def _consent_errors(form: CallForm) -> list[tuple[str, str]]:
    """The consent questions must be asked and answered once the caller gives any details."""
    if not _has_contact(form):
        return []
    errors = []
    if form.get("share") not in (YES, NO):
        errors.append(("share", NO_SHARE))
    if form.get("updates") not in (YES, NO):
        errors.append(("updates", NO_UPDATES))
    return errors


def _pydantic_errors(exc: ValidationError, form: CallForm) -> list[tuple[str, str]]:
    found = []
    for error in exc.errors():
        field_id = _field_of([str(part) for part in error["loc"]])
        if field_id in INVALID and form.get(field_id):
            found.append((field_id, INVALID[field_id]))
        elif field_id == "preferred_contact" and form.get(field_id) in UNREACHABLE:
            found.append((field_id, UNREACHABLE[form.get(field_id)]))
        else:
            found.append(_field_error(field_id, error_message(error), form))
    return found


def _attribute_errors(service: Service, form: CallForm) -> list[tuple[str, str]]:
    """Intake's check of the answers, asked beside the other fields' (so every problem shows
    at once, not the answers' only after the rest are right)."""
    try:
        checked_attributes(service, _answers(service, form))
    except ValidationFailed as exc:
        return _intake_errors(exc, form, service)
    return []


async def _place_errors(state: AppState, service: Service, form: CallForm) -> list[tuple[str, str]]:
    """Intake's locating and routing of the place, asked beside the other fields' too."""
    try:
        location = Location(
            postcode=form.get("postcode") or None, address=form.get("address") or None
        )
    except ValidationError:
        return []  # the postcode's own error is listed already
    try:
        await locate_and_route(
            service=service,
            location=None if location.is_empty() else location,
            catalogue=state.catalogue,
            locator=state.intake.locator,
        )
    except DomainError as exc:
        return _intake_errors(exc, form, service)
    return []


def _intake_errors(exc: DomainError, form: CallForm, service: Service) -> list[tuple[str, str]]:
    if not exc.errors:
        return [_field_error("postcode", exc.detail, form)]  # out of area: the place's fault
    found = []
    for error in exc.errors:
        at = (error.pointer or "").removeprefix("#/").split("/")
        if at[0] == "attributes" and len(at) > 1:
            found.append(_answer_error(service, at[1], error.detail))
            continue
        found.append(_field_error(_field_of(at), error.detail, form, service_detail=exc.detail))
    return found


def _answer_error(service: Service, code: str, detail: str) -> tuple[str, str]:
    """An answer intake refused, said with its question."""
    attribute = service.attribute(code)
    if attribute is None:
        return "service", detail  # not a question of this service: not from this page
    question = attribute.description
    if detail.startswith("required"):
        return f"attr-{code}", REQUIRED_ANSWER.format(question=question)
    return f"attr-{code}", f"{question} The answer {detail}"


def _field_of(at: list[str]) -> str:
    """The page's field id for a place in the enquiry's body."""
    match at:
        case ["attributes", code, *_]:
            return f"attr-{code}"
        case ["location", "address", *_]:
            return "address"
        case ["location", *_]:
            return "postcode"
        case ["citizen", name, *_] if name in CITIZEN_FIELDS:
            return name
        case ["citizen"]:
            return "preferred_contact"  # "preferred contact is email, but no email was given"
        case ["description", *_]:
            return "description"
    return "service"


def _field_error(
    field_id: str, detail: str, form: CallForm, *, service_detail: str = ""
) -> tuple[str, str]:
    """The error as the page says it: intake's words, the field named."""
    if field_id in EMPTY and not form.get(field_id):
        return field_id, EMPTY[field_id]
    if field_id == "postcode" and service_detail and detail == "required for this service":
        return field_id, service_detail
    label = LABELS.get(field_id)
    return field_id, f"{label}: {detail}" if label else detail


def _sorted(errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    def place(error: tuple[str, str]) -> int:
        name = "attributes" if error[0].startswith("attr-") else error[0]
        return ORDER.index(name) if name in ORDER else 0

    unique = list(dict.fromkeys(errors))
    return sorted(unique, key=place)


async def _refuse(
    request: Request,
    state: AppState,
    person: SignedIn,
    form: CallForm,
    service: Service,
    errors: list[tuple[str, str]],
) -> Response:
    return await _details(
        request, state, person, form, service, preview=True, errors=_sorted(errors), status=422
    )


def _chooser(
    request: Request,
    state: AppState,
    person: SignedIn,
    form: CallForm,
    *,
    errors: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> Response:
    """Which service? The services the caller's words find, else every one."""
    words = form.get("q")
    matches = find_services(state.catalogue, words)
    every = sorted(state.catalogue.services.values(), key=lambda s: (s.group, s.name))
    context = {
        "form": form,
        "errors": errors or [],
        "words": words,
        "services": matches or every,
        "matched": bool(matches),
        "carried": [(k, form.get(k)) for k in CARRIED if k != "q" and form.get(k)],
    }
    return console.render(
        request, state, person, "console/calls_service.html", context, status=status
    )


async def _details(
    request: Request,
    state: AppState,
    person: SignedIn,
    form: CallForm,
    service: Service,
    *,
    preview: bool,
    errors: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> Response:
    """The service's questions, the place and where it goes, the caller and their consent."""
    shown = None
    if preview or form.get("postcode") or form.get("address"):
        shown = await routing_preview(state, service, form.get("postcode"), form.get("address"))
    context = {
        "form": form,
        "service": service,
        "errors": errors or [],
        "preview": shown or Preview(waiting=True),
        "preferred": PREFERRED,
    }
    return console.render(
        request, state, person, "console/calls_new.html", context, status=status, scripted=True
    )


def refused(request: Request, state: AppState, person: SignedIn | None) -> Response:
    """A form without this session's CSRF field: nothing was done."""
    return console.render(
        request,
        state,
        person,
        "console/message.html",
        {
            "title": N_("The form could not be used"),
            "message": N_(
                "It was out of date or did not come from this console. Nothing was "
                "changed. Go back, reload the page and try again."
            ),
            "back": f"{CALLS}/new",
        },
        status=400,
    )


def _message(
    request: Request, state: AppState, person: SignedIn, title: str, status: int
) -> Response:
    return console.render(
        request,
        state,
        person,
        "console/message.html",
        {
            "title": title,
            "message": N_("Check the reference and try again."),
            "back": CALLS + "/new",
        },
        status=status,
    )
