"""HTTP for an organisation's part of an enquiry, moved by its own staff: parse, call, answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.deps import Adapters, Catalogue, Engine, PartUpdater
from app.api.problems import documented_problems
from app.api.ratelimit import RATE_LIMITED_RESPONSE
from app.casework.parts import PartUpdated, PartUpdateIn, update_part

router = APIRouter(prefix="/v1/enquiries", tags=["parts"], responses={429: RATE_LIMITED_RESPONSE})


@router.post(
    "/{reference}/parts/{organisation_id}/updates",
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
