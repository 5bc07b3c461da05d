"""A worker killed mid-delivery loses nothing, and the back-office gets one case per dispatch."""

from __future__ import annotations

import signal
import uuid
from collections import defaultdict

import pytest
from httpx import AsyncClient

from app.sandbox import BackOffice, Behaviour
from tests.e2e.conftest import ADAPTER_TYPE, Calls, Launcher, Ledger, eventually, mixed_enquiry

pytestmark = pytest.mark.e2e

# The first worker's lease runs out 3 s after its claim; the settings insist the call timeout
# stays under half of it.
SHORT_LEASE = {"IAP_DISPATCH__LEASE_SECONDS": "3", "IAP_HTTP__TIMEOUT_SECONDS": "1"}


async def test_a_worker_killed_mid_delivery_loses_nothing(
    client: AsyncClient, iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
) -> None:
    # The back-office takes 2 s to answer, so the first worker dies with every call in flight,
    # after the back-office has the request but before the worker hears back. Its councils
    # follow the Open311 spec and no more: a repeat would be a second case.
    back_office.behaviour["*"] = Behaviour(latency_ms=2000, plain=True)
    references = []
    for number in range(6):
        created = await client.post("/v1/enquiries", json=mixed_enquiry(number))
        assert created.status_code == 201, created.text
        references.append(created.json()["reference"])
    dispatches = await ledger.dispatches()
    assert len(dispatches) == 8  # two of the six are anti-social behaviour: two destinations

    async with iap.worker(**SHORT_LEASE) as first:

        async def all_in_flight() -> bool:
            rows = await ledger.dispatches()
            leased = all(r["state"] == "delivering" and r["lease_owner"] == first.id for r in rows)
            return leased and sum(calls.creates.values()) == len(rows)

        await eventually(all_in_flight, within=10, what="every dispatch leased and posted")
        first.process.send(signal.SIGKILL)
        assert await first.process.wait_exit(within=5) == -signal.SIGKILL

    async def every_case_made() -> bool:
        return sum(len(c) for c in back_office.cases.values()) == len(dispatches)

    # The back-office made every case, though the worker never heard back; still leased.
    await eventually(every_case_made, within=5, what="the back-office to make every case")
    assert await ledger.states() == {"delivering": len(dispatches)}

    back_office.behaviour["*"] = Behaviour(plain=True)
    async with iap.worker() as second:  # the default lease: only the dead worker's must run out

        async def all_delivered() -> bool:
            return (await ledger.states()) == {"delivered": len(dispatches)}

        await eventually(all_delivered, within=20, what="every dispatch delivered")

    for reference in references:
        enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
        assert enquiry["status"] == "dispatched"
        assert [d["attempts"] for d in enquiry["destinations"]] == [2] * len(
            enquiry["destinations"]
        )

    history: defaultdict[uuid.UUID, list[tuple[int, str, str]]] = defaultdict(list)
    for attempt in await ledger.attempts():
        history[attempt["dispatch_id"]].append(
            (attempt["number"], attempt["outcome"], attempt["worker"])
        )
    for dispatch in await ledger.dispatches():
        # The dead worker's attempt is on record; the second worker's is the one that counted.
        assert history[dispatch["id"]] == [
            (1, "interrupted", "unknown"),
            (2, "delivered", second.id),
        ]
        # Attempt 2 may repeat attempt 1. Open311 looks the reference up first and finds the
        # case; the others send again with the same key, and the back-office gives it back.
        repeat = 1 if ADAPTER_TYPE[dispatch["organisation_id"]] == "open311" else 2
        assert calls.creates_for(dispatch) == repeat
        assert dispatch["remote_reference"] == calls.case_for(dispatch)
    assert sum(len(c) for c in back_office.cases.values()) == len(dispatches)
