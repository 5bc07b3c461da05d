"""Polling back-offices for status: Open311 and FHIR simulators on loopback, each update once."""

import httpx

from tests.conftest import enquiry_body

MISSED_BIN = enquiry_body(
    service_code="missed-bin", location={"postcode": "OX16 5QA"}, attributes={"bin_type": "food"}
)
HEALTH = enquiry_body(
    service_code="health-enquiry", description="Which GP surgery takes new patients?", attributes={}
)


async def delivered(client, app, body):
    response = await client.post("/v1/enquiries", json=body)
    assert response.status_code == 201, response.text
    reference = response.json()["reference"]
    await app.state.runtime.dispatcher.run_until_idle()
    [destination] = (await client.get(f"/v1/enquiries/{reference}")).json()["destinations"]
    assert destination["state"] == "delivered"
    return reference, destination["remote_reference"]


async def move(sandbox, organisation, case_id, status, description="Crew sent"):
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        moved = await http.post(
            f"/_sandbox/{organisation}/cases/{case_id}/status",
            json={"status": status, "description": description},
        )
    assert moved.status_code < 300, moved.text


async def status_events(client, reference):
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    return enquiry, [e for e in enquiry["timeline"] if e["type"] == "status.updated"]


async def test_an_open311_update_is_polled_into_the_timeline_once(client, app, sandbox):
    reference, case = await delivered(client, app, MISSED_BIN)
    poller = app.state.runtime.poller
    assert await poller.poll("cherwell") == 0  # nothing has happened yet
    await move(sandbox, "cherwell", case, "in_progress")
    assert await poller.poll("cherwell") == 1
    assert await poller.poll("cherwell") == 0  # the same update seen again is not new
    await move(sandbox, "cherwell", case, "fixed", "Bin emptied")
    assert await poller.poll("cherwell") == 1
    enquiry, events = await status_events(client, reference)
    assert [e["status"] for e in events] == ["in_progress", "resolved"]
    assert "Bin emptied" in events[1]["detail"]
    assert enquiry["status"] == "resolved"
    [destination] = enquiry["destinations"]
    assert destination["remote_status"] == "resolved"


async def test_a_finished_case_is_no_longer_asked_about(client, app, sandbox):
    _, case = await delivered(client, app, MISSED_BIN)
    poller = app.state.runtime.poller
    await move(sandbox, "cherwell", case, "closed")
    assert await poller.poll("cherwell") == 1
    assert await poller._tracked("cherwell") == []


async def test_a_fhir_service_request_is_polled_by_version(client, app, sandbox):
    reference, resource_id = await delivered(client, app, HEALTH)
    poller = app.state.runtime.poller
    await move(sandbox, "nhs-bob-icb", resource_id, "completed", "Answered by the practice")
    assert await poller.poll("nhs-bob-icb") == 1
    assert await poller.poll("nhs-bob-icb") == 0
    enquiry, [event] = await status_events(client, reference)
    assert event["status"] == "resolved"
    assert enquiry["status"] == "resolved"


async def test_a_back_office_down_shows_in_the_organisation_and_is_polled_later(
    client, app, sandbox, back_office
):
    _, case = await delivered(client, app, MISSED_BIN)
    back_office.behaviour["cherwell"] = back_office.behaviour_for("x").model_copy(
        update={"down": True}
    )
    poller = app.state.runtime.poller
    await poller._ensure_rows()
    await move(sandbox, "cherwell", case, "in_progress")
    assert await poller.poll("cherwell") == 0
    cherwell = next(
        o for o in (await client.get("/v1/organisations")).json() if o["id"] == "cherwell"
    )
    assert "503" in cherwell["status_updates"]["last_poll_error"]
    back_office.behaviour.clear()
    assert await poller.poll("cherwell") == 1
    cherwell = next(
        o for o in (await client.get("/v1/organisations")).json() if o["id"] == "cherwell"
    )
    assert cherwell["status_updates"]["last_poll_error"] is None
    assert cherwell["status_updates"]["poll_seconds"] == 30


async def test_only_one_worker_polls_an_organisation_at_a_time(app):
    poller = app.state.runtime.poller
    await poller._ensure_rows()
    first = await poller._take_due()
    assert "cherwell" in first
    other = type(poller)(
        engine=poller.engine,
        catalogue=poller.catalogue,
        adapters=poller.adapters,
        worker_id="another-worker",
    )
    assert await other._take_due() == []


async def test_not_our_responsibility_polled_goes_to_triage(client, app, sandbox):
    reference, case = await delivered(client, app, MISSED_BIN)
    await move(sandbox, "cherwell", case, "not_councils_responsibility", "Private land")
    assert await app.state.runtime.poller.poll("cherwell") == 1
    await app.state.runtime.dispatcher.run_until_idle()
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    states = {d["organisation_id"]: d["state"] for d in enquiry["destinations"]}
    assert states == {"cherwell": "delivered", "contact-centre": "delivered"}
    assert enquiry["status"] == "dispatched"
    assert any("Private land" in e["detail"] for e in enquiry["timeline"] if e["detail"])
