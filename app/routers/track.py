"""The citizen's tracking page, `/track/{reference}?token=...` (the link every message to them
carries): the enquiry's status, where it went, its public timeline and what they added; forms
to add information or a photo and to withdraw it. Server-rendered HTML that works without
JavaScript, in English or Welsh. It reads and acts through the same services as the API
(app.intake.reading, app.conversation.service) with the citizen's masked view.

The access token in the URL is the credential (no cookies); each form also carries a MAC of
the enquiry and the form's purpose (Sealer.form_tokens), and a POST without it is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, cast
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from app.alerts.sender import TRACK_PATH
from app.api.deps import State
from app.api.ratelimit import limit_address
from app.attachments.files import Prepared, read_uploads
from app.catalogue.status import FINAL, Status
from app.conversation import service
from app.conversation.service import Speaker
from app.core.db import reading
from app.core.errors import (
    AttachmentTooLarge,
    DomainError,
    InvalidReference,
    NotFound,
    StateConflict,
    UnreadableAttachment,
    UnsupportedAttachment,
)
from app.core.models import utcnow
from app.core.vocabulary import EventType, MessageKind
from app.intake.reading import enquiry_view, readable_enquiry
from app.intake.schemas import EnquiryOut
from app.routers.conversation import MAX_REASON, MAX_TEXT, Talk
from app.web import i18n
from app.web.i18n import N_
from app.web.pages import HEADERS, form_field_matches, megabytes, render, translate, when

MAX_TOKEN = 100
INFORMATION, WITHDRAW, REOPEN = "information", "withdraw", "reopen"
PURPOSES = (INFORMATION, WITHDRAW, REOPEN)
REASON_FIELDS = {WITHDRAW: "reason", REOPEN: "reopen-reason"}
# Over, and may be opened again by the citizen (within the reopening window).
REOPENABLE = {Status.resolved, Status.closed}

router = APIRouter(
    prefix=TRACK_PATH.rstrip("/"),
    include_in_schema=False,
    dependencies=[Depends(limit_address)],  # counted per address, as the API's token reads
)

STATUS_LABELS: Mapping[str, tuple[str, str]] = {
    Status.received: (N_("Received"), N_("We have your enquiry and are sending it on.")),
    Status.routed: (N_("Received"), N_("We have your enquiry and are sending it on.")),
    Status.dispatched: (N_("Sent"), N_("It has been sent to the organisations that deal with it.")),
    Status.failed: (
        N_("Being followed up"),
        N_("We could not send it on; the contact centre is dealing with it."),
    ),
    Status.acknowledged: (N_("Received by them"), N_("The organisation dealing with it has it.")),
    Status.in_progress: (N_("In progress"), N_("Work on it has started.")),
    Status.information_requested: (
        N_("Question for you"),
        N_("More information is needed from you: add it below."),
    ),
    Status.action_scheduled: (N_("Scheduled"), N_("The work is scheduled.")),
    Status.resolved: (N_("Resolved"), N_("It has been resolved.")),
    Status.closed: (N_("Closed"), N_("It is closed.")),
    Status.not_our_responsibility: (
        N_("Not dealt with here"),
        N_("None of the organisations here deals with it."),
    ),
    Status.duplicate: (
        N_("Already reported"),
        N_("Someone had reported it already; it is dealt with there."),
    ),
    Status.cancelled: (N_("Cancelled"), N_("It was cancelled.")),
    Status.withdrawn: (N_("Withdrawn"), N_("You withdrew it; nothing more will be done.")),
    Status.reopened: (N_("Reopened"), N_("It has been opened again.")),
}
EVENT_LABELS: Mapping[str, str] = {
    EventType.enquiry_received: N_("We received your enquiry"),
    EventType.enquiry_routed: N_("We worked out who deals with it"),
    EventType.enquiry_dispatched: N_("Sent to every organisation that deals with it"),
    EventType.dispatch_delivered: N_("Sent to {organisation}"),
    EventType.dispatch_retry: N_("Sending to {organisation} is delayed; it will be tried again"),
    EventType.dispatch_dead: N_("It could not be sent to {organisation}; we are following it up"),
    EventType.dispatch_cancelled: N_("No longer being sent to {organisation}"),
    EventType.dispatch_redriven: N_("Being sent to {organisation} again"),
    EventType.dispatch_handled: N_("Dealt with by the contact centre"),
    EventType.enquiry_information_added: N_("Information was added"),
    EventType.enquiry_withdrawn: N_("The enquiry was withdrawn"),
    EventType.enquiry_reopened: N_("The enquiry was reopened"),
    EventType.follow_up_delivered: N_("{organisation} was sent what was added"),
    EventType.follow_up_dead: N_("What was added could not be sent to {organisation}"),
    EventType.follow_up_cancelled: N_("What was added was not sent to {organisation}"),
    EventType.enquiry_handed_on: N_("Passed on to the right organisation"),
    EventType.enquiry_rerouted: N_("Passed on to the right organisation"),
    EventType.enquiry_relocated: N_("Its place was corrected"),
    EventType.enquiry_anonymised: N_("Your personal details were removed"),
    EventType.privacy_erasure_requested: N_("Removing your personal details was asked for"),
    EventType.status_updated: N_("{organisation}: {status}"),
}
STATUS_EVENT = N_("Status: {status}")
OTHER_EVENT = N_("Updated")
DONE = {
    INFORMATION: N_("Thank you: what you added has been kept and will be passed on."),
    WITHDRAW: N_("Your enquiry has been withdrawn."),
    REOPEN: N_("Your enquiry has been opened again and the organisations have been told."),
}
# The error shown for each refusal, by the field it is about.
FILE_ERRORS: Mapping[type[DomainError], str] = {
    AttachmentTooLarge: N_(
        "The file is too large, or there are too many: each can be up to {megabytes} MB, "
        "and up to {count} at once"
    ),
    UnsupportedAttachment: N_("The selected file must be a photo (JPG, PNG, WebP or GIF) or a PDF"),
    UnreadableAttachment: N_("The selected file is empty or damaged: choose another"),
}
NOTHING_SENT = N_("Enter the information you want to add, or choose a photo or document")
TOO_LONG = N_("The text must be {count} characters or fewer")
OVER = N_("This enquiry can no longer be changed, or it already holds as many files as it can")


@dataclass
class Page:
    """What one rendering of the page needs besides the enquiry."""

    language: str
    token: str
    done: str | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)  # (field id, message)
    values: dict[str, str] = field(default_factory=dict)

    def error(self, field_id: str) -> str | None:
        return next((message for at, message in self.errors if at == field_id), None)


def _language(request: Request, lang: str | None) -> str:
    return i18n.chosen_language(lang, request.headers.get("accept-language"))


# Unbounded here and judged by the route, so a malformed link gets a page, never problem+json.
Lang = Annotated[str | None, Query()]
Token = Annotated[str | None, Query()]


@router.get("/{reference}", response_class=HTMLResponse)
async def track(
    reference: str,
    request: Request,
    state: State,
    token: Token = None,
    lang: Lang = None,
    done: Annotated[str | None, Query()] = None,
) -> Response:
    """The citizen's page for their enquiry; the same 404 page for any wrong link."""
    language = _language(request, lang)
    found = await _enquiry(state, reference, token)
    if found is None or token is None:
        return _not_found(request, language)
    enquiry_id, view = found
    page = Page(language=language, token=token, done=done if done in DONE else None)
    return _render(request, state, enquiry_id, view, page)


@router.post("/{reference}/information", response_class=HTMLResponse)
async def add_information(
    reference: str,
    request: Request,
    state: State,
    talk: Talk,
    token: Token = None,
    lang: Lang = None,
) -> Response:
    """The form to add information, photos or documents; errors re-render the page."""
    language = _language(request, lang)
    found = await _enquiry(state, reference, token)
    if found is None or token is None:
        return _not_found(request, language)
    enquiry_id, view = found
    limits = state.settings.attachments
    page = Page(language=language, token=token)
    async with request.form(max_files=limits.max_files + 1, max_fields=8) as form:
        if not _form_is_ours(state, enquiry_id, INFORMATION, form):
            return _refused(request, language, view.reference, token)
        text = _text(form, "information")
        page.values["information"] = text
        uploads = _chosen(form.getlist("files"))
        if len(text) > MAX_TEXT:
            page.errors.append(("information", translate(language, TOO_LONG, count=MAX_TEXT)))
        if not text and not uploads:
            page.errors.append(("information", translate(language, NOTHING_SENT)))
        if page.errors:
            return _render(request, state, enquiry_id, view, page, status=422)
        try:
            # Starlette's own UploadFile, which FastAPI's only subclasses: the same reading.
            files: list[Prepared] = await read_uploads(cast(list[Any], uploads), limits)
        except DomainError as refused:
            return _refusal(request, state, enquiry_id, view, page, refused)
    try:
        await service.add_information(
            talk, reference=reference, speaker=Speaker(token=token), text=text or None, files=files
        )
    except DomainError as refused:
        return _refusal(request, state, enquiry_id, view, page, refused)
    return _back(view.reference, token, language, INFORMATION)


@router.post("/{reference}/withdraw", response_class=HTMLResponse)
async def withdraw(
    reference: str,
    request: Request,
    state: State,
    talk: Talk,
    token: Token = None,
    lang: Lang = None,
) -> Response:
    """The form to withdraw the enquiry, with the citizen's reason if they give one."""
    return await _with_reason(request, state, talk, reference, token, lang, WITHDRAW)


@router.post("/{reference}/reopen", response_class=HTMLResponse)
async def reopen(
    reference: str,
    request: Request,
    state: State,
    talk: Talk,
    token: Token = None,
    lang: Lang = None,
) -> Response:
    """The form to open a resolved enquiry again ("it is not fixed"), within the days the
    citizen may (IAP_FOLLOW_UPS__REOPEN_DAYS)."""
    return await _with_reason(request, state, talk, reference, token, lang, REOPEN)


async def _with_reason(
    request: Request,
    state: State,
    talk: Talk,
    reference: str,
    token: str | None,
    lang: str | None,
    purpose: str,
) -> Response:
    """Withdraw or reopen, with the citizen's reason if they give one."""
    language = _language(request, lang)
    found = await _enquiry(state, reference, token)
    if found is None or token is None:
        return _not_found(request, language)
    enquiry_id, view = found
    page = Page(language=language, token=token)
    field_id = REASON_FIELDS[purpose]
    async with request.form(max_files=0, max_fields=8) as form:
        if not _form_is_ours(state, enquiry_id, purpose, form):
            return _refused(request, language, view.reference, token)
        reason = _text(form, field_id)
    page.values[field_id] = reason
    if len(reason) > MAX_REASON:
        page.errors.append((field_id, translate(language, TOO_LONG, count=MAX_REASON)))
        return _render(request, state, enquiry_id, view, page, status=422)
    act = service.withdraw if purpose == WITHDRAW else service.reopen
    try:
        await act(talk, reference=reference, speaker=Speaker(token=token), reason=reason or None)
    except DomainError as refused:
        return _refusal(request, state, enquiry_id, view, page, refused, field_id=field_id)
    return _back(view.reference, token, language, purpose)


async def _enquiry(
    state: State, reference: str, token: str | None
) -> tuple[uuid.UUID, EnquiryOut] | None:
    """The enquiry and the citizen's masked view of it, by the API's own rule for a token;
    None for anything that is not their enquiry (a wrong token, a reference that is not one)."""
    if not token or len(token) > MAX_TOKEN:
        return None
    try:
        async with reading(state.engine, one_snapshot=True) as conn:
            enquiry = await readable_enquiry(conn, reference=reference, token=token)
            view = await enquiry_view(
                conn, enquiry, state.catalogue, state.sealer, masked=True, staff=False
            )
    except (NotFound, InvalidReference):
        return None
    return enquiry.id, view


def _form_is_ours(state: State, enquiry_id: uuid.UUID, purpose: str, form: FormData) -> bool:
    return form_field_matches(state.sealer, enquiry_id, purpose, form.get("csrf"))


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.replace("\x00", "").strip() if isinstance(value, str) else ""


def _chosen(values: Sequence[Any]) -> list[UploadFile]:
    """The files chosen: a browser sends an empty, nameless part when none was."""
    return [v for v in values if isinstance(v, UploadFile) and (v.filename or v.size)]


def _refusal(
    request: Request,
    state: State,
    enquiry_id: uuid.UUID,
    view: EnquiryOut,
    page: Page,
    refused: DomainError,
    field_id: str | None = None,
) -> Response:
    """The page again with the refusal beside its field, at the refusal's own status."""
    limits = state.settings.attachments
    language = page.language
    kind = type(refused)
    if kind in FILE_ERRORS:
        message = translate(
            language,
            FILE_ERRORS[kind],
            megabytes=megabytes(limits.max_bytes),
            count=limits.max_files,
        )
        page.errors.append(("files", message))
    elif isinstance(refused, StateConflict):
        page.errors.append((field_id or "information", translate(language, OVER)))
    else:
        page.errors.append((field_id or "information", translate(language, NOTHING_SENT)))
    return _render(request, state, enquiry_id, view, page, status=refused.status)


def _render(
    request: Request,
    state: State,
    enquiry_id: uuid.UUID,
    view: EnquiryOut,
    page: Page,
    *,
    status: int = 200,
) -> Response:
    language = page.language
    catalogue = state.catalogue
    service_ = catalogue.services.get(view.service_code)
    label, explained = STATUS_LABELS.get(view.status, (view.status, ""))
    names = {d.organisation_id: d.organisation_name for d in view.destinations}
    context = {
        "view": view,
        "page": page,
        "service_name": service_.name if service_ else view.service_code,
        "status_label": translate(language, label),
        "status_words": translate(language, explained) if explained else "",
        "over": view.status in {status.value for status in FINAL},
        "organisations": list(dict.fromkeys(names.values())),
        "timeline": [_event(language, event, names) for event in reversed(view.timeline)],
        "messages": [m for m in view.messages if m.kind != MessageKind.note],
        "submitted": when(language, view.created_at),
        "when": lambda at: when(language, at),
        "done": translate(language, DONE[page.done]) if page.done else None,
        "csrf": {purpose: state.sealer.form_tokens(enquiry_id, purpose)[0] for purpose in PURPOSES},
        "actions": {
            purpose: _url(view.reference, page.token, language, purpose) for purpose in PURPOSES
        },
        "reopenable": _reopenable(state, view),
        "file_url": lambda attachment_id: _file_url(view.reference, attachment_id, page.token),
        "limits": state.settings.attachments,
        "megabytes": megabytes(state.settings.attachments.max_bytes),
        "max_text": MAX_TEXT,
        "max_reason": MAX_REASON,
    }
    return _page(request, "track.html", language, context, status, page.token, view.reference)


def _reopenable(state: State, view: EnquiryOut) -> bool:
    """Whether the citizen may still open it again (the service decides when they try)."""
    if view.status not in REOPENABLE or view.closed_at is None:
        return False
    window = timedelta(days=state.settings.follow_ups.reopen_days)
    return utcnow() - view.closed_at <= window


def _event(language: str, event: Any, names: Mapping[str, str]) -> dict[str, str]:
    """A timeline line in the citizen's words: what happened, at what time."""
    organisation = names.get(event.organisation_id or "", event.organisation_id or "")
    status = STATUS_LABELS.get(event.status or "", (event.status or "", ""))[0]
    label = EVENT_LABELS.get(event.type)
    if label is None:
        kind = str(event.type).removeprefix("enquiry.")
        label = STATUS_EVENT if kind in Status.__members__ else OTHER_EVENT
    return {
        "title": translate(
            language, label, organisation=organisation, status=translate(language, status)
        ),
        "at": when(language, event.at),
        "datetime": event.at.isoformat(),
    }


def _page(
    request: Request,
    template: str,
    language: str,
    context: dict[str, Any],
    status: int,
    token: str | None,
    reference: str | None,
) -> Response:
    switch = {
        other: _url(reference, token, other) if reference else f"?lang={other}"
        for other in i18n.languages()
        if other != language
    }
    return render(request, template, language, {**context, "switch": switch}, status=status)


def _not_found(request: Request, language: str) -> Response:
    """The one answer for a wrong token, an unknown reference and a malformed one."""
    return _page(request, "not_found.html", language, {}, 404, None, None)


def _refused(request: Request, language: str, reference: str, token: str) -> Response:
    """A form that did not come from this page (no CSRF field, or a wrong one)."""
    back = _url(reference, token, language)
    return _page(request, "refused.html", language, {"back": back}, 400, token, reference)


def _back(reference: str, token: str, language: str, done: str) -> Response:
    """Post/Redirect/Get: the page again, with what was done said at its top."""
    query = urlencode({"token": token, "lang": language, "done": done})
    return RedirectResponse(f"{TRACK_PATH}{reference}?{query}", status_code=303, headers=HEADERS)


def _url(reference: str, token: str | None, language: str, action: str | None = None) -> str:
    path = f"{TRACK_PATH}{reference}" + (f"/{action}" if action else "")
    return f"{path}?{urlencode({'token': token or '', 'lang': language})}"


def _file_url(reference: str, attachment_id: uuid.UUID, token: str) -> str:
    return f"/v1/enquiries/{reference}/attachments/{attachment_id}?{urlencode({'token': token})}"
