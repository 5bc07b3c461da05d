"""HTTP for enquiries: parse, call a service, answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import EmailStr

from app.api.auth import check_scope
from app.api.deps import (
    READERS,
    Catalogue,
    Engine,
    Intake,
    OptionalCaller,
    Reader,
    Sealer,
    Submitter,
)
from app.api.problems import documented_problems
from app.api.ratelimit import RATE_LIMITED_RESPONSE
from app.casework.history import caller_history
from app.clients.service import Scope
from app.core.types import NoNul, UtcDatetime
from app.intake.idempotency import StoredResponse
from app.intake.reading import EnquiryFilter, get_enquiry, list_enquiries
from app.intake.schemas import (
    PHONE_PATTERN,
    Channel,
    EnquiryCreated,
    EnquiryIn,
    EnquiryOut,
    EnquiryPage,
)
from app.intake.service import accept_enquiry

router = APIRouter(
    prefix="/v1/enquiries", tags=["enquiries"], responses={429: RATE_LIMITED_RESPONSE}
)
_READERS_LACK = "enquiries:read and enquiries:read-all"


@router.post(
    "",
    status_code=201,
    response_model=EnquiryCreated,
    summary="Submit an enquiry",
    responses=documented_problems(
        {
            400: "The body is not valid JSON",
            409: "The first request with this Idempotency-Key is still in progress",
            413: "The body is too large",
            415: "The body is not JSON",
            422: "Invalid enquiry, out-of-area place, Idempotency-Key reused, or a channel this "
            "API key may not use",
        },
        lacks="the scope enquiries:submit",
    ),
)
async def create_enquiry(
    enquiry: EnquiryIn,
    intake: Intake,
    caller: Submitter,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="Makes a retry safe: the same key and body give back the first answer.",
        ),
    ] = None,
) -> Any:
    """Validate, locate and route an enquiry; store it and queue it for every destination.

    A repeat with the same `Idempotency-Key` and body gets the first answer again, with the
    header `Idempotent-Replayed: true`.

    The answer gives the reference to read to the citizen, the organisations that will receive
    it and why, advice to call 999 when the description suggests an emergency, and the
    citizen's access token. An API key made with `--channel` may submit on that channel only.
    Idempotency keys are per API key.
    """
    answer = await accept_enquiry(
        enquiry=enquiry, context=intake, caller=caller, idempotency_key=idempotency_key
    )
    if isinstance(answer, StoredResponse):
        return JSONResponse(
            answer.body,
            status_code=answer.status,
            headers={
                "Location": _location(answer.body.get("reference", "")),
                "Idempotent-Replayed": "true",
            },
        )
    # Answered directly: the model is already valid, and re-checking it costs on every intake.
    return Response(
        answer.__pydantic_serializer__.to_json(answer),
        status_code=201,
        media_type="application/json",
        headers={"Location": _location(answer.reference)},
    )


def _location(reference: str) -> str:
    return f"/v1/enquiries/{reference}"


@router.get(
    "/{reference}",
    response_model=EnquiryOut,
    summary="Read one enquiry with its destinations and timeline",
    responses=documented_problems(
        {
            401: "No valid API key, and no token",
            404: "No such enquiry (or not yours, or the token is wrong)",
            422: "Not a valid reference",
        },
        lacks=_READERS_LACK,
    ),
)
async def read_enquiry(
    reference: Annotated[str, Path(max_length=32, examples=["K7Q-M4X-PB6"])],
    engine: Engine,
    catalogue: Catalogue,
    sealer: Sealer,
    caller: OptionalCaller,
    token: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description="The citizen's access token from the 201 answer: no API key is needed, "
            "and the citizen's details are shown masked.",
        ),
    ] = None,
) -> EnquiryOut:
    """Status, each destination's delivery state (attempts, last error, their reference), and
    the timeline. The reference may be typed in any case, with or without dashes. A failed
    delivery's error (the back-office's host and answer) is shown to staff with
    `enquiries:read-all`; others see only whether it is being retried or was given up.

    With an API key: `enquiries:read-all` sees any enquiry, `enquiries:read` only those its
    own key submitted; each read that shows the citizen's details is written to the audit
    log. With `token` instead, the citizen sees their own enquiry. A wrong token
    or another client's enquiry is answered 404, exactly like a reference that does not exist.
    """
    if token is not None:
        return await get_enquiry(
            engine=engine, catalogue=catalogue, sealer=sealer, reference=reference, token=token
        )
    reader = check_scope(caller, READERS)
    return await get_enquiry(
        engine=engine,
        catalogue=catalogue,
        sealer=sealer,
        reference=reference,
        reader=reader,
        client_id=None if reader.allows(Scope.enquiries_read_all) else reader.client_id,
    )


@router.get(
    "",
    response_model=EnquiryPage,
    summary="List enquiries, newest first, or a caller's earlier enquiries",
    responses=documented_problems(
        {
            403: "A phone or email search without enquiries:read-all",
            422: "A filter or the cursor is not valid, or both phone and email were given",
        },
        lacks=_READERS_LACK,
    ),
)
async def search_enquiries(
    engine: Engine,
    sealer: Sealer,
    caller: Reader,
    service_code: Annotated[NoNul | None, Query(max_length=64)] = None,
    status: Annotated[NoNul | None, Query(max_length=32)] = None,
    channel: Channel | None = None,
    organisation_id: Annotated[NoNul | None, Query(max_length=64)] = None,
    created_after: UtcDatetime | None = None,
    created_before: UtcDatetime | None = None,
    phone: Annotated[
        str | None,
        Query(
            pattern=PHONE_PATTERN,
            description="A caller's earlier enquiries by the phone number they gave, however "
            "it is written (07700 900123, +44 7700 900123)",
        ),
    ] = None,
    email: Annotated[
        EmailStr | None,
        Query(max_length=254, description="A caller's earlier enquiries by their email"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> EnquiryPage:
    """Filter by service, status, channel, organisation and creation time; page with `cursor`.
    With only `enquiries:read`, the list holds the enquiries this API key submitted; a
    partner's staff see only enquiries with their organisation's part (naming another
    organisation finds none).

    With `phone` or `email` (one of them), a caller's history: their earlier enquiries, found
    by the keyed hash of what they gave, for staff with `enquiries:read-all` only (403
    otherwise); each search is written to the audit log, without the phone or email."""
    filters = EnquiryFilter.for_reader(
        caller,
        service_code=service_code,
        status=status,
        channel=channel.value if channel else None,
        organisation_id=organisation_id,
        created_after=created_after,
        created_before=created_before,
    )
    if phone is not None or email is not None:
        return await caller_history(
            engine=engine,
            sealer=sealer,
            caller=caller,
            filters=filters,
            phone=phone,
            email=email,
            cursor=cursor,
            limit=limit,
        )
    return await list_enquiries(engine=engine, filters=filters, cursor=cursor, limit=limit)
