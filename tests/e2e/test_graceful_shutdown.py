"""SIGTERM: a worker finishes what is in flight within its grace period, or hands the leases back
so the next worker delivers at once; it exits 0 either way and no case is made twice."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from httpx import AsyncClient

from app.sandbox import BackOffice, Behaviour
from tests.e2e.conftest import (
    Calls,
    Launcher,
    Ledger,
    Worker,
    eventually,
    mixed_enquiry,
)

pytestmark = pytest.mark.e2e

ENQUIRIES = 6  # eight dispatches: two of them are anti-social behaviour


async def submit(client: AsyncClient) -> None:
    for number in range(ENQUIRIES):
        created = await client.post("/v1/enquiries", json=mixed_enquiry(number))
        assert created.status_code == 201, created.text


async def all_in_flight(ledger: Ledger, calls: Calls, worker: Worker) -> list[dict[str, Any]]:
    """Wait until the worker holds every dispatch and has sent each to the back-office."""

    async def posted() -> list[dict[str, Any]] | None:
        rows = await ledger.dispatches()
        leased = all(r["state"] == "delivering" and r["lease_owner"] == worker.id for r in rows)
        return rows if leased and sum(calls.creates.values()) == len(rows) else None

    return await eventually(posted, within=10, what="every dispatch in flight")


async def stop_and_time(worker: Worker) -> float:
    started = time.monotonic()
    worker.process.send(signal.SIGTERM)
    assert await worker.process.wait_exit(within=15) == 0
    return time.monotonic() - started


async def test_sigterm_lets_in_flight_deliveries_finish(
    client: AsyncClient,
    iap: Launcher,
    ledger: Ledger,
    back_office: BackOffice,
    calls: Calls,
) -> None:
    back_office.behaviour["*"] = Behaviour(latency_ms=700)
    await submit(client)
    async with iap.worker(IAP_DISPATCH__SHUTDOWN_GRACE_SECONDS="10") as worker:
        dispatches = await all_in_flight(ledger, calls, worker)
        assert await stop_and_time(worker) < 10

    rows = await ledger.dispatches()
    assert {r["state"] for r in rows} == {"delivered"}
    assert {r["lease_owner"] for r in rows} == {None}
    attempts = await ledger.attempts()
    assert [(a["number"], a["outcome"], a["worker"]) for a in attempts] == [
        (1, "delivered", worker.id)
    ] * len(dispatches)
    assert set(calls.creates.values()) == {1}
    assert sum(len(c) for c in back_office.cases.values()) == len(dispatches)


async def test_sigterm_past_the_grace_period_hands_leases_back(
    client: AsyncClient,
    iap: Launcher,
    ledger: Ledger,
    back_office: BackOffice,
    calls: Calls,
) -> None:
    back_office.behaviour["*"] = Behaviour(latency_ms=3000)
    grace = 0.3
    await submit(client)
    async with iap.worker(IAP_DISPATCH__SHUTDOWN_GRACE_SECONDS=str(grace)) as worker:
        dispatches = await all_in_flight(ledger, calls, worker)
        assert await stop_and_time(worker) < grace + 2  # not the 3 s the calls take
        [released] = worker.process.events("dispatcher.leases_released")
        assert released["count"] == len(dispatches)

    # Handed back, not left to expire (the lease is the default 60 s): due now, claim undone.
    for row in await ledger.dispatches():
        assert (row["state"], row["lease_owner"], row["lease_until"]) == ("pending", None, None)
        assert (row["attempts"], row["claims"]) == (0, 0)
    assert await ledger.attempts() == []

    back_office.behaviour.clear()
    async with iap.worker() as later:

        async def all_delivered() -> bool:
            return (await ledger.states()) == {"delivered": len(dispatches)}

        await eventually(all_delivered, within=5, what="the next worker to deliver them")

    async def back_office_idle() -> bool:
        return calls.in_flight == 0  # the abandoned calls have been answered too

    await eventually(back_office_idle, within=5, what="the back-office to finish")
    assert sum(len(c) for c in back_office.cases.values()) == len(dispatches)
    for row in await ledger.dispatches():
        # Sent again (the first call's answer never came), and the back-office knew it: the
        # same Idempotency-Key, reference or Message-ID gave the first case back.
        assert calls.creates_for(row) == 2
        assert row["remote_reference"] == calls.case_for(row)
    attempts = await ledger.attempts()
    assert {(a["number"], a["outcome"], a["worker"]) for a in attempts} == {
        (1, "delivered", later.id)
    }
