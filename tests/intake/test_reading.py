"""Reading enquiries back, listing them, and the catalogue."""

import base64
import json
import uuid

import pytest

from app.clients.service import Scope
from app.core import reference
from app.sandbox import Behaviour
from tests.conftest import bearer, enquiry_body, make_key
from tests.delivery.test_dispatcher import deliver_all


def cursor_of(*parts):
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode()


async def submit(client, **change):
    response = await client.post("/v1/enquiries", json=enquiry_body(**change))
    assert response.status_code == 201, response.text
    return response.json()["reference"]


async def test_reference_can_be_typed_loosely(client):
    ref = await submit(client)
    loose = ref.replace("-", " ").lower()
    response = await client.get(f"/v1/enquiries/{loose}")
    assert response.status_code == 200
    assert response.json()["reference"] == ref


async def test_mistyped_reference_is_caught_by_its_check_character(client):
    ref = (await submit(client)).replace("-", "")
    wrong = ref[:3] + ("A" if ref[3] != "A" else "B") + ref[4:]
    response = await client.get(f"/v1/enquiries/{wrong}")
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/invalid-reference"
    assert "mistake" in response.json()["detail"]


async def test_unknown_but_valid_reference_is_404(client):
    response = await client.get(f"/v1/enquiries/{reference.display(reference.new_reference())}")
    assert response.status_code == 404
    assert response.json()["type"] == "/problems/not-found"


@pytest.mark.parametrize("text", ["", "ABC", "K7Q-M4X-PB6-XX", "00000000O", "<script>"])
def test_malformed_references_are_rejected(text):
    with pytest.raises(Exception, match="reference"):
        reference.parse(text)


def test_every_single_character_mistake_is_caught():
    ref = reference.new_reference()
    for position in range(len(ref)):
        for replacement in reference.ALPHABET:
            if replacement != ref[position]:
                typo = ref[:position] + replacement + ref[position + 1 :]
                with pytest.raises(Exception, match="mistake"):
                    reference.parse(typo)


async def test_list_filters_and_pages_without_gaps_or_repeats(client):
    mine = [await submit(client) for _ in range(5)]
    crime = await submit(
        client,
        service_code="non-emergency-crime",
        attributes={},
        description="Shed broken into",
        channel="phone",
    )
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "service_code": "pothole"}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/enquiries", params=params)).json()
        seen += [item["reference"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(mine))
    by_channel = (await client.get("/v1/enquiries", params={"channel": "phone"})).json()
    assert [i["reference"] for i in by_channel["items"]] == [crime]
    police = (
        await client.get("/v1/enquiries", params={"organisation_id": "thames-valley-police"})
    ).json()
    assert [i["reference"] for i in police["items"]] == [crime]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"limit": 0},
        {"limit": 1000},
        {"channel": "pigeon"},
        {"created_after": "yesterday"},
        # Found by fuzzing, each a 500 before: a time UTC cannot hold (OverflowError binding
        # it), a NUL (PostgreSQL refuses it in text), a cursor that is JSON but not ours.
        {"created_after": "0001-01-01T00:00:00+01:00"},
        {"created_before": "9999-12-31T23:59:59-01:00"},
        {"service_code": "pot\x00hole"},
        {"status": "\x00"},
        {"organisation_id": "\x00"},
        {"cursor": cursor_of("2024-01-01T00:00:00+00:00", 5)},
        {"cursor": cursor_of("0001-01-01T00:00:00+01:00", str(uuid.uuid4()))},
    ],
)
async def test_bad_list_parameters_are_problems(client, params):
    response = await client.get("/v1/enquiries", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["parameter"]


async def test_created_after_without_zone_is_taken_as_utc(client):
    await submit(client)
    page = (
        await client.get("/v1/enquiries", params={"created_after": "2000-01-01T00:00:00"})
    ).json()
    assert len(page["items"]) == 1


async def test_services_and_organisations_are_listed(client):
    services = (await client.get("/v1/services")).json()
    pothole = next(s for s in services if s["code"] == "pothole")
    assert pothole["lgsl"] == 557
    assert pothole["tiers"] == ["county"]
    assert pothole["attributes"][0]["required"] is True
    single = await client.get("/v1/services/pothole")
    assert single.json() == pothole
    missing = await client.get("/v1/services/unicorns")
    assert missing.status_code == 404
    organisations = (await client.get("/v1/organisations")).json()
    assert {o["id"] for o in organisations} >= {"cherwell", "contact-centre", "nhs-bob-icb"}
    assert all("base_url" not in str(o) for o in organisations)
    assert "email" in next(o for o in organisations if o["id"] == "cherwell")["shares"]


async def test_unknown_routes_and_methods_are_problems(client):
    missing = await client.get("/v1/nothing-here")
    assert (missing.status_code, missing.json()["type"]) == (404, "/problems/not-found")
    wrong = await client.delete("/v1/services")
    assert (wrong.status_code, wrong.json()["type"]) == (405, "/problems/method-not-allowed")
    described = await client.get("/problems/out-of-area")
    assert described.json()["title"] == "No organisation here covers that place"


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_each_delivery_shows_its_attempts_with_errors_for_staff_only(
    client, app, anonymous, engine, back_office
):
    kiosk = bearer(await make_key(engine, Scope.enquiries_submit, Scope.enquiries_read))
    created = await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=kiosk)
    assert created.json()["destinations"][0]["attempt_log"] == []
    ref = created.json()["reference"]
    back_office.behaviour["oxfordshire-county"] = Behaviour(fail_rate=1.0, fail_status=503)
    await app.state.runtime.dispatcher.run_until_idle()
    back_office.behaviour.clear()
    await deliver_all(app)

    [county] = (await client.get(f"/v1/enquiries/{ref}")).json()["destinations"]
    first, second = county["attempt_log"]
    assert (first["number"], first["outcome"], second["number"], second["outcome"]) == (
        1,
        "retry",
        2,
        "delivered",
    )
    assert "HTTP 503" in first["error"]
    assert second["error"] is None
    for attempt in (first, second):
        assert attempt["started_at"] <= attempt["finished_at"]
        assert attempt["duration_ms"] >= 0
    assert first["finished_at"] <= second["started_at"]

    [theirs] = (await anonymous.get(f"/v1/enquiries/{ref}", headers=kiosk)).json()["destinations"]
    assert [a["outcome"] for a in theirs["attempt_log"]] == ["retry", "delivered"]
    assert "503" not in str(theirs)
    assert theirs["attempt_log"][0]["error"].startswith("delivery failed for now")


async def test_a_list_item_gives_the_postcode_never_the_street(client):
    ref = await submit(
        client, location={"postcode": "ox4 1aa", "address": "3 Example Road", "uprn": "987654321"}
    )
    [item] = (await client.get("/v1/enquiries")).json()["items"]
    assert item["reference"] == ref
    assert item["postcode"] == "OX4 1AA"
    assert item["closed_at"] is None
    assert "Example Road" not in str(item)
    assert "987654321" not in str(item)
