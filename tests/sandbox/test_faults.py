"""Misbehaviour, the same for every protocol: down, flaky, slow, or accepting then silent."""

from __future__ import annotations

import httpx
import pytest

from app.sandbox import Behaviour
from tests.conftest import ThreadedServer
from tests.sandbox.conftest import eventually
from tests.sandbox.test_fhir import HEADERS, service_request
from tests.sandbox.test_open311 import BASE, report


async def test_a_timeout_after_the_back_office_accepted_leaves_the_case_there(make_sandbox):
    app = make_sandbox()
    office = app.state.office
    office.behaviour["cherwell"] = Behaviour(timeout=True, latency_ms=1500)
    server = ThreadedServer(app).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post(f"{BASE}/requests.json", data=report())
            [case] = office.cases["cherwell"].values()  # made before the silence
            office.behaviour.clear()
            again = await http.post(f"{BASE}/requests.json", data=report())
        assert again.status_code == 400
        assert again.json()[0]["description"].endswith(f"service_request_id {case['id']}")
    finally:
        server.stop()


async def test_down_answers_in_each_protocols_own_shape(http, office):
    office.behaviour["*"] = Behaviour(down=True, retry_after_seconds=7)
    open311 = await http.post(f"{BASE}/requests.json", data=report())
    assert (open311.status_code, open311.headers["retry-after"]) == (503, "7")
    assert open311.json()[0]["code"] == 503
    fhir = await http.post(
        "/nhs-bob-icb/fhir/ServiceRequest", json=service_request(), headers=HEADERS
    )
    assert fhir.status_code == 503
    assert fhir.json()["resourceType"] == "OperationOutcome"
    county = await http.post(
        "/oxfordshire-county/api/cases", json={}, headers={"authorization": "Bearer x"}
    )
    assert (county.status_code, county.json()["error"]) == (503, "unavailable")
    assert office.cases == {}
    # Create calls are counted all the same.
    assert office.posts == {"cherwell": 1, "nhs-bob-icb": 1, "oxfordshire-county": 1}


async def test_the_county_token_service_stands_apart_from_its_case_api(http, office):
    office.behaviour["oxfordshire-county"] = Behaviour(down=True)
    token = await http.post(
        "/oxfordshire-county/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
    )
    assert (token.status_code, token.json()["error"]) == (401, "invalid_client")


async def test_down_for_a_while_comes_back_by_itself(http, office):
    put = await http.put(
        "/_sandbox/behaviour",
        params={"organisation": "cherwell"},
        json={"down_for_seconds": 0.3, "fail_status": 502},
    )
    assert put.status_code == 200
    assert (await http.get(f"{BASE}/services.json")).status_code == 502
    assert (await http.get("/oxford-city/open311/v2/services.json")).status_code == 200

    async def back():
        return (await http.get(f"{BASE}/services.json")).status_code == 200

    await eventually(back, within=3, what="cherwell to come back")


async def test_a_fail_rate_of_one_fails_every_call_with_the_chosen_status(http, office):
    office.behaviour["cherwell"] = Behaviour(fail_rate=1.0, fail_status=429, retry_after_seconds=2)
    answer = await http.post(f"{BASE}/requests.json", data=report())
    assert (answer.status_code, answer.headers["retry-after"]) == (429, "2")
    assert "cherwell" not in office.cases
