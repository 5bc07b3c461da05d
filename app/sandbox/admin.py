"""The sandbox's own controls, under /_sandbox (never part of any back-office's protocol).

- PUT /_sandbox/behaviour?organisation=<id or *>: how it misbehaves (see faults.py).
- GET /_sandbox/stats: create calls per organisation and per dedupe key, cases, duplicates,
  updates, pushes, mail, and requests in flight (this one included).
- POST /_sandbox/reset: forget everything.
- POST /_sandbox/tokens/expire[?organisation=]: every OAuth2 access token expires now.
- GET /_sandbox/{org}/cases[/{case_id}]: the unified record of cases (see office.py).
- POST /_sandbox/{org}/cases/{case_id}/status {"status", "description"}: the back-office moves
  the case now (one update, pushed where the organisation pushes).
- GET /_sandbox/pushes: every push to the gateway and its outcome.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, ConfigDict, Field

from app.sandbox.core import SandboxDep
from app.sandbox.office import Behaviour

router = APIRouter(prefix="/_sandbox")


class StatusMove(BaseModel):
    """A status the back-office gives a case, in its own words."""

    model_config = ConfigDict(extra="forbid")

    status: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    description: str = Field(default="", max_length=4000)


@router.put("/behaviour")
async def set_behaviour(
    behaviour: Behaviour, sandbox: SandboxDep, organisation: str = "*"
) -> Behaviour:
    """Make one organisation (or all: "*") slow, flaky, down or silent."""
    sandbox.office.behaviour[organisation] = behaviour
    return behaviour


@router.get("/stats")
async def stats(sandbox: SandboxDep) -> dict[str, Any]:
    """Counts at a glance."""
    return {**sandbox.office.stats(), "in_flight": sandbox.in_flight}


@router.post("/reset", status_code=204)
async def reset(sandbox: SandboxDep) -> None:
    """Forget every case, count, behaviour, token, message and push."""
    await sandbox.reset()


@router.post("/tokens/expire")
async def expire_tokens(sandbox: SandboxDep, organisation: str | None = None) -> dict[str, int]:
    """End access tokens now, so the next API call with one gets 401."""
    tokens = sandbox.office.access_tokens
    ended = [t for t, (org, _) in tokens.items() if organisation in (None, org)]
    for token in ended:
        del tokens[token]
    return {"expired": len(ended)}


@router.get("/pushes")
async def pushes(sandbox: SandboxDep) -> dict[str, Any]:
    """Every push to the gateway, oldest first."""
    return {"pushes": sandbox.office.pushes}


@router.get("/{organisation}/cases")
async def cases(organisation: str, sandbox: SandboxDep) -> dict[str, Any]:
    """The cases this organisation holds."""
    held = sandbox.office.cases.get(organisation, {})
    return {"cases": jsonable_encoder(list(held.values()))}


@router.get("/{organisation}/cases/{case_id}")
async def one_case(organisation: str, case_id: str, sandbox: SandboxDep) -> Any:
    """One case as the sandbox recorded it."""
    return jsonable_encoder(_case(sandbox.office.case(organisation, case_id), case_id))


@router.post("/{organisation}/cases/{case_id}/status")
async def move_case(organisation: str, case_id: str, move: StatusMove, sandbox: SandboxDep) -> Any:
    """Move the case to a new status now; the update made."""
    case = _case(sandbox.office.case(organisation, case_id), case_id)
    return jsonable_encoder(sandbox.move(case, move.status, move.description))


def _case(case: dict[str, Any] | None, case_id: str) -> dict[str, Any]:
    if case is None:
        raise HTTPException(404, f"no case {case_id}")
    return case
