"""The sandbox's own controls: counts at a glance, the record of cases, a clean slate."""

from __future__ import annotations

from tests.sandbox.test_open311 import BASE, report


async def test_stats_count_create_calls_per_key_and_show_duplicates(http):
    await http.post(f"{BASE}/requests.json", data=report("REF-1"))
    await http.post(f"{BASE}/requests.json", data=report("REF-1"))
    await http.post(
        "/oxfordshire-county/enquiries", json={"reference": "R"}, headers={"Idempotency-Key": "k"}
    )
    await http.post(
        "/oxfordshire-county/enquiries", json={"reference": "R"}
    )  # no key: a second case
    stats = (await http.get("/_sandbox/stats")).json()
    assert stats["posts"] == {"cherwell": 2, "oxfordshire-county": 2}
    assert stats["posts_by_key"]["cherwell"] == {"REF-1": 2}
    assert stats["cases"] == {"cherwell": 1, "oxfordshire-county": 2}
    assert list(stats["duplicates"]) == ["oxfordshire-county"]


async def test_the_record_of_cases_can_be_read_and_reset(http, office):
    [made] = (await http.post(f"{BASE}/requests.json", data=report())).json()
    listed = (await http.get("/_sandbox/cherwell/cases")).json()["cases"]
    assert [c["id"] for c in listed] == [made["service_request_id"]]
    one = (await http.get(f"/_sandbox/cherwell/cases/{made['service_request_id']}")).json()
    assert (one["protocol"], one["reference"], one["status"]) == ("open311", "K7Q-M4X-PB6", "open")
    assert (await http.get("/_sandbox/cherwell/cases/nope")).status_code == 404
    await http.put("/_sandbox/behaviour", json={"latency_ms": 5})
    assert (await http.post("/_sandbox/reset")).status_code == 204
    assert (office.cases, office.posts, office.behaviour) == ({}, {}, {})
    assert (await http.get("/_sandbox/pushes")).json() == {"pushes": []}


async def test_the_generic_enquiries_endpoint_still_makes_one_case_per_key(http, office):
    headers = {"Idempotency-Key": "dispatch-1"}
    body = {"reference": "K7Q-M4X-PB6", "description": "Pothole", "citizen": {"name": "Ann"}}
    first = await http.post("/west-oxfordshire/enquiries", json=body, headers=headers)
    again = await http.post("/west-oxfordshire/enquiries", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    case = office.cases["west-oxfordshire"][first.json()["id"]]
    assert (case["reference"], case["citizen"]) == ("K7Q-M4X-PB6", {"name": "Ann"})
    listed = (await http.get("/west-oxfordshire/enquiries")).json()["cases"]
    assert list(listed) == [first.json()["id"]]
