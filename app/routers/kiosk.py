"""The kiosk, `/kiosk/`: a shared touch screen (a library, a one-stop shop) where anyone can
make an enquiry without signing in, one question per page, then take away its reference.

The device is set up once with a kiosk API key (`iap clients create NAME --scope
enquiries:submit --channel kiosk`) at `/kiosk/setup`; the key is kept sealed (Fernet, the
Sealer's keys) in an HttpOnly, SameSite=Strict cookie, checked on every request like a Bearer
key, and every enquiry is submitted as that client through app.intake (its channel, its rate
limit, its idempotency). A device with no key, or a revoked one, shows "not set up".

The answers travel sealed in a second cookie that lives only as long as the screen is used:
each page refreshes itself to `/kiosk/?reset=idle` after the idle time, which clears it, and
so does "Start again", finishing and submitting. Every form carries a MAC of the session and
its purpose (Sealer.form_tokens); a POST without it is refused. docs/kiosk.md.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import FormData

from app.api.deps import Intake, State
from app.api.ratelimit import limit_address, limit_caller
from app.api.request_log import bind_client
from app.catalogue.catalogue import OrganisationKind, Service, ServiceAttribute, Tier
from app.clients.service import Caller, Scope, authenticate
from app.core.crypto import SealedDataUnreadable
from app.core.errors import DomainError, IdempotencyInFlight, OutOfArea, ValidationFailed
from app.core.settings import Environment
from app.intake.idempotency import StoredResponse
from app.intake.schemas import (
    Channel,
    Citizen,
    Consent,
    EnquiryCreated,
    EnquiryIn,
    Location,
    PreferredContact,
)
from app.intake.service import (
    IntakeContext,
    accept_enquiry,
    attribute_problem,
    locate_and_route,
)
from app.web import i18n
from app.web.i18n import N_
from app.web.pages import (
    CSP_SCRIPTED,
    HEADERS,
    KIOSK_PATH,
    form_field_matches,
    render,
    translate,
)

log = structlog.get_logger()

DEVICE_COOKIE = "iap_kiosk_device"
SESSION_COOKIE = "iap_kiosk_session"
DEVICE_SECONDS = 400 * 86400  # the longest a browser keeps a cookie
MAX_COOKIE = 3900  # a browser keeps 4096 bytes of a cookie, its name and attributes included
MAX_KEY = 200
MAX_SEARCH = 100
IN_FLIGHT_TRIES, IN_FLIGHT_PAUSE = 20, 0.25  # a second press waits up to 5 s for the first
SETUP, TOPIC, SERVICE, DESCRIPTION, POSTCODE, CONTACT, CONSENT, CHECK, SUBMIT = (
    "setup",
    "topic",
    "service",
    "description",
    "postcode",
    "contact",
    "consent",
    "check",
    "submit",
)
RECEIPT, STILL_THERE = "receipt", "still-there"
ANSWER = "answer-"  # a service's question: answer-<its code>
RESET_URL = f"{KIOSK_PATH}?reset=idle"  # where a screen left alone ends: everything cleared
WARNING_SECONDS = 30  # how long "Do you need more time?" waits for an answer (WCAG: 20 s)
TYPING = {DESCRIPTION, CONTACT}  # pages with the longer idle time

router = APIRouter(prefix=KIOSK_PATH.rstrip("/"), include_in_schema=False)

ERRORS: Mapping[str, str] = {
    "key": N_("Enter the kiosk's API key, as `iap clients create` showed it"),
    "key_wrong": N_("That key is not known, or it has been revoked"),
    "key_not_kiosk": N_(
        "That key is not a kiosk key: make one with --scope enquiries:submit --channel kiosk"
    ),
    "topic": N_("Select what it is about, or search for it"),
    "search": N_("Enter a word to search for, like bin or pothole"),
    "service": N_("Select which of these it is"),
    "choose_one": N_("Select an answer"),
    "choose_some": N_("Select at least one answer"),
    "number": N_("Enter a number, like 5"),
    "date": N_("Enter a real date, like 27 3 2026"),
    "answer": N_("Enter an answer"),
    "too_long": N_("Your answer must be {count} characters or fewer"),
    "description": N_("Tell us what it is about"),
    "postcode": N_("Enter a postcode, like OX1 1BX"),
    "postcode_wrong": N_("Enter a real postcode, like OX1 1BX"),
    "postcode_outside": N_(
        "That postcode is outside the area this service covers: check it, or ask a member of staff"
    ),
    "postcode_unchecked": N_("We could not check that postcode just now: try again"),
    "name": N_("Your name must be 200 characters or fewer"),
    "email": N_("Enter an email address like name@example.com"),
    "phone": N_("Enter a phone number, like 01632 960 001 or 07700 900 982"),
    "full": N_("Your answers are too long for this kiosk: make this one shorter"),
    "submit": N_("Something in your answers needs changing: use the Change links"),
}
OPTIONAL = N_("(optional)")


class Answers(BaseModel):
    """One citizen's answers so far, sealed in the session cookie; nothing else keeps them."""

    sid: uuid.UUID = Field(default_factory=uuid.uuid4)  # what the forms' MACs are bound to
    at: float = Field(default_factory=time.time)  # when it was last used
    lang: str = i18n.ENGLISH
    answered: list[str] = []
    group: str | None = None
    search: str | None = None
    service: str | None = None
    attributes: dict[str, str | int | float | list[str]] = {}
    description: str | None = None
    postcode: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    share: bool = False
    updates: bool = False
    receipt: Receipt | None = None

    def has_contact(self) -> bool:
        return bool(self.name or self.email or self.phone)


class Receipt(BaseModel):
    """What the receipt page shows: nothing personal."""

    reference: str
    service: str
    organisations: list[str] = []
    triage: bool = False
    emergency: bool = False
    updates: bool = False


Answers.model_rebuild()


@dataclass
class Page:
    """One rendering of a question page: its errors (field id, message) and what was typed."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    filled: dict[str, dict[str, Any]] = field(default_factory=dict)  # an error's {names}

    def error(self, field_id: str) -> str | None:
        return next((message for at, message in self.errors if at == field_id), None)


# ----------------------------------------------------------------------------- the device


async def device(request: Request, state: State) -> Caller | None:
    """The kiosk client this device was set up with, counted against its own rate limit; None
    (counted per address) without one, or when its key is revoked or is not a kiosk's."""
    key = _opened(state, request.cookies.get(DEVICE_COOKIE), "key")
    caller = None
    if isinstance(key, str) and len(key) <= MAX_KEY:
        caller = await authenticate(
            state.engine, key, cache_seconds=state.settings.api.key_cache_seconds
        )
    if caller is None or not _is_kiosk(caller):
        await limit_address(request)
        return None
    bind_client(caller.name)  # the request log names the kiosk, as it names an API client
    await limit_caller(request, caller)
    return caller


Device = Annotated[Caller | None, Depends(device)]
# Unbounded here and judged by the route, so an odd link gets a page, never problem+json.
Lang = Annotated[str | None, Query()]


def _is_kiosk(caller: Caller) -> bool:
    return caller.channel == Channel.kiosk.value and caller.allows(Scope.enquiries_submit)


@router.get("/setup")
async def setup_page(
    request: Request, state: State, lang: Lang = None, _: None = Depends(limit_address)
) -> Response:
    """The form an administrator sets the device up with."""
    answers = _fresh(request, lang)
    return _setup_page(request, state, answers, Page())


@router.post("/setup")
async def set_up(request: Request, state: State, _: None = Depends(limit_address)) -> Response:
    """Check the key as the API would; keep it sealed in the device cookie."""
    answers = _session(request, state)
    async with request.form(max_files=0, max_fields=4) as form:
        if answers is None or not _form_is_ours(state, answers, SETUP, form):
            return _refused(request, state, answers)
        key = _text(form, "key")
    page = Page()
    caller = None
    if not key:
        page.errors.append(("key", ERRORS["key"]))
    elif len(key) <= MAX_KEY:
        caller = await authenticate(state.engine, key, cache_seconds=0)
    if not page.errors and caller is None:
        page.errors.append(("key", ERRORS["key_wrong"]))
    elif caller is not None and not _is_kiosk(caller):
        page.errors.append(("key", ERRORS["key_not_kiosk"]))
    if page.errors or caller is None:
        return _setup_page(request, state, answers, page, status=422)
    log.info("kiosk.set_up", client=caller.name)
    response = RedirectResponse(KIOSK_PATH, status_code=303, headers=HEADERS)
    sealed = state.sealer.seal({"key": key}) or ""
    _set_cookie(state, response, DEVICE_COOKIE, sealed, DEVICE_SECONDS)
    response.delete_cookie(SESSION_COOKIE, path=KIOSK_PATH.rstrip("/"))
    return response


def _setup_page(
    request: Request, state: State, answers: Answers, page: Page, *, status: int = 200
) -> Response:
    context = {"page": page, "csrf": _csrf(state, answers, SETUP), "action": _url(SETUP)}
    return _page(request, state, answers, "kiosk/setup.html", context, status=status, idle=0)


# ----------------------------------------------------------------------------- the start


@router.get("/")
async def start(
    request: Request,
    state: State,
    caller: Device,
    lang: Lang = None,
    reset: Annotated[str | None, Query()] = None,
) -> Response:
    """The start page; it is also where every reset lands, so it clears the answers."""
    answers = _fresh(request, lang)
    if caller is None:
        return _not_set_up(request, state, answers)
    context = {"timed_out": reset == "idle", "begin": _url(TOPIC)}
    # Left alone, the page stays: there is nothing on it to clear.
    return _page(request, state, answers, "kiosk/start.html", context, idle=0)


@router.get("/receipt")
async def receipt(request: Request, state: State, caller: Device, lang: Lang = None) -> Response:
    """The enquiry's reference, to note down or print; nothing personal."""
    answers = _session(request, state)
    if caller is None:
        return _not_set_up(request, state, answers or _fresh(request, lang))
    if answers is None or answers.receipt is None:
        return _restart()
    _choose_language(answers, lang)
    context = {"receipt": answers.receipt, "groups": answers.receipt.reference.split("-")}
    return _page(
        request,
        state,
        answers,
        "kiosk/receipt.html",
        context,
        headers={"Content-Security-Policy": CSP_SCRIPTED},  # its Print button (kiosk.js)
        resume=RECEIPT,
    )


@router.get("/still-there")
async def still_there(
    request: Request,
    state: State,
    caller: Device,
    step: Annotated[str, Query()] = TOPIC,
) -> Response:
    """Where a page left alone goes: more time, or everything cleared if nobody answers."""
    answers = _session(request, state)
    if caller is None:
        return _not_set_up(request, state, answers or _fresh(request, None))
    if answers is None:
        return _restart()
    resume = step if step == RECEIPT or step in _steps(answers, state) else TOPIC
    context = {"resume": _url(resume), "warning_seconds": WARNING_SECONDS}
    return _page(request, state, answers, "kiosk/still_there.html", context, idle=WARNING_SECONDS)


# ----------------------------------------------------------------------------- the questions


@router.get("/question/{step}")
async def question(
    step: str, request: Request, state: State, caller: Device, lang: Lang = None
) -> Response:
    """One question; a step not reached yet sends the citizen to the first unanswered one."""
    answers = _session(request, state)
    if caller is None:
        return _not_set_up(request, state, answers or _fresh(request, lang))
    if answers is None or answers.receipt is not None:
        # Finished, timed out or never begun: back to the start (Back after sending lands here).
        if answers is not None or step != TOPIC:
            return _restart()
        answers = _fresh(request, lang)
    _choose_language(answers, lang)
    steps = _steps(answers, state)
    if step not in steps or steps.index(step) > steps.index(_next_step(answers, state)):
        return _go(_next_step(answers, state))
    page = Page(values=_current(answers, step))
    return _question(request, state, answers, step, page)


@router.post("/question/{step}")
async def answer(step: str, request: Request, state: State, caller: Device) -> Response:
    """Keep one answer, checked by intake's own rule; the page again with an error if not."""
    answers = _session(request, state)
    if caller is None:
        return _not_set_up(request, state, answers or _fresh(request, None))
    if answers is None or answers.receipt is not None:
        return _restart()
    async with request.form(max_files=0, max_fields=60) as form:
        if not _form_is_ours(state, answers, step, form):
            return _refused(request, state, answers)
        if step not in _steps(answers, state):
            return _go(_next_step(answers, state))
        page = await _take(step, form, answers, state)
    if not page.errors and len(_sealed(state, answers)) > MAX_COOKIE:
        page.errors.append((_first_field(step, answers, state), ERRORS["full"]))
    if page.errors:
        return _question(request, state, answers, step, page, status=422)
    if step not in answers.answered:
        answers.answered.append(step)
    return _go(_next_step(answers, state), answers, state)


@router.post("/submit")
async def submit(request: Request, state: State, caller: Device, intake: Intake) -> Response:
    """Submit the enquiry as the kiosk's client; the answers are dropped, the receipt kept."""
    answers = _session(request, state)
    if caller is None:
        return _not_set_up(request, state, answers or _fresh(request, None))
    if answers is None:
        return _restart()
    async with request.form(max_files=0, max_fields=4) as form:
        if not _form_is_ours(state, answers, SUBMIT, form):
            return _refused(request, state, answers)
    if answers.receipt is not None:  # sent already: a second tap of the button
        return _go_receipt(answers, state)
    if _next_step(answers, state) != CHECK:
        return _go(_next_step(answers, state))
    try:
        created = await _submitted(_enquiry(answers), intake, caller, answers)
    except (DomainError, ValidationError):
        page = Page(errors=[("submit", ERRORS["submit"])])
        return _check(request, state, answers, page, status=422)
    body = created.body if isinstance(created, StoredResponse) else created.model_dump(mode="json")
    done = Answers(lang=answers.lang, receipt=_receipt(state, answers, body))
    log.info("kiosk.submitted", client=caller.name, reference=done.receipt.reference)  # type: ignore[union-attr]
    return _go_receipt(done, state)


async def _submitted(
    enquiry: EnquiryIn, intake: IntakeContext, caller: Caller, answers: Answers
) -> EnquiryCreated | StoredResponse:
    """Intake's answer; one session submits once however often the button is pressed (its
    Idempotency-Key), and a second press waits for the first's answer rather than fail."""
    for _ in range(IN_FLIGHT_TRIES):
        try:
            return await accept_enquiry(
                enquiry=enquiry,
                context=intake,
                caller=caller,
                idempotency_key=f"kiosk:{answers.sid}",
            )
        except IdempotencyInFlight:
            await asyncio.sleep(IN_FLIGHT_PAUSE)
    raise IdempotencyInFlight("The first press of the button is still being answered.")


# ----------------------------------------------------------------------------- steps


def _steps(answers: Answers, state: State) -> list[str]:
    """The questions this citizen is asked, in order, given what they have answered."""
    steps = [TOPIC]
    if not (answers.group and answers.search is None and len(_in_group(state, answers)) == 1):
        steps.append(SERVICE)
    service = _service(answers, state)
    if service is not None:
        steps.extend(f"{ANSWER}{a.code}" for a in service.attributes)
    steps.extend([DESCRIPTION, POSTCODE, CONTACT])
    if answers.has_contact():
        steps.append(CONSENT)
    return [*steps, CHECK]


def _next_step(answers: Answers, state: State) -> str:
    """The first question not answered yet; the check page once all are."""
    return next((s for s in _steps(answers, state) if s not in answers.answered), CHECK)


def _service(answers: Answers, state: State) -> Service | None:
    return state.catalogue.services.get(answers.service or "")


def _groups(state: State) -> list[str]:
    return list(dict.fromkeys(s.group or "Other" for s in state.catalogue.services.values()))


def _in_group(state: State, answers: Answers) -> list[Service]:
    return [s for s in state.catalogue.services.values() if (s.group or "Other") == answers.group]


def _found(state: State, search: str) -> list[Service]:
    """The services every word of the search is found in (name, group, keywords, description)."""
    words = search.lower().split()

    def text(service: Service) -> str:
        return " ".join((service.name, service.group, service.description, *service.keywords))

    return [
        s for s in state.catalogue.services.values() if all(w in text(s).lower() for w in words)
    ]


def _fallback(state: State) -> list[Service]:
    """Where to go when nothing fits: the services a person reads and passes on."""
    return [s for s in state.catalogue.services.values() if Tier.triage in s.tiers]


def _choices(answers: Answers, state: State) -> list[Service]:
    if answers.search is not None:
        return _found(state, answers.search) or _fallback(state)
    return _in_group(state, answers)


def _attribute(step: str, answers: Answers, state: State) -> ServiceAttribute | None:
    service = _service(answers, state)
    if service is None or not step.startswith(ANSWER):
        return None
    return service.attribute(step.removeprefix(ANSWER))


def _current(answers: Answers, step: str) -> dict[str, Any]:
    """What the page's fields hold when it is shown again (Back, or Change)."""
    if step == TOPIC:
        return {"group": answers.group or "", "q": answers.search or ""}
    if step == SERVICE:
        return {"service": answers.service or ""}
    if step.startswith(ANSWER):
        code = step.removeprefix(ANSWER)
        value = answers.attributes.get(code)
        if isinstance(value, str) and len(value) == 10 and value[4] == "-":
            year, month, day = value.split("-")
            return {code: value, f"{code}-day": day, f"{code}-month": month, f"{code}-year": year}
        return {code: value}
    if step == DESCRIPTION:
        return {"description": answers.description or ""}
    if step == POSTCODE:
        return {"postcode": answers.postcode or ""}
    if step == CONTACT:
        return {
            "name": answers.name or "",
            "email": answers.email or "",
            "phone": answers.phone or "",
        }
    if step == CONSENT:
        return {"share": answers.share, "updates": answers.updates}
    return {}


# ----------------------------------------------------------------------------- answers


async def _take(step: str, form: FormData, answers: Answers, state: State) -> Page:
    """Apply the form's answer to `answers`, or say on the page what is wrong with it."""
    page = Page(values={k: v for k, v in form.items() if k != "csrf"})
    if step == TOPIC:
        _take_topic(form, answers, state, page)
    elif step == SERVICE:
        _take_service(form, answers, state, page)
    elif step.startswith(ANSWER):
        attribute = _attribute(step, answers, state)
        if attribute is not None:
            _take_attribute(attribute, form, answers, state, page)
    elif step == DESCRIPTION:
        _take_description(form, answers, state, page)
    elif step == POSTCODE:
        await _take_postcode(form, answers, state, page)
    elif step == CONTACT:
        _take_contact(form, answers, page)
    elif step == CONSENT:
        answers.share = form.get("share") == "yes"
        answers.updates = form.get("updates") == "yes"
    return page


def _take_topic(form: FormData, answers: Answers, state: State, page: Page) -> None:
    if "search" in form:
        search = _text(form, "q")[:MAX_SEARCH]
        if not search:
            page.errors.append(("q", ERRORS["search"]))
            return
        answers.group, answers.search = None, search
        _forget(answers, SERVICE)
        return
    group = _text(form, "group")
    if group not in _groups(state):
        page.errors.append(("group", ERRORS["topic"]))
        return
    if group != answers.group or answers.search is not None:
        _forget(answers, SERVICE)
    answers.group, answers.search = group, None
    services = _in_group(state, answers)
    if len(services) == 1:
        _choose_service(answers, services[0].code)


def _take_service(form: FormData, answers: Answers, state: State, page: Page) -> None:
    code = _text(form, "service")
    if code not in {s.code for s in _choices(answers, state)}:
        page.errors.append(("service", ERRORS["service"]))
        return
    _choose_service(answers, code)


def _choose_service(answers: Answers, code: str) -> None:
    if code != answers.service:
        answers.attributes = {}
        answers.answered = [s for s in answers.answered if not s.startswith(ANSWER)]
    answers.service = code


def _forget(answers: Answers, step: str) -> None:
    answers.answered = [s for s in answers.answered if s != step]


def _take_attribute(
    attribute: ServiceAttribute, form: FormData, answers: Answers, state: State, page: Page
) -> None:
    value, unreadable = _read_value(attribute, form)
    limit = state.settings.kiosk.max_text
    problem = "unreadable" if unreadable else attribute_problem(attribute, value)
    if isinstance(value, str) and len(value) > limit:
        problem = "long"
    if problem is None:
        if value is None or value == "" or value == []:
            answers.attributes.pop(attribute.code, None)
        else:
            answers.attributes[attribute.code] = value
        return
    field_id = f"{attribute.code}-day" if attribute.datatype == "datetime" else attribute.code
    count = limit if attribute.datatype == "text" else min(limit, 200)
    page.errors.append((field_id, _attribute_error(attribute, value, problem)))
    page.filled[field_id] = {"count": count}


def _read_value(attribute: ServiceAttribute, form: FormData) -> tuple[Any, bool]:
    """The answer as intake takes it (a number as a number, a date as ISO 8601); and whether
    what was typed could not be read as one."""
    name = attribute.code
    match attribute.datatype:
        case "multivaluelist":
            return [v for v in form.getlist(name) if isinstance(v, str)], False
        case "number":
            typed = _text(form, name).replace(",", "")
            if not typed:
                return None, False
            try:
                number = float(typed)
            except ValueError:
                return typed, True
            return (int(number) if number.is_integer() and "." not in typed else number), False
        case "datetime":
            parts = [_text(form, f"{name}-{p}") for p in ("day", "month", "year")]
            if not any(parts):
                return None, False
            try:
                day, month, year = (int(p) for p in parts)
                return date(year, month, day).isoformat(), False
            except ValueError:
                return "-".join(parts), True
        case _:
            return _text(form, name) or None, False


def _attribute_error(attribute: ServiceAttribute, value: Any, problem: str) -> str:
    missing = value is None or value == "" or value == []
    if attribute.datatype == "singlevaluelist":
        return ERRORS["choose_one"]
    if attribute.datatype == "multivaluelist":
        return ERRORS["choose_some"]
    if attribute.datatype == "number":
        return ERRORS["number"]
    if attribute.datatype == "datetime":
        return ERRORS["date"]
    if missing:
        return ERRORS["answer"]
    return ERRORS["too_long"]


def _take_description(form: FormData, answers: Answers, state: State, page: Page) -> None:
    text = _text(form, "description")
    limit = state.settings.kiosk.max_text
    if not text:
        page.errors.append(("description", ERRORS["description"]))
    elif len(text) > limit:
        page.errors.append(("description", ERRORS["too_long"]))
        page.filled["description"] = {"count": limit}
    else:
        answers.description = text


async def _take_postcode(form: FormData, answers: Answers, state: State, page: Page) -> None:
    service = _service(answers, state)
    typed = _text(form, "postcode")[:20]
    if not typed:
        if service is not None and service.needs_location:
            page.errors.append(("postcode", ERRORS["postcode"]))
        else:
            answers.postcode = None
        return
    try:
        location = Location(postcode=typed)
    except ValidationError:
        page.errors.append(("postcode", ERRORS["postcode_wrong"]))
        return
    if service is not None:
        try:
            # Where it goes is decided again at submission; here only whether it can go.
            await locate_and_route(
                service=service,
                location=location,
                catalogue=state.catalogue,
                locator=state.intake.locator,
            )
        except OutOfArea:
            page.errors.append(("postcode", ERRORS["postcode_outside"]))
            return
        except ValidationFailed:
            page.errors.append(("postcode", ERRORS["postcode_wrong"]))
            return
        except DomainError:
            page.errors.append(("postcode", ERRORS["postcode_unchecked"]))
            return
    answers.postcode = location.postcode


def _take_contact(form: FormData, answers: Answers, page: Page) -> None:
    given = {name: _text(form, name) or None for name in ("name", "email", "phone")}
    try:
        Citizen(**given)  # intake's own rules for each
    except ValidationError as invalid:
        for error in invalid.errors():
            where = str(error["loc"][0]) if error["loc"] else "email"
            if where in ERRORS and not page.error(where):
                page.errors.append((where, ERRORS[where]))
        return
    answers.name, answers.email, answers.phone = given["name"], given["email"], given["phone"]
    if not answers.has_contact():
        answers.share = answers.updates = False
        _forget(answers, CONSENT)


def _first_field(step: str, answers: Answers, state: State) -> str:
    attribute = _attribute(step, answers, state)
    if attribute is not None:
        return {"datetime": f"{attribute.code}-day"}.get(attribute.datatype, attribute.code)
    return {TOPIC: "group", SERVICE: "service", CONSENT: "share"}.get(step, step)


def _enquiry(answers: Answers) -> EnquiryIn:
    """The enquiry as the API would be sent it, on the kiosk's channel."""
    citizen = None
    if answers.has_contact():
        preferred = None
        if answers.updates:
            preferred = PreferredContact.email if answers.email else PreferredContact.phone
        citizen = Citizen(
            name=answers.name,
            email=answers.email,
            phone=answers.phone,
            preferred_contact=preferred if (answers.email or answers.phone) else None,
            language=answers.lang,
        )
    return EnquiryIn(
        service_code=answers.service or "",
        description=answers.description or "",
        channel=Channel.kiosk,
        location=Location(postcode=answers.postcode) if answers.postcode else None,
        citizen=citizen,
        attributes=dict(answers.attributes),
        consent=Consent(
            share_contact_details=answers.share and answers.has_contact(),
            send_updates=answers.updates and bool(answers.email or answers.phone),
        ),
    )


def _receipt(state: State, answers: Answers, body: dict[str, Any]) -> Receipt:
    organisations = state.catalogue.organisations
    destinations = [d.get("organisation_id", "") for d in body.get("destinations", [])]
    triage = any(
        organisations[d].kind is OrganisationKind.triage for d in destinations if d in organisations
    )
    names = [
        organisations[d].name
        for d in destinations
        if d in organisations and organisations[d].kind is not OrganisationKind.triage
    ]
    service = _service(answers, state)
    return Receipt(
        reference=str(body.get("reference", "")),
        service=service.name if service else "",
        organisations=list(dict.fromkeys(names)),
        triage=triage,
        emergency=any(a.get("code") == "call-999" for a in body.get("advice", [])),
        updates=answers.updates and bool(answers.email or answers.phone),
    )


# ----------------------------------------------------------------------------- rendering


def _question(
    request: Request, state: State, answers: Answers, step: str, page: Page, *, status: int = 200
) -> Response:
    if step == CHECK:
        return _check(request, state, answers, page, status=status)
    steps = _steps(answers, state)
    index = steps.index(step)
    back = _url(steps[index - 1]) if index > 0 else KIOSK_PATH
    service = _service(answers, state)
    context: dict[str, Any] = {
        "step": step,
        "page": page,
        "action": _url(step),
        "back": back,
        "csrf": _csrf(state, answers, step),
        "service": service,
        "attribute": _attribute(step, answers, state),
        "max_text": state.settings.kiosk.max_text,
    }
    if step == TOPIC:
        context["groups"] = _groups(state)
    if step == SERVICE:
        context["choices"] = _choices(answers, state)
        context["search"] = answers.search
        context["nothing_found"] = answers.search is not None and not _found(state, answers.search)
        context["group"] = answers.group
    if step == POSTCODE:
        context["needs_location"] = service is not None and service.needs_location
    if step == CONSENT:
        context["reachable"] = bool(answers.email or answers.phone)
    template = "kiosk/attribute.html" if step.startswith(ANSWER) else f"kiosk/{step}.html"
    typing = step in TYPING or (
        context["attribute"] is not None and context["attribute"].datatype == "text"
    )
    idle = state.settings.kiosk.typing_seconds if typing else None
    return _page(request, state, answers, template, context, status=status, idle=idle, resume=step)


def _check(
    request: Request, state: State, answers: Answers, page: Page, *, status: int = 200
) -> Response:
    service = _service(answers, state)
    rows: list[dict[str, Any]] = []
    if service is not None:
        rows.append({"key": N_("What it is about"), "value": service.name, "step": TOPIC})
        for attribute in service.attributes:
            value = answers.attributes.get(attribute.code)
            rows.append(
                {
                    "key": attribute.description,
                    "raw": True,
                    "value": _shown(attribute, value),
                    "step": f"{ANSWER}{attribute.code}",
                }
            )
    rows.append({"key": N_("What happened"), "value": answers.description, "step": DESCRIPTION})
    rows.append({"key": N_("Postcode"), "value": answers.postcode, "step": POSTCODE})
    contact = [v for v in (answers.name, answers.email, answers.phone) if v]
    rows.append({"key": N_("Contact details"), "lines": contact, "step": CONTACT})
    if answers.has_contact():
        rows.append({"key": N_("Share my details"), "yes_no": answers.share, "step": CONSENT})
        rows.append({"key": N_("Send me updates"), "yes_no": answers.updates, "step": CONSENT})
    steps = _steps(answers, state)
    context = {
        "step": CHECK,
        "page": page,
        "rows": rows,
        "back": _url(steps[-2]),
        "change": _url,
        "action": _url(SUBMIT),
        "csrf": _csrf(state, answers, SUBMIT),
    }
    return _page(request, state, answers, "kiosk/check.html", context, status=status, resume=CHECK)


def _shown(attribute: ServiceAttribute, value: Any) -> str:
    names = {v.key: v.name for v in attribute.values}
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, list):
        return ", ".join(names.get(str(v), str(v)) for v in value)
    if attribute.datatype == "datetime" and isinstance(value, str):
        return date.fromisoformat(value).strftime("%d/%m/%Y")
    return names.get(str(value), str(value))


def _page(
    request: Request,
    state: State,
    answers: Answers,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    idle: int | None = None,
    headers: dict[str, str] | None = None,
    keep: bool = True,
    resume: str | None = None,
) -> Response:
    """A kiosk page in the session's language, its answers sealed in the session cookie."""
    language = answers.lang
    page = context.get("page")
    if isinstance(page, Page):
        page.errors = [
            (at, translate(language, message, **page.filled.get(at, {})))
            for at, message in page.errors
        ]
    seconds = state.settings.kiosk.idle_seconds if idle is None else idle
    refresh = {}
    if seconds:
        # Left alone, the page asks "Do you need more time?", which clears everything if
        # nobody answers (WCAG 2.2.1: warned, with time to extend). A Refresh header, the
        # same as <meta http-equiv="refresh"> to the browser, kept out of the markup.
        then = f"{_url(STILL_THERE)}?{urlencode({'step': resume})}" if resume else RESET_URL
        refresh = {"Refresh": f"{seconds}; url={then}"}
    switch = {
        other: f"{request.url.path}?lang={other}" for other in i18n.languages() if other != language
    }
    response = render(
        request,
        template,
        language,
        {
            **context,
            "start_again": KIOSK_PATH,
            "switch": switch,
        },
        status=status,
        headers={**refresh, **(headers or {})},
    )
    if keep:
        _keep(state, response, answers)
    else:
        response.delete_cookie(SESSION_COOKIE, path=KIOSK_PATH.rstrip("/"))
    return response


def _not_set_up(request: Request, state: State, answers: Answers) -> Response:
    """The one page a device without a (working) kiosk key shows; its answers are dropped."""
    return _page(
        request, state, answers, "kiosk/not_set_up.html", {}, status=403, idle=0, keep=False
    )


def _refused(request: Request, state: State, answers: Answers | None) -> Response:
    """A form that did not come from this kiosk's page (no CSRF field, or a wrong one)."""
    session = answers or _fresh(request, None)
    context = {"back": KIOSK_PATH}
    return _page(request, state, session, "kiosk/refused.html", context, status=400)


def _restart() -> Response:
    """Answers that are gone (finished, timed out, never begun): the start again."""
    return RedirectResponse(RESET_URL, status_code=303, headers=HEADERS)


def _go(step: str, answers: Answers | None = None, state: State | None = None) -> Response:
    response = RedirectResponse(_url(step), status_code=303, headers=HEADERS)
    if answers is not None and state is not None:
        _keep(state, response, answers)
    return response


def _go_receipt(answers: Answers, state: State) -> Response:
    response = RedirectResponse(_url(RECEIPT), status_code=303, headers=HEADERS)
    _keep(state, response, answers)
    return response


def _url(step: str) -> str:
    if step in (SETUP, SUBMIT, RECEIPT, STILL_THERE):
        return f"{KIOSK_PATH}{step}"
    return f"{KIOSK_PATH}question/{step}"


# ----------------------------------------------------------------------------- the cookies


def _fresh(request: Request, lang: str | None) -> Answers:
    """A new, empty session in the language asked for or the browser's."""
    return Answers(lang=i18n.chosen_language(lang, request.headers.get("accept-language")))


def _choose_language(answers: Answers, lang: str | None) -> None:
    if lang and lang.lower() in i18n.languages():
        answers.lang = lang.lower()


def _session(request: Request, state: State) -> Answers | None:
    """The answers the session cookie holds, unless they are missing, altered or timed out."""
    opened = _opened(state, request.cookies.get(SESSION_COOKIE), "answers")
    if not isinstance(opened, dict):
        return None
    try:
        answers = Answers.model_validate(opened)
    except ValidationError:
        return None
    if time.time() - answers.at > _lifetime(state):
        return None
    answers.at = time.time()
    return answers


def _opened(state: State, sealed: str | None, name: str) -> Any:
    if not sealed or len(sealed) > 4096:
        return None
    try:
        opened = state.sealer.open(sealed)
    except (SealedDataUnreadable, ValueError):
        return None
    return opened.get(name) if isinstance(opened, dict) else None


def _sealed(state: State, answers: Answers) -> str:
    return state.sealer.seal({"answers": answers.model_dump(mode="json")}) or ""


def _lifetime(state: State) -> int:
    """How long answers live unused: the longest a page waits before it resets itself."""
    kiosk = state.settings.kiosk
    return max(kiosk.idle_seconds, kiosk.typing_seconds) + WARNING_SECONDS + 15


def _keep(state: State, response: Response, answers: Answers) -> None:
    _set_cookie(state, response, SESSION_COOKIE, _sealed(state, answers), _lifetime(state))


def _set_cookie(state: State, response: Response, name: str, value: str, seconds: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path=KIOSK_PATH.rstrip("/"),
        httponly=True,
        samesite="strict",
        secure=state.settings.env not in (Environment.development, Environment.test),
    )


def _csrf(state: State, answers: Answers, purpose: str) -> str:
    return state.sealer.form_tokens(answers.sid, f"kiosk:{purpose}")[0]


def _form_is_ours(state: State, answers: Answers, purpose: str, form: FormData) -> bool:
    return form_field_matches(state.sealer, answers.sid, f"kiosk:{purpose}", form.get("csrf"))


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.replace("\x00", "").strip() if isinstance(value, str) else ""
