"""The dead-letter desk end to end: the county's token endpoint answers 401 (a rotated secret),
so every county delivery is given up at once; once the fault is fixed, one bulk redrive
delivers each exactly once, through `iap serve` and its worker against the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.models import utcnow
from app.sandbox import BackOffice, Behaviour
from tests.conftest import enquiry_body
from tests.e2e.conftest import Calls, Launcher, Ledger, eventually

pytestmark = pytest.mark.e2e

COUNTY = "oxfordshire-county"
ENQUIRIES = 5


async def test_a_bulk_redrive_after_the_fix_delivers_each_dead_delivery_exactly_once(
    iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
) -> None:
    back_office.behaviour[COUNTY] = Behaviour(down=True, fail_status=401)
    before = utcnow()
    async with iap.serve() as gateway:
        references = []
        for number in range(ENQUIRIES):
            body = enquiry_body(description=f"Pothole number {number} on the Banbury Road")
            created = await gateway.http.post("/v1/enquiries", json=body)
            assert created.status_code == 201, created.text
            references.append(created.json()["reference"])

        async def all_dead() -> list[dict[str, Any]] | None:
            page = (await gateway.http.get("/v1/dispatches", params={"state": "dead"})).json()
            return page["items"] if len(page["items"]) == ENQUIRIES else None

        dead = await eventually(all_dead, within=20, what="every county delivery dead")
        assert {d["reference"] for d in dead} == set(references)
        assert all("401" in d["last_error"] for d in dead)
        assert COUNTY not in back_office.cases  # nothing reached the county
        for reference in references:
            enquiry = (await gateway.http.get(f"/v1/enquiries/{reference}")).json()
            assert enquiry["status"] == "failed"

        refused = calls.creates  # create calls the county refused with 401, making nothing
        back_office.behaviour.clear()  # the fix: the county takes our secret again
        answer = await gateway.http.post(
            "/v1/dispatches/redrive", json={"organisation": COUNTY, "since": before.isoformat()}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["count"] == ENQUIRIES
        assert set(answer.json()["ids"]) == {d["id"] for d in dead}

        async def all_delivered() -> list[dict[str, Any]] | None:
            rows = await ledger.dispatches()
            return rows if all(r["state"] == "delivered" for r in rows) else None

        rows = await eventually(all_delivered, within=30, what="every redriven one delivered")
        statuses = {
            r: (await gateway.http.get(f"/v1/enquiries/{r}")).json()["status"] for r in references
        }
        again = await gateway.http.post(
            "/v1/dispatches/redrive", json={"organisation": COUNTY, "since": before.isoformat()}
        )

    # Exactly once each: one case per enquiry at the county, one create call per dispatch
    # since the fix.
    cases = back_office.cases[COUNTY]
    assert sorted(case["reference"] for case in cases.values()) == sorted(references)
    assert back_office.duplicates(COUNTY) == {}
    since_the_fix = calls.creates - refused
    assert sorted(since_the_fix.values()) == [1] * ENQUIRIES, since_the_fix
    assert {row["remote_reference"] for row in rows} == set(cases)
    assert set(statuses.values()) == {"dispatched"}
    assert again.json() == {"count": 0, "ids": []}
