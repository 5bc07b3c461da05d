"""The lease outlives every back-office call, so no dispatch is ever sent twice at once."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from app.sandbox import BackOffice, Behaviour
from tests.conftest import enquiry_body
from tests.e2e.conftest import Calls, Launcher, Ledger, eventually

pytestmark = pytest.mark.e2e


async def test_a_slow_back_office_call_times_out_before_the_lease_runs_out(
    client: AsyncClient, iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
) -> None:
    # The settings refuse a lease of 2 x IAP_HTTP__TIMEOUT_SECONDS or less, because a lease that
    # runs out mid-call lets a worker send the same dispatch again while the first call waits.
    back_office.behaviour["*"] = Behaviour(latency_ms=3200)
    missed_bin = enquiry_body(
        service_code="missed-bin",
        location={"postcode": "OX16 5QA"},
        attributes={"bin_type": "food"},
    )
    created = await client.post("/v1/enquiries", json=missed_bin)
    assert created.status_code == 201, created.text
    [dispatch] = await ledger.dispatches()

    env = {
        "IAP_HTTP__TIMEOUT_SECONDS": "1",
        "IAP_DISPATCH__LEASE_SECONDS": "3",
        "IAP_DISPATCH__RETRY_SCHEDULE": "[30]",
        "IAP_DISPATCH__SHUTDOWN_GRACE_SECONDS": "0",
    }
    async with iap.worker(**env) as worker:

        async def first_attempt_recorded() -> list[dict[str, Any]]:
            return await ledger.attempts()

        attempts = await eventually(first_attempt_recorded, within=6, what="attempt 1 recorded")

    # The call gave up after about 1 s and is to be retried in 30 s: one POST, one attempt.
    history = [(a["number"], a["outcome"], a["worker"]) for a in attempts]
    assert history == [(1, "retry", worker.id)], "the lease ran out while the call still waited"
    assert "Timeout" in attempts[0]["error"]
    assert calls.creates_for(dispatch) == 1
