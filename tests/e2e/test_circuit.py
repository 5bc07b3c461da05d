"""While a back-office is down its circuit opens: deliveries wait instead of using up their
attempts, one trial at a time tests it, and once it is back every enquiry is delivered once."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from httpx import AsyncClient

from app.sandbox import BackOffice, Behaviour
from tests.conftest import enquiry_body
from tests.e2e.conftest import Calls, Launcher, Ledger, eventually

pytestmark = pytest.mark.e2e

COUNTY = "oxfordshire-county"
ENQUIRIES = 5
MAX_ATTEMPTS = 8
ENV = {
    "IAP_DISPATCH__CIRCUIT_FAILURES": "2",
    "IAP_DISPATCH__CIRCUIT_COOLDOWN_SECONDS": "1",
    # Without the circuit, every dispatch would use all 8 attempts within 1.5 s and be dead.
    "IAP_DISPATCH__RETRY_SCHEDULE": str([0.2] * (MAX_ATTEMPTS - 1)),
    "IAP_DISPATCH__JITTER": "0",
}
TRIALS = 3  # trials to watch fail while the county is down: about one per cool-down


async def county_circuit(http: AsyncClient) -> dict[str, Any]:
    organisations = (await http.get("/v1/organisations")).json()
    [county] = [o for o in organisations if o["id"] == COUNTY]
    circuit: dict[str, Any] = county["circuit"]
    return circuit


async def test_an_open_circuit_saves_attempts_until_the_back_office_returns(
    iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
) -> None:
    back_office.behaviour[COUNTY] = Behaviour(down=True)
    async with iap.serve(**ENV) as gateway:
        references = []
        for number in range(ENQUIRIES):
            body = enquiry_body(description=f"Pothole outside number {number}")
            created = await gateway.http.post("/v1/enquiries", json=body)
            assert created.status_code == 201, created.text
            references.append(created.json()["reference"])

        async def circuit_open() -> dict[str, Any] | None:
            circuit = await county_circuit(gateway.http)
            return circuit if circuit["state"] == "open" else None

        circuit = await eventually(circuit_open, within=5, what="the county's circuit to open")
        assert circuit["failures"] >= 2
        assert "503" in circuit["last_error"]
        assert circuit["open_until"] is not None

        # Each cool-down lets one trial through; watch a few fail while the county stays down.
        first_wave = back_office.posts[COUNTY]
        assert first_wave <= ENQUIRIES

        async def trials_failed() -> bool:
            return back_office.posts[COUNTY] >= first_wave + TRIALS

        await eventually(trials_failed, within=TRIALS * 2 + 2, what=f"{TRIALS} trials")
        while_down = await ledger.dispatches()
        assert {d["state"] for d in while_down} <= {"pending", "delivering"}  # none dead
        assert max(d["attempts"] for d in while_down) < MAX_ATTEMPTS
        # About one call per cool-down, not one per retry of each of the five enquiries.
        assert back_office.posts[COUNTY] <= first_wave + TRIALS + 1
        assert COUNTY not in back_office.cases

        back_office.behaviour.clear()

        async def all_delivered() -> list[dict[str, Any]] | None:
            enquiries = [(await gateway.http.get(f"/v1/enquiries/{r}")).json() for r in references]
            done = all(e["status"] == "dispatched" for e in enquiries)
            return enquiries if done else None

        enquiries = await eventually(all_delivered, within=10, what="every enquiry dispatched")
        assert (await county_circuit(gateway.http))["state"] == "closed"

    dispatches = await ledger.dispatches()
    assert Counter(d["state"] for d in dispatches) == {"delivered": ENQUIRIES}
    for enquiry in enquiries:
        [destination] = enquiry["destinations"]
        assert destination["attempts"] < MAX_ATTEMPTS
        assert not any(e["type"] == "dispatch.dead" for e in enquiry["timeline"])
    # One case per enquiry, each the one the enquiry names; every call was an attempt.
    assert len(back_office.cases[COUNTY]) == ENQUIRIES
    assert back_office.duplicates(COUNTY) == {}
    by_reference = {e["reference"]: e["destinations"][0] for e in enquiries}
    for dispatch in dispatches:
        case_id = calls.case_for(dispatch)
        assert case_id == by_reference[dispatch["reference"]]["remote_reference"]
    assert len(await ledger.attempts()) == back_office.posts[COUNTY]
