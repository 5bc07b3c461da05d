"""Status moves pushed back to a gateway on loopback, signed, retried, never in the way."""

from __future__ import annotations

from datetime import datetime

from tests.conftest import free_port
from tests.sandbox.conftest import CHERWELL_PUSH_KEY, client_for, eventually
from tests.sandbox.test_county import a_case, access_token, bearer
from tests.sandbox.test_open311 import BASE, report

COUNTY = "oxfordshire-county"


async def open_county_case(http) -> str:
    token = await access_token(http)
    made = await http.post(f"/{COUNTY}/api/cases", json=a_case(), headers=bearer(token))
    return str(made.json()["id"])


async def test_the_county_pushes_each_update_signed_per_standard_webhooks(make_sandbox, gateway):
    app = make_sandbox(gateway_url=gateway.url)
    async with client_for(app) as http:
        case_id = await open_county_case(http)
        for status in ("assigned", "completed"):
            move = {"status": status, "description": f"Now {status}"}
            await http.post(f"/_sandbox/{COUNTY}/cases/{case_id}/status", json=move)
        await eventually(lambda: len(gateway.webhooks) == 2, what="two signed webhooks")
        # The gateway has both; the sandbox records each once it reads the answer.
        await eventually(
            lambda: all(p["outcome"] == "delivered" for p in app.state.office.pushes),
            what="both pushes recorded as delivered",
        )
    first, second = gateway.webhooks
    assert gateway.refused == 0  # every signature verified
    assert first["organisation"] == COUNTY
    assert first["remote_reference"] == case_id
    assert first["reference"] == "K7Q-M4X-PB6"
    assert (first["status"], second["status"]) == ("assigned", "completed")  # in order
    assert first["description"] == "Now assigned"
    assert first["update_id"] == f"{case_id}-1"
    assert datetime.fromisoformat(first["updated_at"]).utcoffset().total_seconds() == 0
    assert first["headers"]["webhook-id"] != second["headers"]["webhook-id"]
    assert [p["outcome"] for p in app.state.office.pushes] == ["delivered", "delivered"]


async def test_a_gateway_not_answering_is_tried_again(make_sandbox, gateway):
    gateway.fail_first = 2
    app = make_sandbox(gateway_url=gateway.url)
    async with client_for(app) as http:
        case_id = await open_county_case(http)
        await http.post(f"/_sandbox/{COUNTY}/cases/{case_id}/status", json={"status": "assigned"})
        await eventually(lambda: gateway.webhooks, what="the webhook after two 503s")
        # The gateway has it; the sandbox records so once it reads the answer.
        await eventually(
            lambda: [p for p in app.state.office.pushes if p["outcome"] == "delivered"],
            what="the push recorded as delivered",
        )
    [push] = app.state.office.pushes
    assert (push["outcome"], push["attempts"]) == ("delivered", 3)
    assert len(gateway.webhooks) == 1


async def test_a_district_pushes_mysociety_style_updates(make_sandbox, gateway):
    app = make_sandbox(gateway_url=gateway.url)
    async with client_for(app) as http:
        [made] = (await http.post(f"{BASE}/requests.json", data=report())).json()
        request_id = made["service_request_id"]
        move = {"status": "action_scheduled", "description": "Collection on Friday"}
        await http.post(f"/_sandbox/cherwell/cases/{request_id}/status", json=move)
        [form] = await eventually(lambda: gateway.forms, what="the Open311 update")
    assert form["organisation"] == "cherwell"
    assert form["api_key"] == CHERWELL_PUSH_KEY
    assert form["jurisdiction_id"] == "cherwell"
    assert form["service_request_id"] == request_id
    assert (form["status"], form["description"]) == ("action_scheduled", "Collection on Friday")
    assert form["external_status_code"] == "ACTION-SCHEDULED"
    assert form["update_id"] == f"{request_id}-1"
    assert datetime.fromisoformat(form["updated_datetime"])


async def test_organisations_without_inbound_credentials_do_not_push(make_sandbox, gateway):
    app = make_sandbox(gateway_url=gateway.url)
    async with client_for(app) as http:
        city = report(api_key="city-key", service_code="missed-bin")
        [made] = (await http.post("/oxford-city/open311/v2/requests.json", data=city)).json()
        moved = await http.post(
            f"/_sandbox/oxford-city/cases/{made['service_request_id']}/status",
            json={"status": "fixed"},
        )
        assert moved.status_code == 200
    assert app.state.office.pushes == []
    # Still there for polling.
    assert app.state.office.cases["oxford-city"][made["service_request_id"]]["status"] == "fixed"


async def test_a_gateway_that_is_down_never_holds_up_the_case_api(make_sandbox):
    app = make_sandbox(gateway_url=f"http://127.0.0.1:{free_port()}")
    async with client_for(app) as http:
        case_id = await open_county_case(http)
        moved = await http.post(
            f"/_sandbox/{COUNTY}/cases/{case_id}/status", json={"status": "assigned"}
        )
        assert moved.status_code == 200
        [push] = app.state.office.pushes
        assert push["outcome"] == "pending"  # answered before the push was even tried
        await eventually(lambda: push["outcome"] == "gave_up", what="the push to give up")
    assert push["attempts"] == 4  # the first, then one per delay
