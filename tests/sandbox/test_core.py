"""Cases moving through their protocol's statuses, over time or by hand."""

from __future__ import annotations

from tests.sandbox.conftest import client_for, eventually
from tests.sandbox.test_county import a_case, access_token, bearer
from tests.sandbox.test_fhir import HEADERS, service_request
from tests.sandbox.test_open311 import BASE, report


async def test_with_a_step_each_protocol_walks_through_its_own_words(make_sandbox):
    app = make_sandbox(step_seconds=0.02)
    office = app.state.office
    async with client_for(app) as http:
        await http.post(f"{BASE}/requests.json", data=report())
        token = await access_token(http)
        await http.post("/oxfordshire-county/api/cases", json=a_case(), headers=bearer(token))
        await http.post("/nhs-bob-icb/fhir/ServiceRequest", json=service_request(), headers=HEADERS)

        def words(organisation):
            [case] = office.cases[organisation].values()
            return [u["status"] for u in case["updates"]]

        expected = {
            "cherwell": ["in_progress", "action_scheduled", "fixed"],
            "oxfordshire-county": ["assigned", "in_progress", "completed"],
            "nhs-bob-icb": ["completed"],
        }
        await eventually(
            lambda: all(words(org) == w for org, w in expected.items()), what="every case done"
        )
        [fhir_case] = office.cases["nhs-bob-icb"].values()
        assert fhir_case["updates"][0]["update_id"] == f"{fhir_case['id']}/_history/2"
        [county_case] = office.cases["oxfordshire-county"].values()
        shown = await http.get(
            f"/oxfordshire-county/api/cases/{county_case['id']}", headers=bearer(token)
        )
        assert shown.json()["status"] == "completed"
        assert [u["update_id"] for u in shown.json()["updates"]] == [
            f"{county_case['id']}-{n}" for n in (1, 2, 3)
        ]
    await app.state.sandbox.stop()


async def test_a_case_moved_by_hand_stops_progressing(make_sandbox):
    app = make_sandbox(step_seconds=0.2)
    office = app.state.office
    async with client_for(app) as http:
        [made] = (await http.post(f"{BASE}/requests.json", data=report())).json()
        request_id = made["service_request_id"]
        move = {"status": "not_councils_responsibility", "description": "County matter"}
        moved = await http.post(f"/_sandbox/cherwell/cases/{request_id}/status", json=move)
        assert moved.json()["status"] == "not_councils_responsibility"
        await eventually(
            lambda: not app.state.sandbox.tasks, within=2, what="the progression to give up"
        )
    assert [u["status"] for u in office.cases["cherwell"][request_id]["updates"]] == [
        "not_councils_responsibility"
    ]


async def test_without_a_step_cases_wait_for_a_hand(http, office):
    [made] = (await http.post(f"{BASE}/requests.json", data=report())).json()
    assert office.cases["cherwell"][made["service_request_id"]]["updates"] == []
    unknown = await http.post("/_sandbox/cherwell/cases/999999/status", json={"status": "fixed"})
    assert unknown.status_code == 404
    bad = await http.post(
        f"/_sandbox/cherwell/cases/{made['service_request_id']}/status", json={"status": "no way"}
    )
    assert bad.status_code == 422
