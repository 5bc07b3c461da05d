"""HTTP for the triage desk (scope triage): the queue, claims, and the acts that move an
enquiry on: hand on, correct the place, close at the desk."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.api.deps import Desk, TriageAgent
from app.api.problems import documented_problems
from app.casework import triage
from app.casework.schemas_triage import (
    ClaimOut,
    CloseIn,
    HandOnIn,
    RelocateIn,
    TriageActOut,
    TriageOrder,
    TriagePage,
)
from app.core.types import NoNul

router = APIRouter(tags=["triage"])
_LACKS = "the scope triage (a partner's staff never hold it)"
Reference = Annotated[str, Path(max_length=32, examples=["K7Q-M4X-PB6"])]
_ACT_PROBLEMS = {
    404: "No such enquiry",
    409: "The enquiry is not at the triage desk, or another person holds it",
}


@router.get(
    "/v1/triage",
    response_model=TriagePage,
    summary="The triage queue: enquiries waiting for a person to place them",
    responses=documented_problems({422: "A filter or the cursor is not valid"}, lacks=_LACKS),
)
async def list_triage(
    desk: Desk,
    caller: TriageAgent,
    service_code: Annotated[NoNul | None, Query(max_length=64)] = None,
    order: TriageOrder = TriageOrder.oldest,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> TriagePage:
    """Each open item: why it is here (the router's reason, or the organisation that said it
    is not theirs and its words), how long it has waited, who holds it, and the candidates:
    organisations that could be right, with the evidence. Longest waiting first
    (`order=newest` for the newest). No citizen's details: read one enquiry in full with
    GET /v1/enquiries/{reference}."""
    return await triage.list_items(
        desk, service_code=service_code, order=order, cursor=cursor, limit=limit
    )


@router.post(
    "/v1/triage/{reference}/claim",
    response_model=ClaimOut,
    summary="Claim a triage item (one person at a time; a claim expires)",
    responses=documented_problems(_ACT_PROBLEMS, lacks=_LACKS),
)
async def claim_item(reference: Reference, desk: Desk, caller: TriageAgent) -> ClaimOut:
    """Hold the item for `IAP_TRIAGE__CLAIM_SECONDS` (15 minutes by default); claiming it again
    extends the claim. Another person's unexpired claim is answered 409, naming them."""
    return await triage.claim(desk, reference=reference, caller=caller)


@router.delete(
    "/v1/triage/{reference}/claim",
    status_code=204,
    summary="Let go of a claim",
    responses=documented_problems(_ACT_PROBLEMS, lacks=_LACKS),
)
async def release_item(reference: Reference, desk: Desk, caller: TriageAgent) -> Response:
    """The holder lets go, or a supervisor or administrator frees another's claim."""
    await triage.release(desk, reference=reference, caller=caller)
    return Response(status_code=204)


@router.post(
    "/v1/enquiries/{reference}/hand-on",
    response_model=TriageActOut,
    summary="Hand an enquiry on from the triage desk to the right organisation(s)",
    responses=documented_problems(
        {**_ACT_PROBLEMS, 422: "Unknown organisations, the desk itself, or a bad reason"},
        lacks=_LACKS,
    ),
)
async def hand_on(
    reference: Reference, body: HandOnIn, desk: Desk, caller: TriageAgent
) -> TriageActOut:
    """New deliveries to `organisations` (1 to 5; none already working the enquiry), sent
    with the same data-sharing rules and the citizen's consent as any; the desk's part is
    closed as handed on, with `reason`. Claims the item if nobody holds it."""
    return await triage.hand_on(desk, reference=reference, body=body, caller=caller)


@router.post(
    "/v1/enquiries/{reference}/relocate",
    response_model=TriageActOut,
    summary="Correct an enquiry's place at the triage desk and route it again",
    responses=documented_problems(
        {**_ACT_PROBLEMS, 422: "A bad location, or a place outside the area"}, lacks=_LACKS
    ),
)
async def relocate(
    reference: Reference, body: RelocateIn, desk: Desk, caller: TriageAgent
) -> TriageActOut:
    """Locate `location` (as at intake) and route again: organisations now found are handed
    the enquiry; if the place still cannot be decided it stays at the desk, with its new place
    and candidates."""
    return await triage.relocate(desk, reference=reference, body=body, caller=caller)


@router.post(
    "/v1/enquiries/{reference}/close",
    response_model=TriageActOut,
    summary="Close an enquiry at the triage desk",
    responses=documented_problems({**_ACT_PROBLEMS, 422: "A bad outcome or note"}, lacks=_LACKS),
)
async def close(
    reference: Reference, body: CloseIn, desk: Desk, caller: TriageAgent
) -> TriageActOut:
    """`first_contact`: resolved at the desk (the note is the advice given); `outside_remit`:
    no partner's work (the note is the signposting given). Both are kept for reports."""
    return await triage.close(desk, reference=reference, body=body, caller=caller)
