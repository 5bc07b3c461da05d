"""Misbehaviour, the same for every simulator: slow, flaky, down, or accepting then silent.

Every call to an organisation's simulator (and every message to the SMTP sink) first waits
`latency_ms`, then fails with `fail_status` (and Retry-After when `retry_after_seconds` is set)
if the organisation is down (`down`, or within `down_for_seconds` of being set so) or, by chance,
`fail_rate`. With `timeout` the latency comes after instead: the request is read and the case
made, then the answer is held back longer than the caller waits.

Each simulator answers errors in its protocol's own shape: `SimulatorError` subclasses render it.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse

from app.sandbox.office import BackOffice


class SimulatorError(Exception):
    """An error a simulator answers with, in its protocol's shape."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The answer a client of this protocol expects."""
        return JSONResponse({"error": self.message}, self.status, headers=self.headers)


async def render_simulator_error(request: Request, exc: Exception) -> JSONResponse:
    """Exception handler: each simulator's errors in its own shape."""
    if not isinstance(exc, SimulatorError):
        raise exc
    return exc.response()


@dataclass(frozen=True)
class Fault:
    """A failure the behaviour calls for."""

    status: int
    retry_after: int | None
    down: bool

    @property
    def headers(self) -> dict[str, str]:
        """Retry-After when the behaviour names one."""
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


async def arrive(office: BackOffice, organisation: str) -> Fault | None:
    """Wait the latency (unless `timeout`), then say whether this call fails."""
    behaviour = office.behaviour_for(organisation)
    if behaviour.latency_ms and not behaviour.timeout:
        await asyncio.sleep(behaviour.latency_ms / 1000)
    down = behaviour.is_down()
    if down or random.random() < behaviour.fail_rate:
        return Fault(behaviour.fail_status, behaviour.retry_after_seconds, down=down)
    return None


async def hold(office: BackOffice, organisation: str) -> None:
    """With `timeout`: hold the answer back once the work is done."""
    behaviour = office.behaviour_for(organisation)
    if behaviour.timeout:
        await asyncio.sleep(behaviour.hold_seconds())
