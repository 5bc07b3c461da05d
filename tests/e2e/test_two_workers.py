"""Two workers sharing one database never deliver the same dispatch twice, and share the work."""

from __future__ import annotations

from collections import Counter

import pytest
from httpx import AsyncClient

from app.sandbox import BackOffice, Behaviour
from tests.e2e.conftest import Calls, Launcher, Ledger, create_key, eventually, mixed_enquiry

pytestmark = pytest.mark.e2e

ENQUIRIES = 300
# Small claims and a back-office that takes 20 ms keep either worker from finishing the queue
# alone before the other has started, so the two really race for the same rows.
CONTENDED = {"IAP_DISPATCH__BATCH_SIZE": "8", "IAP_DISPATCH__CONCURRENCY": "8"}


async def test_two_workers_never_deliver_a_dispatch_twice(
    client: AsyncClient, iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
) -> None:
    for number in range(ENQUIRIES):
        created = await client.post("/v1/enquiries", json=mixed_enquiry(number))
        assert created.status_code == 201, created.text
    dispatches = await ledger.dispatches()
    assert len(dispatches) == ENQUIRIES + ENQUIRIES // 3
    back_office.behaviour["*"] = Behaviour(latency_ms=20)

    async with iap.workers(2, **CONTENDED) as (one, two):

        async def all_delivered() -> bool:
            return (await ledger.states()) == {"delivered": len(dispatches)}

        await eventually(all_delivered, within=30, what="every dispatch delivered", every=0.1)

    expected = Counter((d["organisation_id"], create_key(d)) for d in dispatches)
    assert calls.creates == expected  # exactly one create per dispatch, no stray keys
    assert sum(len(cases) for cases in back_office.cases.values()) == len(dispatches)

    attempts = await ledger.attempts()
    assert len(attempts) == len(dispatches)
    assert {a["outcome"] for a in attempts} == {"delivered"}
    by_worker = Counter(a["worker"] for a in attempts)
    assert set(by_worker) == {one.id, two.id}, by_worker
    assert min(by_worker.values()) >= len(dispatches) // 10, by_worker

    statuses: Counter[str] = Counter()
    page = "/v1/enquiries?limit=200"
    while page:
        listing = (await client.get(page)).json()
        statuses.update(item["status"] for item in listing["items"])
        page = listing["next_cursor"] and f"/v1/enquiries?limit=200&cursor={listing['next_cursor']}"
    assert statuses == {"dispatched": ENQUIRIES}
