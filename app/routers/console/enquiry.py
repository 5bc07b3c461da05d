"""The enquiry page, /console/enquiries/{reference}: an enquiry as staff see it (the citizen's
details, the timeline with who did what and the staff notes, what was said and the files,
each delivery with its attempts and the back-office's reference), and the forms that act on
it: add information, add a note, withdraw, reopen, and hand on from the triage desk.

It reads through app.intake.reading.get_enquiry with the person's own Caller, exactly as
GET /v1/enquiries/{reference} does (so each view is audited naming them, and a partner's staff
see their organisation's part only, and nothing else of an enquiry they have no part of), and
acts through the services the API's routes call (app.conversation.service, app.casework.triage).
The services refuse what the enquiry's state does not allow; the page then says why.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, cast
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from app.api.deps import READERS, Attachments, Desk, State
from app.api.state import AppState
from app.attachments.files import Prepared, read_uploads
from app.attachments.reading import read_attachment
from app.casework import triage
from app.casework.schemas_triage import HandOnIn, TriageItem
from app.catalogue.status import FINAL, Status
from app.clients.service import Scope
from app.clients.sessions import SignedIn
from app.conversation import service
from app.conversation.service import Speaker
from app.core import reference as references
from app.core.errors import DomainError, InvalidReference, NotFound
from app.core.vocabulary import EventType, MessageKind
from app.intake.reading import get_enquiry
from app.intake.schemas import EnquiryOut, TimelineEvent
from app.routers.attachments import file_answer
from app.routers.console import session as console
from app.routers.conversation import MAX_REASON, MAX_TEXT, SPEAKERS, Talk
from app.routers.track import FILE_ERRORS
from app.web.i18n import N_
from app.web.pages import HEADERS, megabytes, translate, when

router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)
PAGE = "/enquiries/{reference}"
MAX_HAND_ON_REASON = 500
# What a link may carry before it is looked up (a reference is nine letters and digits).
MAX_REFERENCE = 32

Reader = Annotated[SignedIn, Depends(console.needs(*READERS))]
Speaking = Annotated[SignedIn, Depends(console.needs(*SPEAKERS))]
Noting = Annotated[SignedIn, Depends(console.needs(Scope.enquiries_read_all))]
Triaging = Annotated[SignedIn, Depends(console.needs(Scope.triage))]

DONE: Mapping[str, str] = {
    "information": N_("The information was added and will be sent on."),
    "note": N_("Your note was added. Only staff can see it."),
    "withdrawn": N_("The enquiry was withdrawn."),
    "reopened": N_("The enquiry was reopened."),
    "handed-on": N_("The enquiry was handed on."),
}
NO_NOTE = N_("Enter the note")
NOTHING_ADDED = N_("Enter the information to add, or choose a photo or document")
TOO_LONG = N_("The text must be {count} characters or fewer")
NO_ORGANISATION = N_("Choose at least one organisation to hand the enquiry on to")
TOO_MANY_ORGANISATIONS = N_("Choose at most 5 organisations")
NOT_LISTED = N_("Choose from the organisations listed")
NO_HAND_ON_REASON = N_("Enter why it goes to them")
NOT_FOUND_TITLE = N_("Enquiry not found")
NOT_FOUND = N_(
    "No enquiry you can see has that reference. Check it and try again: it has nine letters "
    "and digits, like K7Q-M4X-PB6."
)
REFUSED_TITLE = N_("The form could not be used")
REFUSED = N_(
    "It was out of date or did not come from this console. Nothing was changed. Go back, "
    "reload the page and try again."
)

# The timeline in staff words; any other event is shown by its type.
EVENT_LABELS: Mapping[str, str] = {
    EventType.enquiry_received: N_("Received"),
    EventType.enquiry_routed: N_("Routed"),
    EventType.enquiry_dispatched: N_("Sent to every destination"),
    EventType.enquiry_failed: N_("Could not be sent"),
    EventType.enquiry_handed_on: N_("Handed on from the triage desk"),
    EventType.enquiry_rerouted: N_("Routed again"),
    EventType.enquiry_relocated: N_("Place corrected"),
    EventType.enquiry_withdrawn: N_("Withdrawn"),
    EventType.enquiry_reopened: N_("Reopened"),
    EventType.enquiry_information_added: N_("Information added"),
    EventType.enquiry_anonymised: N_("Personal data removed"),
    EventType.dispatch_delivered: N_("Delivered to {organisation}"),
    EventType.dispatch_retry: N_("Delivery to {organisation} failed for now"),
    EventType.dispatch_dead: N_("Delivery to {organisation} given up"),
    EventType.dispatch_cancelled: N_("Delivery to {organisation} called off"),
    EventType.dispatch_redriven: N_("Delivery to {organisation} sent again"),
    EventType.dispatch_handled: N_("Delivery to {organisation} seen to by a person"),
    EventType.follow_up_delivered: N_("{organisation} was sent what was added"),
    EventType.follow_up_dead: N_("What was added could not be sent to {organisation}"),
    EventType.follow_up_cancelled: N_("What was added was not sent to {organisation}"),
    EventType.status_updated: N_("{organisation} says: {status}"),
    EventType.privacy_erasure_requested: N_("Erasure asked for"),
}
MESSAGE_LABELS: Mapping[str, str] = {
    MessageKind.information: N_("Information"),
    MessageKind.withdrawal: N_("Withdrawal"),
    MessageKind.reopening: N_("Reopening"),
    MessageKind.note: N_("Staff note"),
}
CITIZEN_FIELDS = (
    ("name", N_("Name")),
    ("email", N_("Email")),
    ("phone", N_("Phone")),
    ("preferred_contact", N_("Preferred contact")),
    ("language", N_("Language")),
    ("accessibility_needs", N_("Accessibility needs")),
)
REOPENABLE = frozenset({Status.resolved, Status.closed})


@dataclass
class Form:
    """One submission's errors (field id, message) and the values to show again."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def error(self, field_id: str) -> str | None:
        return next((message for at, message in self.errors if at == field_id), None)


def _t(message: str, **values: Any) -> str:
    return translate(console.ENGLISH, message, **values)


@router.get(PAGE)
async def enquiry_page(
    reference: str,
    request: Request,
    state: State,
    desk: Desk,
    person: Reader,
    # Unbounded here and judged by the route, so an odd link gets the page, never problem+json.
    done: Annotated[str | None, Query()] = None,
) -> Response:
    """The enquiry as staff see it, and what they may do to it."""
    return await _page(request, state, desk, person, reference, done=done)


@router.get(PAGE + "/attachments/{attachment_id}")
async def attachment(
    reference: str,
    attachment_id: str,
    request: Request,
    state: State,
    store: Attachments,
    person: Reader,
) -> Response:
    """One of the enquiry's files, by the API's rule for reading it; the read is audited."""
    found = _uuid(attachment_id)
    if found is None or len(reference) > MAX_REFERENCE:
        return _not_found(request, state, person)
    try:
        served = await read_attachment(
            engine=state.engine,
            store=store,
            sealer=state.sealer,
            reference=reference,
            attachment_id=found,
            reader=person.caller,
            client_id=_own_client(person),
        )
    except (NotFound, InvalidReference):
        return _not_found(request, state, person)
    return file_answer(served)


@router.post(PAGE + "/notes")
async def add_note(
    reference: str, request: Request, state: State, desk: Desk, talk: Talk, person: Noting
) -> Response:
    """A staff note: never sent on, never shown to the citizen."""
    async with _form(request, max_files=0, max_fields=8) as fields:
        if fields is None or not console.form_is_ours(state, person, fields):
            return _refused(request, state, person, reference)
        text = _text(fields, "note-text")
    form = Form(values={"note-text": text})
    if not text:
        form.errors.append(("note-text", _t(NO_NOTE)))
    elif len(text) > MAX_TEXT:
        form.errors.append(("note-text", _t(TOO_LONG, count=MAX_TEXT)))
    if form.errors:
        return await _page(request, state, desk, person, reference, form=form, status=422)
    try:
        await service.add_note(
            talk, reference=reference, speaker=Speaker(caller=person.caller), text=text
        )
    except DomainError as refused:
        return await _refusal(request, state, desk, person, reference, form, refused, "note-text")
    return _done(reference, "note")


@router.post(PAGE + "/information")
async def add_information(
    reference: str, request: Request, state: State, desk: Desk, talk: Talk, person: Speaking
) -> Response:
    """Information, photos or documents for the organisations working the enquiry."""
    limits = state.settings.attachments
    form = Form()
    async with _form(request, max_files=limits.max_files + 1, max_fields=8) as fields:
        if fields is None or not console.form_is_ours(state, person, fields):
            return _refused(request, state, person, reference)
        text = _text(fields, "information-text")
        form.values["information-text"] = text
        uploads = _chosen(fields.getlist("files"))
        if len(text) > MAX_TEXT:
            form.errors.append(("information-text", _t(TOO_LONG, count=MAX_TEXT)))
        elif not text and not uploads:
            form.errors.append(("information-text", _t(NOTHING_ADDED)))
        if form.errors:
            return await _page(request, state, desk, person, reference, form=form, status=422)
        try:
            # Starlette's own UploadFile, which FastAPI's only subclasses: the same reading.
            files: list[Prepared] = await read_uploads(cast(list[Any], uploads), limits)
        except DomainError as refused:
            return await _refusal(request, state, desk, person, reference, form, refused, "files")
    try:
        await service.add_information(
            talk,
            reference=reference,
            speaker=Speaker(caller=person.caller),
            text=text or None,
            files=files,
        )
    except DomainError as refused:
        return await _refusal(
            request, state, desk, person, reference, form, refused, "information-text"
        )
    return _done(reference, "information")


@router.post(PAGE + "/withdraw")
async def withdraw(
    reference: str, request: Request, state: State, desk: Desk, talk: Talk, person: Speaking
) -> Response:
    """Withdraw the enquiry for the citizen, with their reason."""
    return await _with_reason(request, state, desk, talk, person, reference, "withdraw")


@router.post(PAGE + "/reopen")
async def reopen(
    reference: str, request: Request, state: State, desk: Desk, talk: Talk, person: Speaking
) -> Response:
    """Reopen a resolved or closed enquiry, with the reason."""
    return await _with_reason(request, state, desk, talk, person, reference, "reopen")


@router.post(PAGE + "/hand-on")
async def hand_on(
    reference: str, request: Request, state: State, desk: Desk, person: Triaging
) -> Response:
    """Hand the enquiry on from the triage desk to the organisations chosen."""
    async with _form(request, max_files=0, max_fields=20) as fields:
        if fields is None or not console.form_is_ours(state, person, fields):
            return _refused(request, state, person, reference)
        chosen = [v for v in fields.getlist("organisations") if isinstance(v, str) and v]
        why = _text(fields, "hand-on-reason")
    form = Form(values={"organisations": chosen, "hand-on-reason": why})
    if not chosen:
        form.errors.append(("hand-on-organisations", _t(NO_ORGANISATION)))
    elif len(chosen) > 5:
        form.errors.append(("hand-on-organisations", _t(TOO_MANY_ORGANISATIONS)))
    if not why:
        form.errors.append(("hand-on-reason", _t(NO_HAND_ON_REASON)))
    elif len(why) > MAX_HAND_ON_REASON:
        form.errors.append(("hand-on-reason", _t(TOO_LONG, count=MAX_HAND_ON_REASON)))
    body = _hand_on_body(chosen, why, form)
    if body is None:
        return await _page(request, state, desk, person, reference, form=form, status=422)
    try:
        await triage.hand_on(desk, reference=reference, body=body, caller=person.caller)
    except DomainError as refused:
        return await _refusal(
            request, state, desk, person, reference, form, refused, "hand-on-organisations"
        )
    return _done(reference, "handed-on")


def _hand_on_body(chosen: list[str], why: str, form: Form) -> HandOnIn | None:
    """The API's own body for a hand-on (its rules: each organisation once), or None with the
    errors said."""
    if form.errors:
        return None
    try:
        return HandOnIn(organisations=list(dict.fromkeys(chosen)), reason=why)
    except ValidationError:
        form.errors.append(("hand-on-organisations", _t(NOT_LISTED)))
        return None


async def _with_reason(
    request: Request,
    state: AppState,
    desk: triage.TriageDesk,
    talk: service.Conversation,
    person: SignedIn,
    reference: str,
    act: str,
) -> Response:
    field_id = f"{act}-reason"
    async with _form(request, max_files=0, max_fields=8) as fields:
        if fields is None or not console.form_is_ours(state, person, fields):
            return _refused(request, state, person, reference)
        reason = _text(fields, field_id)
    form = Form(values={field_id: reason})
    if len(reason) > MAX_REASON:
        form.errors.append((field_id, _t(TOO_LONG, count=MAX_REASON)))
        return await _page(request, state, desk, person, reference, form=form, status=422)
    speaker = Speaker(caller=person.caller)
    say = service.withdraw if act == "withdraw" else service.reopen
    try:
        await say(talk, reference=reference, speaker=speaker, reason=reason or None)
    except DomainError as refused:
        return await _refusal(request, state, desk, person, reference, form, refused, field_id)
    return _done(reference, "withdrawn" if act == "withdraw" else "reopened")


# --- rendering -------------------------------------------------------------------------------


def _own_client(person: SignedIn) -> str | None:
    """The API's rule: enquiries:read-all reads any enquiry, enquiries:read its client's own."""
    return None if person.allows(Scope.enquiries_read_all) else person.caller.client_id


async def _page(
    request: Request,
    state: AppState,
    desk: triage.TriageDesk,
    person: SignedIn,
    reference: str,
    *,
    form: Form | None = None,
    done: str | None = None,
    status: int = 200,
) -> Response:
    """The page (read, and so audited, afresh), with a form's errors if there are any."""
    if len(reference) > MAX_REFERENCE:
        return _not_found(request, state, person)
    try:
        view = await get_enquiry(
            engine=state.engine,
            catalogue=state.catalogue,
            sealer=state.sealer,
            reference=reference,
            reader=person.caller,
            client_id=_own_client(person),
        )
    except (NotFound, InvalidReference):
        return _not_found(request, state, person)
    item = None
    if person.allows(Scope.triage):
        item = await triage.find_item(desk, reference=view.reference)
    context = _context(state, person, view, item, form or Form())
    context["done"] = _t(DONE[done]) if done is not None and done in DONE else None
    return console.render(request, state, person, "console/enquiry.html", context, status=status)


def _context(
    state: AppState, person: SignedIn, view: EnquiryOut, item: TriageItem | None, form: Form
) -> dict[str, Any]:
    catalogue = state.catalogue
    found = catalogue.services.get(view.service_code)
    names = {d.organisation_id: d.organisation_name for d in view.destinations}
    status = Status(view.status) if view.status in Status.__members__.values() else None
    live = view.anonymised_at is None
    speaks = any(person.allows(scope) for scope in SPEAKERS)
    path = f"{console.CONSOLE_PATH}/enquiries/{view.reference}"
    return {
        "view": view,
        "form": form,
        "path": path,
        "groups": view.reference.split("-"),
        "service_name": found.name if found else view.service_code,
        "status_label": _words(view.status),
        "citizen": _citizen(view.citizen),
        "timeline": [_event(event, names) for event in reversed(view.timeline)],
        "messages": [_message(m, path) for m in view.messages],
        "when": lambda at: when(console.ENGLISH, at) if at else "",
        "words": _words,
        "item": item,
        "candidates": [c for c in item.candidates if c.organisation_id] if item else [],
        "signposts": [c for c in item.candidates if not c.organisation_id] if item else [],
        "may": {
            "note": live and person.allows(Scope.enquiries_read_all),
            "information": live and speaks and status not in FINAL,
            "withdraw": live and speaks and status not in FINAL,
            "reopen": live and speaks and status in REOPENABLE,
            "hand_on": item is not None,
        },
        "limits": state.settings.attachments,
        "megabytes": megabytes(state.settings.attachments.max_bytes),
    }


def _words(value: str | None) -> str:
    """A status or state as read: `in_progress` is "in progress"."""
    return (value or "").replace("_", " ")


def _citizen(citizen: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    if not citizen:
        return []
    return [
        (_t(label), str(citizen[key]))
        for key, label in CITIZEN_FIELDS
        if citizen.get(key) not in (None, "")
    ]


def _event(event: TimelineEvent, names: Mapping[str, str]) -> dict[str, Any]:
    organisation = names.get(event.organisation_id or "", event.organisation_id or "")
    label = EVENT_LABELS.get(event.type)
    if label is None:
        title = _words(str(event.type).replace(".", ": ", 1))
    else:
        title = _t(label, organisation=organisation, status=_words(event.status))
    return {
        "title": title,
        "type": str(event.type),
        "detail": event.detail,
        "actor": event.actor,
        "at": when(console.ENGLISH, event.at),
        "datetime": event.at.isoformat(),
    }


def _message(message: Any, path: str) -> dict[str, Any]:
    by = message.actor or (_t("the citizen") if message.by_citizen else _t("staff"))
    return {
        "label": _t(MESSAGE_LABELS.get(message.kind, message.kind)),
        "note": message.kind == MessageKind.note,
        "by": by,
        "at": when(console.ENGLISH, message.created_at),
        "text": message.text,
        "files": [
            {
                "name": file.filename,
                "url": f"{path}/attachments/{file.id}",
                "kb": max(1, -(-file.size // 1000)),
            }
            for file in message.attachments
        ],
    }


async def _refusal(
    request: Request,
    state: AppState,
    desk: triage.TriageDesk,
    person: SignedIn,
    reference: str,
    form: Form,
    refused: DomainError,
    field_id: str,
) -> Response:
    """The page again, the service's refusal beside the field, at the refusal's status."""
    if isinstance(refused, (NotFound, InvalidReference)):
        return _not_found(request, state, person)
    limits = state.settings.attachments
    if type(refused) in FILE_ERRORS:
        message = _t(
            FILE_ERRORS[type(refused)],
            megabytes=megabytes(limits.max_bytes),
            count=limits.max_files,
        )
        form.errors.append(("files", message))
    else:
        # The service's own words: what the enquiry's state does not allow, and why.
        form.errors.append((field_id, str(refused)))
    return await _page(request, state, desk, person, reference, form=form, status=refused.status)


def _message_page(
    request: Request,
    state: AppState,
    person: SignedIn,
    title: str,
    message: str,
    status: int,
    back: str,
) -> Response:
    return console.render(
        request,
        state,
        person,
        "console/message.html",
        {"title": _t(title), "message": _t(message), "back": back},
        status=status,
    )


def _not_found(request: Request, state: AppState, person: SignedIn) -> Response:
    """The one answer for a reference that is not one, does not exist, or is not theirs."""
    back = f"{console.CONSOLE_PATH}/"
    return _message_page(request, state, person, NOT_FOUND_TITLE, NOT_FOUND, 404, back)


def _refused(request: Request, state: AppState, person: SignedIn, reference: str) -> Response:
    """A form without this session's CSRF field: nothing done."""
    back = f"{console.CONSOLE_PATH}/enquiries/{quote(reference[:MAX_REFERENCE], safe='-')}"
    return _message_page(request, state, person, REFUSED_TITLE, REFUSED, 400, back)


def _done(reference: str, what: str) -> Response:
    """Post/Redirect/Get: the page again, with what was done at its top."""
    shown = references.display(references.parse(reference))
    return RedirectResponse(
        f"{console.CONSOLE_PATH}/enquiries/{shown}?done={what}", status_code=303, headers=HEADERS
    )


@asynccontextmanager
async def _form(
    request: Request, *, max_files: int, max_fields: int
) -> AsyncIterator[FormData | None]:
    """The form as posted, or None for one no page of ours sends (too many fields or files):
    refused with the page, never problem+json."""
    try:
        fields = await request.form(max_files=max_files, max_fields=max_fields)
    except HTTPException:
        yield None
        return
    try:
        yield fields
    finally:
        await fields.close()


def _text(fields: FormData, name: str) -> str:
    value = fields.get(name)
    return value.replace("\x00", "").strip() if isinstance(value, str) else ""


def _chosen(values: Sequence[Any]) -> list[UploadFile]:
    """The files chosen: a browser sends an empty, nameless part when none was."""
    return [v for v in values if isinstance(v, UploadFile) and (v.filename or v.size)]


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
