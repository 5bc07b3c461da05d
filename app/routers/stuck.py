"""HTTP for the stuck-work report (scope deliveries:manage)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import Catalogue, DeliveryManager, Engine, Now, Stuck
from app.api.problems import documented_problems
from app.casework.schemas_stuck import StuckReport
from app.casework.stuck import stuck_work

router = APIRouter(tags=["stuck work"])


@router.get(
    "/v1/stuck",
    response_model=StuckReport,
    summary="Deliveries that need a person",
    responses=documented_problems(lacks="the scope deliveries:manage"),
)
async def read_stuck(
    engine: Engine, catalogue: Catalogue, settings: Stuck, caller: DeliveryManager, now: Now
) -> StuckReport:
    """Each delivery once, under the first that applies: `dead` (given up, not handled),
    `pending` (waiting longer than IAP_STUCK__PENDING_MINUTES), `past_resolve_target` and
    `past_acknowledge_target` (its service's targets, from when the enquiry was accepted),
    `unacknowledged` (delivered, no word back for longer than its organisation's
    `silence_hours`). Longest over first. A partner's staff see their organisation's only."""
    return await stuck_work(
        engine=engine, catalogue=catalogue, settings=settings, caller=caller, now=now
    )
