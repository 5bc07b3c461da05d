"""A simulated back-office for every organisation, on loopback, for development and tests.

`POST /{organisation}/enquiries` makes a case (the same Idempotency-Key gives the same case
back); `GET /{organisation}/enquiries` lists them. `PUT /_sandbox/behaviour` makes it slow,
flaky or down, so the gateway's retries and dead letters can be seen working.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field


class Behaviour(BaseModel):
    """How the simulated back-offices misbehave; all organisations, or one."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=600_000)
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    fail_status: int = Field(default=503, ge=400, le=599)
    retry_after_seconds: int | None = Field(default=None, ge=0)
    down: bool = False


@dataclass
class BackOffice:
    """Cases received, by organisation; every POST counted, duplicates included."""

    cases: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    by_key: dict[tuple[str, str], str] = field(default_factory=dict)
    posts: dict[str, int] = field(default_factory=dict)
    posts_by_key: dict[tuple[str, str], int] = field(default_factory=dict)
    behaviour: dict[str, Behaviour] = field(default_factory=dict)
    next_number: int = 1

    def behaviour_for(self, organisation: str) -> Behaviour:
        return self.behaviour.get(organisation) or self.behaviour.get("*") or Behaviour()


def create_sandbox_app() -> FastAPI:
    """The sandbox application (not part of the gateway's API)."""
    office = BackOffice()
    app = FastAPI(title="IAP sandbox back-offices", openapi_url=None, docs_url=None)
    app.state.office = office

    @app.put("/_sandbox/behaviour")
    async def set_behaviour(behaviour: Behaviour, organisation: str = "*") -> Behaviour:
        office.behaviour[organisation] = behaviour
        return behaviour

    @app.get("/_sandbox/stats")
    async def stats() -> dict[str, Any]:
        return {
            "posts": office.posts,
            "cases": {org: len(cases) for org, cases in office.cases.items()},
        }

    @app.post("/{organisation}/enquiries", status_code=201)
    async def receive(
        organisation: str,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        # Read first: a caller that gives up during the delay has still sent its request.
        body = await request.json()
        office.posts[organisation] = office.posts.get(organisation, 0) + 1
        key = idempotency_key or ""
        office.posts_by_key[(organisation, key)] = (
            office.posts_by_key.get((organisation, key), 0) + 1
        )
        behaviour = office.behaviour_for(organisation)
        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        if behaviour.down or random.random() < behaviour.fail_rate:
            headers = {}
            if behaviour.retry_after_seconds is not None:
                headers["Retry-After"] = str(behaviour.retry_after_seconds)
            return JSONResponse({"error": "unavailable"}, behaviour.fail_status, headers=headers)
        if idempotency_key and (organisation, idempotency_key) in office.by_key:
            return JSONResponse({"id": office.by_key[(organisation, idempotency_key)]}, 200)
        case_id = f"{organisation[:3].upper()}-{office.next_number:06d}"
        office.next_number += 1
        office.cases.setdefault(organisation, {})[case_id] = body
        if idempotency_key:
            office.by_key[(organisation, idempotency_key)] = case_id
        return JSONResponse({"id": case_id}, 201)

    @app.get("/{organisation}/enquiries")
    async def cases(organisation: str) -> dict[str, Any]:
        return {"cases": office.cases.get(organisation, {})}

    return app
