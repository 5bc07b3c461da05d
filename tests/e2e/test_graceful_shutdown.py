"""SIGTERM: a worker finishes what is in flight within its grace period, or records the calls it
cut off and hands the leases back, so the next worker looks each case up before it sends it
again; it exits 0 either way and no case is made twice, even where the back-office would not
notice a repeat."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from httpx import AsyncClient

from app.sandbox import BackOffice, Behaviour
from tests.e2e.conftest import (
    ADAPTER_TYPE,
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
    client: AsyncClient, iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
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


async def test_sigterm_past_the_grace_period_records_the_cut_off_call_and_makes_one_case(
    client: AsyncClient, iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
) -> None:
    # Councils that follow the GeoReport v2 spec and no more: a second create is a second case.
    back_office.behaviour["*"] = Behaviour(latency_ms=3000, plain=True)
    grace, settle = 0.3, 5.0  # the back-office has the cases 3 s after the calls arrive
    await submit(client)
    env = {
        "IAP_DISPATCH__SHUTDOWN_GRACE_SECONDS": str(grace),
        "IAP_DISPATCH__SETTLE_SECONDS": str(settle),
    }
    async with iap.worker(**env) as worker:
        dispatches = await all_in_flight(ledger, calls, worker)
        assert await stop_and_time(worker) < grace + 2  # not the 3 s the calls take
        assert len(worker.process.events("dispatch.interrupted")) == len(dispatches)

    # Handed back, not left to expire (the lease is the default 60 s), and the call that had
    # started is on record: it may have reached the back-office.
    for row in await ledger.dispatches():
        assert (row["state"], row["lease_owner"], row["lease_until"]) == ("pending", None, None)
        assert (row["attempts"], row["claims"]) == (1, 1)
    assert {(a["number"], a["outcome"], a["worker"]) for a in await ledger.attempts()} == {
        (1, "interrupted", worker.id)
    }

    back_office.behaviour["*"] = Behaviour(plain=True)
    async with iap.worker() as later:

        async def all_delivered() -> bool:
            return (await ledger.states()) == {"delivered": len(dispatches)}

        await eventually(all_delivered, within=30, what="the next worker to deliver them")

    async def back_office_idle() -> bool:
        return calls.in_flight == 0  # the abandoned calls have been answered too

    await eventually(back_office_idle, within=10, what="the back-office to finish")
    # One case per dispatch: none made twice.
    assert sum(len(c) for c in back_office.cases.values()) == len(dispatches)
    assert {o: back_office.duplicates(o) for o in back_office.cases} == {
        o: {} for o in back_office.cases
    }
    for row in await ledger.dispatches():
        assert row["remote_reference"] == calls.case_for(row)
        if ADAPTER_TYPE[row["organisation_id"]] == "open311":
            # The spec's list answer showed the case (our reference is in its description),
            # so it was not posted again.
            assert calls.creates_for(row) == 1
        else:
            # Sent again under the same Idempotency-Key, identifier or Message-ID, which the
            # back-office's protocol promises to recognise.
            assert calls.creates_for(row) == 2
    attempts = await ledger.attempts()
    assert {(a["number"], a["outcome"], a["worker"]) for a in attempts} == {
        (1, "interrupted", worker.id),
        (2, "delivered", later.id),
    }
