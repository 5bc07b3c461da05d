"""Health checks and the pages that problem `type` URIs point at."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.problems import PROBLEM_TYPES, Unavailable, problem, problem_type
from app.api.state import AppState, get_state
from app.core.db import reading
from app.core.errors import NotFound

router = APIRouter(tags=["meta"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness", responses={503: {"description": "Database down"}})
async def readyz(state: Annotated[AppState, Depends(get_state)]) -> JSONResponse:
    """The database answers."""
    try:
        async with reading(state.engine) as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return problem(Unavailable("The database is not answering."))
    return JSONResponse({"status": "ready"})


@router.get("/problems/{slug}", summary="What a problem type means")
async def describe_problem(slug: str) -> dict[str, str]:
    """The documentation behind each problem `type` this API answers with."""
    if slug not in PROBLEM_TYPES:
        raise NotFound(f"There is no problem type '{slug}'.")
    kind = PROBLEM_TYPES[slug]
    return {"type": problem_type(slug), "title": kind.title, "description": kind.means}
