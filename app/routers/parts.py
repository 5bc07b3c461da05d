"""HTTP for an organisation's part of an enquiry, moved by its own staff: parse, call, answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.deps import Adapters, Catalogue, Engine, PartUpdater
from app.api.problems import documented_problems
from app.api.ratelimit import RATE_LIMITED_RESPONSE
from app.casework.parts import OpenPartPage, PartUpdated, PartUpdateIn, open_parts, update_part
from app.core.types import NoNul

router = APIRouter(tags=["parts"], responses={429: RATE_LIMITED_RESPONSE})


@router.get(
    "/v1/parts",
    response_model=OpenPartPage,
    summary="An organisation's parts still to be worked (its own staff's queue)",
    responses=documented_problems(
        {422: "No organisation named (or not a known one), or a cursor this API did not give"},
        lacks="the scope parts:update",
    ),
)
async def list_open_parts(
    engine: Engine,
    catalogue: Catalogue,
    caller: PartUpdater,
    organisation_id: Annotated[NoNul | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OpenPartPage:
    """Delivered and not yet finished (no final word back, not closed by a person), longest
    delivered first: what POST .../parts/{organisation_id}/updates moves. A partner's staff
    get their own organisation's (naming another gives an empty page); anyone else names
    `organisation_id`. No citizen's details: read one enquiry for those."""
    return await open_parts(
        engine=engine,
        catalogue=catalogue,
        caller=caller,
        organisation_id=organisation_id,
        cursor=cursor,
        limit=limit,
    )


@router.post(
    "/v1/enquiries/{reference}/parts/{organisation_id}/updates",
    response_model=PartUpdated,
    summary="Move an organisation's part of an enquiry (its own staff)",
    responses=documented_problems(
        {
            404: "No such enquiry, no part for that organisation, or not yours to update",
            409: "The part was not delivered (waiting, given up, called off) or is the "
            "triage desk's",
            422: "Not a valid reference, or a status word nobody knows (the answer lists "
            "the accepted words)",
        },
        lacks="the scope parts:update",
    ),
)
async def move_part(
    reference: Annotated[str, Path(max_length=32, examples=["K7Q-M4X-PB6"])],
    organisation_id: Annotated[str, Path(max_length=64, examples=["thames-valley-police"])],
    change: PartUpdateIn,
    engine: Engine,
    catalogue: Catalogue,
    adapters: Adapters,
    caller: PartUpdater,
) -> PartUpdated:
    """For organisations with no system that reports status back: their staff say where
    their part has got to, in their own words (the organisation's `status_map`, its
    protocol's words) or ours (`acknowledged`, `in_progress`, `action_scheduled`,
    `resolved`, `closed`, `not_our_responsibility`, ...). The word is recorded as a pushed
    update is, the enquiry's status follows, and the timeline (staff view) and the audit log
    name the person. A partner's staff may update their own organisation's part only: any
    other is answered 404, as if it did not exist. `not_our_responsibility` sends the enquiry
    to the triage desk."""
    return await update_part(
        engine=engine,
        catalogue=catalogue,
        adapters=adapters,
        caller=caller,
        reference=reference,
        organisation_id=organisation_id,
        change=change,
    )
