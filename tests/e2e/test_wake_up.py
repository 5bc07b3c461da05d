"""New work is delivered at once, not at the next poll: in the same process through the wake-up
call, across processes through LISTEN/NOTIFY on PostgreSQL (SQLite falls back to polling)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ON_POSTGRES
from tests.e2e.conftest import Calls, Gateway, Launcher, eventually, mixed_enquiry

pytestmark = pytest.mark.e2e

POLL_SECONDS = 10.0
AT_ONCE = 2.5  # a quarter of the poll interval: room for a busy machine (typically < 0.1 s)
SLOW_POLL = {"IAP_DISPATCH__POLL_SECONDS": str(POLL_SECONDS)}


async def seconds_to_dispatch(gateway: Gateway, number: int, *, within: float) -> float:
    """Submit one enquiry and time how long until every destination has it."""
    started = time.monotonic()
    created = await gateway.http.post("/v1/enquiries", json=mixed_enquiry(number))
    assert created.status_code == 201, created.text
    reference = created.json()["reference"]

    async def dispatched() -> bool:
        enquiry = (await gateway.http.get(f"/v1/enquiries/{reference}")).json()
        return bool(enquiry["status"] == "dispatched")

    await eventually(dispatched, within=within, what=f"enquiry {reference} dispatched")
    return time.monotonic() - started


async def test_serve_delivers_new_work_at_once(iap: Launcher, calls: Calls) -> None:
    async with iap.serve(**SLOW_POLL) as gateway:
        # One after another, so each arrives while the dispatcher sleeps in its 10 s poll.
        for number in range(3):
            assert await seconds_to_dispatch(gateway, number, within=POLL_SECONDS) < AT_ONCE
    assert sum(calls.creates.values()) == 4  # the first is anti-social behaviour


async def test_a_separate_worker_hears_of_new_work(iap: Launcher, calls: Calls) -> None:
    # SQLite has no signal between processes, so there the worker's next poll must find it.
    poll = POLL_SECONDS if ON_POSTGRES else 2.0
    worker_env = {"IAP_DISPATCH__POLL_SECONDS": str(poll)}
    async with iap.serve("--no-worker") as gateway, iap.worker(**worker_env):
        if ON_POSTGRES:  # NOTIFY in intake's transaction wakes the worker's LISTEN
            for number in range(3):
                assert await seconds_to_dispatch(gateway, number, within=poll) < AT_ONCE
        else:
            assert await seconds_to_dispatch(gateway, 0, within=poll + 1) < poll + 0.5
