"""HTTP for the Open311 GeoReport v2 front door (docs/open311.md): parse the form or query,
call app.open311, answer in JSON or XML as the path's suffix asks.

Errors are raised as everywhere else and answered in Open311's shape by
app.api.middleware.Open311Errors. The api_key comes in the form or the query, not a header.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import UploadFile

from app.api.auth import api_key_caller
from app.api.deps import State
from app.api.ratelimit import limit_address
from app.clients.service import Caller, Scope
from app.conversation.service import Conversation
from app.core.errors import FieldError, NotFound, ValidationFailed
from app.open311 import catalogue as definitions
from app.open311 import requests as service
from app.open311.formats import Format, render
from app.open311.mapping import Pairs, check_form
from app.open311.requests import FrontDoor, RequestQuery

# Described by the GeoReport v2 spec and docs/open311.md rather than the /v1 OpenAPI document.
router = APIRouter(prefix=definitions.PREFIX, tags=["open311"], include_in_schema=False)
READERS = (Scope.enquiries_read, Scope.enquiries_read_all)
# Who may add to a request: the client that submitted it, or staff (as on /v1).
SPEAKERS = (Scope.enquiries_submit, Scope.enquiries_read_all)
# A token is given to the client that submitted: it may look its own up.
TOKEN_HOLDER = Scope.enquiries_submit


async def _door(state: State) -> FrontDoor:
    conversation = Conversation(
        engine=state.engine,
        catalogue=state.catalogue,
        sealer=state.sealer,
        store=state.attachments,
        settings=state.settings,
        wake_follow_ups=state.wake_follow_ups,
    )
    return FrontDoor(
        intake=state.intake, conversation=conversation, settings=state.settings, http=state.http
    )


Door = Annotated[FrontDoor, Depends(_door)]


def _format(fmt: str) -> Format:
    found = Format.of(fmt)
    if found is None:
        raise NotFound(f"This front door answers .json and .xml, not .{fmt[:10]}.")
    return found


def _query_pairs(request: Request) -> Pairs:
    pairs = list(request.query_params.multi_items())
    check_form(pairs)
    return pairs


async def _form_pairs(request: Request) -> Pairs:
    """The form's text fields, then the query's (a key may come in either)."""
    try:
        form = await request.form()
    except Exception as error:  # a form Starlette cannot read, in whatever way it fails
        raise ValidationFailed(f"The form could not be read ({type(error).__name__}).") from None
    pairs = [(k, v) for k, v in form.multi_items() if not isinstance(v, UploadFile)]
    pairs += list(request.query_params.multi_items())
    check_form(pairs)
    return pairs


async def _reader(request: Request, door: FrontDoor, *scopes: Scope) -> tuple[Pairs, Caller]:
    """A read's query and its caller: the api_key checked for one of `scopes`, and the
    jurisdiction (if named) this gateway's."""
    pairs = _query_pairs(request)
    caller = await api_key_caller(request, _one(pairs, "api_key"), *scopes)
    service.check_jurisdiction(door.settings, pairs)
    return pairs, caller


def _one(pairs: Pairs, name: str) -> str | None:
    return next((v.strip() for k, v in pairs if k == name and v.strip()), None)


@router.get("/discovery.{fmt}", summary="Open311: the discovery document")
async def discovery(fmt: str, request: Request, state: State) -> Response:
    """Where this endpoint is and the formats it speaks."""
    answer = _format(fmt)
    await limit_address(request)
    return render(definitions.discovery(state.settings), answer, root="discovery")


@router.get("/services.{fmt}", summary="Open311: the services")
async def services(fmt: str, request: Request, state: State) -> Response:
    """Every service one can request, with its group and keywords."""
    answer = _format(fmt)
    await limit_address(request)
    service.check_jurisdiction(state.settings, _query_pairs(request))
    return render(definitions.services(state.catalogue), answer, root="services")


@router.get("/services/{code}.{fmt}", summary="Open311: one service's questions")
async def service_definition(code: str, fmt: str, request: Request, state: State) -> Response:
    """A service's attributes: what to send as attribute[code]."""
    answer = _format(fmt)
    await limit_address(request)
    service.check_jurisdiction(state.settings, _query_pairs(request))
    return render(definitions.definition(state.catalogue, code), answer, root="service_definition")


@router.post("/requests.{fmt}", summary="Open311: submit a service request")
async def create_request(fmt: str, request: Request, door: Door) -> Response:
    """A form-encoded request; it becomes an enquiry exactly as POST /v1/enquiries makes one."""
    answer = _format(fmt)
    pairs = await _form_pairs(request)
    caller = await api_key_caller(request, _one(pairs, "api_key"), Scope.enquiries_submit)
    created = await service.submit(door, caller=caller, pairs=pairs)
    return render(created, answer, root="service_requests", status=201)


@router.get("/requests.{fmt}", summary="Open311: list service requests")
async def list_requests(fmt: str, request: Request, door: Door) -> Response:
    """By id (a comma list), service, dates and status; the last 90 days by default."""
    answer = _format(fmt)
    pairs, caller = await _reader(request, door, *READERS)
    query = RequestQuery(
        ids=service.parse_ids(_one(pairs, "service_request_id")),
        service_codes=service.comma_list(_one(pairs, "service_code")),
        start=_date(pairs, "start_date"),
        end=_date(pairs, "end_date"),
        statuses=service.parse_statuses(_one(pairs, "status")),
    )
    found = await service.list_requests(door, caller=caller, query=query)
    return render(found, answer, root="service_requests")


@router.get("/requests/{request_id}.{fmt}", summary="Open311: one service request")
async def read_request(request_id: str, fmt: str, request: Request, door: Door) -> Response:
    """The request, in an array (the spec's shape, in JSON too)."""
    answer = _format(fmt)
    _, caller = await _reader(request, door, *READERS)
    found = await service.get_request(door, caller=caller, reference=request_id)
    return render(found, answer, root="service_requests")


@router.get("/tokens/{token}.{fmt}", summary="Open311: the request a token stands for")
async def read_token(token: str, fmt: str, request: Request, door: Door) -> Response:
    """The service_request_id of a token given at submission."""
    answer = _format(fmt)
    _, caller = await _reader(request, door, *READERS, TOKEN_HOLDER)
    found = await service.by_token(door, caller=caller, token=token)
    return render(found, answer, root="service_requests")


@router.get("/servicerequestupdates.{fmt}", summary="Open311 (mySociety): status updates")
async def list_updates(fmt: str, request: Request, door: Door) -> Response:
    """Each status change of the requests this key may see, oldest first."""
    answer = _format(fmt)
    pairs, caller = await _reader(request, door, *READERS)
    found = await service.list_updates(
        door, caller=caller, start=_date(pairs, "start_date"), end=_date(pairs, "end_date")
    )
    return render(found, answer, root="service_request_updates")


@router.post("/servicerequestupdates.{fmt}", summary="Open311 (mySociety): add to a request")
async def create_update(fmt: str, request: Request, door: Door) -> Response:
    """More information (description, media_url) for the back-offices holding the request."""
    answer = _format(fmt)
    pairs = await _form_pairs(request)
    caller = await api_key_caller(request, _one(pairs, "api_key"), *SPEAKERS)
    added = await service.post_update(door, caller=caller, pairs=pairs)
    return render(added, answer, root="service_request_updates", status=201)


def _date(pairs: Pairs, name: str) -> datetime | None:
    """A W3C date-time (UTC when it names no zone); 400 when it is not one."""
    text = _one(pairs, name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationFailed(
            f"{name} is not a W3C date and time, like 2026-12-01T09:00:00Z.",
            [FieldError("not a date and time", parameter=name)],
        ) from None
