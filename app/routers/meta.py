"""Health checks and the pages that problem `type` URIs point at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.problems import PROBLEM_TYPES, Unavailable, problem, problem_type
from app.core.db import reading
from app.core.errors import NotFound
from app.core.supervisor import Supervisor

router = APIRouter(tags=["meta"])
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Readiness:
    """What /readyz checks: the database, and the background loops of this process (None: an
    API-only process, which runs none)."""

    engine: AsyncEngine
    loops: Supervisor | None


async def get_readiness(request: Request) -> Readiness:
    """The readiness checks of this process (a FastAPI dependency)."""
    readiness: Readiness = request.app.state.readiness
    return readiness


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness",
    responses={503: {"description": "Database down, or a background loop down"}},
)
async def readyz(readiness: Annotated[Readiness, Depends(get_readiness)]) -> JSONResponse:
    """The database answers and each background loop this process runs is alive; `loops`
    gives each one's state, last successful turn and restarts (absent in an API-only process)."""
    shown: dict[str, Any] = {}
    down: list[str] = []
    if readiness.loops is not None:
        loops = readiness.loops.report()
        shown["loops"] = [loop.as_dict() for loop in loops]
        down = [loop.name for loop in loops if not loop.alive]
    if not await _database_answers(readiness.engine):
        detail = "The database is not answering."
    elif down:
        detail = f"Background loops not running: {', '.join(down)}."
    else:
        return JSONResponse({"status": "ready", **shown})
    # A load balancer or client waits this long before asking again.
    again = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return problem(Unavailable(detail, headers=again), extensions=shown)


async def _database_answers(engine: AsyncEngine) -> bool:
    try:
        async with reading(engine) as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


@router.get("/problems/{slug}", summary="What a problem type means")
async def describe_problem(slug: str) -> dict[str, str]:
    """The documentation behind each problem `type` this API answers with."""
    if slug not in PROBLEM_TYPES:
        raise NotFound(f"There is no problem type '{slug}'.")
    kind = PROBLEM_TYPES[slug]
    return {"type": problem_type(slug), "title": kind.title, "description": kind.means}
