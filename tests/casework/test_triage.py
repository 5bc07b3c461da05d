"""The triage desk: the queue and its candidates, claims that expire, and the acts that move an
enquiry on (hand on, correct the place, close at the desk), each stored whole or not at all."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from app.casework import triage
from app.catalogue.locate import Place
from app.core.errors import StateConflict
from app.core.models import (
    audit_table,
    dispatch_table,
    enquiry_table,
    event_table,
    utcnow,
)
from app.core.reference import parse
from tests.conftest import bearer, enquiry_body, make_person
from tests.updates.test_inbound import delivered_to_the_city, open311_form

STRADDLING = "OX14 3AB"  # sector OX14 3: Vale of White Horse 231, South Oxfordshire 46
VALE = "vale-of-white-horse"
SOUTH = "south-oxfordshire"
TRIAGE = "contact-centre"


def missed_bin(**location: Any) -> dict[str, Any]:
    return enquiry_body(
        service_code="missed-bin",
        description="Our green bin was not emptied on Tuesday",
        location=location or {"postcode": STRADDLING},
        attributes={"bin_type": "garden"},
    )


async def submit(client, body: dict[str, Any]) -> str:
    created = await client.post("/v1/enquiries", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["reference"])


async def queue(client, **params: Any) -> list[dict[str, Any]]:
    answer = await client.get("/v1/triage", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def desk(app) -> triage.TriageDesk:
    state = app.state.iap
    return triage.TriageDesk(intake=state.intake, claim_seconds=900)


async def caller_of(app, token: str):
    from app.clients.service import authenticate

    found = await authenticate(app.state.iap.engine, token)
    assert found is not None
    return found


async def counts(engine) -> tuple[int, ...]:
    async with engine.connect() as conn:
        return tuple(
            [
                await conn.scalar(select(func.count()).select_from(t))
                for t in (dispatch_table, event_table, audit_table, enquiry_table)
            ]
        )


async def parts(engine, reference: str) -> dict[str, dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(dispatch_table)
            .join(enquiry_table)
            .where(enquiry_table.c.reference == parse(reference))
        )
        return {r["organisation_id"]: dict(r) for r in rows.mappings()}


# --- the queue -------------------------------------------------------------------------------


async def test_a_straddling_sector_waits_with_both_councils_and_their_counts(client, app):
    reference = await submit(client, missed_bin())
    [item] = await queue(client)
    assert item["reference"] == reference
    assert item["service_code"] == "missed-bin"
    assert item["service_name"] == "Missed bin collection"
    assert item["status"] == "routed"
    assert "district of OX14 3AB cannot be decided" in item["reason"]
    assert item["said_not_ours"] is None
    assert item["place"] == {"postcode": "OX14 3AB", "precision": "sector"}
    assert item["claimed_by"] is None
    assert item["claimed_until"] is None
    assert item["waiting_seconds"] >= 0
    assert item["candidates"] == [
        {
            "organisation_id": VALE,
            "organisation_name": "Vale of White Horse District Council",
            "evidence": "231 of 277 postcodes in sector OX14 3",
            "postcodes": 231,
        },
        {
            "organisation_id": SOUTH,
            "organisation_name": "South Oxfordshire District Council",
            "evidence": "46 of 277 postcodes in sector OX14 3",
            "postcodes": 46,
        },
    ]
    assert "citizen" not in item
    assert "description" not in item


async def test_a_council_outside_the_area_is_named_with_no_id(client):
    await submit(client, missed_bin(postcode="GL56 0AA"))  # Cotswold, Stratford, West Oxon
    [item] = await queue(client)
    by_name = {c["organisation_name"]: c for c in item["candidates"]}
    assert by_name["Cotswold District Council"]["organisation_id"] is None
    assert by_name["Cotswold District Council"]["postcodes"] == 253
    assert by_name["Stratford-on-Avon District Council"]["organisation_id"] is None
    assert by_name["West Oxfordshire District Council"]["organisation_id"] == "west-oxfordshire"


async def test_the_place_keeps_its_candidates_as_stored_data():
    place = Place(postcode="OX14 3AB", precision="sector", candidates=(("E07000180", 231),))
    stored = place.as_dict()
    assert stored["candidates"] == [["E07000180", 231]]
    assert Place.from_dict(stored) == place
    assert hash(place) == hash(Place.from_dict(stored))


async def test_no_location_offers_every_organisation_of_the_tier(client):
    await submit(client, enquiry_body(service_code="council-tax", location=None, attributes={}))
    [item] = await queue(client)
    assert "no location was given" in item["reason"]
    ids = [c["organisation_id"] for c in item["candidates"]]
    assert ids == ["cherwell", "oxford-city", SOUTH, VALE, "west-oxfordshire"]
    assert all("no location was given" in c["evidence"] for c in item["candidates"])


async def test_a_general_enquiry_has_no_candidates(client):
    await submit(client, enquiry_body(service_code="general-enquiry", location=None, attributes={}))
    [item] = await queue(client)
    assert item["candidates"] == []
    assert item["reason"] == "General enquiry is read by a person first"


async def test_not_ours_names_who_said_so_and_their_words(client, app):
    reference, case = await delivered_to_the_city(client, app)
    pushed = await client.post(
        "/v1/inbound/oxford-city/servicerequestupdates",
        data=open311_form(
            service_request_id=case,
            status="not_councils_responsibility",
            description="That street is in the Vale",
        ),
    )
    assert pushed.status_code == 200, pushed.text
    [item] = await queue(client)
    assert item["reference"] == reference
    assert item["reason"] == "Oxford City Council says it is not theirs: That street is in the Vale"
    said = item["said_not_ours"]
    assert said["organisation_id"] == "oxford-city"
    assert said["organisation_name"] == "Oxford City Council"
    assert said["words"] == "That street is in the Vale"
    assert "Oxford City Council covers district E07000178" in said["sent_because"]
    ids = [c["organisation_id"] for c in item["candidates"]]
    assert "oxford-city" not in ids
    assert TRIAGE not in ids
    assert "oxfordshire-county" in ids  # covers the place: the work may be the county's


async def test_the_queue_pages_oldest_first_and_filters_by_service(client):
    first = await submit(client, missed_bin())
    second = await submit(client, missed_bin(postcode="OX14 4AA"))
    general = await submit(
        client, enquiry_body(service_code="general-enquiry", location=None, attributes={})
    )
    page = await client.get("/v1/triage", params={"limit": 2})
    body = page.json()
    assert [i["reference"] for i in body["items"]] == [first, second]
    rest = await client.get("/v1/triage", params={"limit": 2, "cursor": body["next_cursor"]})
    assert [i["reference"] for i in rest.json()["items"]] == [general]
    assert rest.json()["next_cursor"] is None
    newest = await queue(client, order="newest")
    assert [i["reference"] for i in newest] == [general, second, first]
    bins = await queue(client, service_code="missed-bin")
    assert [i["reference"] for i in bins] == [first, second]


@pytest.mark.parametrize(
    "params",
    [{"order": "target"}, {"cursor": "nonsense"}, {"limit": 0}, {"service_code": "a\x00b"}],
)
async def test_bad_queue_parameters_are_problems(client, params):
    answer = await client.get("/v1/triage", params=params)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"


# --- claims ----------------------------------------------------------------------------------


async def test_a_claim_is_one_persons_until_it_expires(client, app, engine):
    reference = await submit(client, missed_bin())
    alex = await caller_of(app, await make_person(app, "agent", name="Alex Agent"))
    sam = await caller_of(app, await make_person(app, "agent", name="Sam Second"))
    now = utcnow()
    held = await triage.claim(desk(app), reference=reference, caller=alex, now=now)
    assert held.claimed_by == "Alex Agent"
    assert held.claimed_until == now + timedelta(seconds=900)
    with pytest.raises(StateConflict, match="Alex Agent holds"):
        await triage.claim(desk(app), reference=reference, caller=sam, now=now)
    later = now + timedelta(seconds=600)
    extended = await triage.claim(desk(app), reference=reference, caller=alex, now=later)
    assert extended.claimed_until == later + timedelta(seconds=900)
    with pytest.raises(StateConflict):
        await triage.claim(
            desk(app), reference=reference, caller=sam, now=now + timedelta(seconds=1000)
        )
    expired = later + timedelta(seconds=901)
    taken = await triage.claim(desk(app), reference=reference, caller=sam, now=expired)
    assert taken.claimed_by == "Sam Second"
    [item] = (await triage.list_items(desk(app), now=expired)).items
    assert item.claimed_by == "Sam Second"
    [item] = (await triage.list_items(desk(app), now=expired + timedelta(seconds=901))).items
    assert item.claimed_by is None  # expired: shown as free


async def test_a_claim_over_http_and_its_release(client, app, engine):
    reference = await submit(client, missed_bin())
    alex = bearer(await make_person(app, "agent", name="Alex Agent"))
    sam = bearer(await make_person(app, "agent", name="Sam Second"))
    boss = bearer(await make_person(app, "supervisor", name="Pat Supervisor"))
    claimed = await client.post(f"/v1/triage/{reference}/claim", headers=alex)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["claimed_by"] == "Alex Agent"
    [item] = await queue(client)
    assert item["claimed_by"] == "Alex Agent"
    refused = await client.post(f"/v1/triage/{reference}/claim", headers=sam)
    assert refused.status_code == 409
    assert refused.json()["type"] == "/problems/state-conflict"
    assert "Alex Agent holds" in refused.json()["detail"]
    assert (await client.delete(f"/v1/triage/{reference}/claim", headers=sam)).status_code == 409
    assert (await client.delete(f"/v1/triage/{reference}/claim", headers=boss)).status_code == 204
    [item] = await queue(client)
    assert item["claimed_by"] is None
    assert (await client.post(f"/v1/triage/{reference}/claim", headers=sam)).status_code == 200
    assert (await client.delete(f"/v1/triage/{reference}/claim", headers=sam)).status_code == 204
    async with engine.connect() as conn:
        actions = (await conn.execute(select(audit_table.c.action, audit_table.c.actor))).all()
    assert ("triage.claimed", "Alex Agent") in actions
    assert ("triage.released", "Pat Supervisor") in actions


async def test_acts_need_the_claim_or_nobody_holding_it(client, app, engine):
    reference = await submit(client, missed_bin())
    alex = bearer(await make_person(app, "agent", name="Alex Agent"))
    sam = bearer(await make_person(app, "agent", name="Sam Second"))
    assert (await client.post(f"/v1/triage/{reference}/claim", headers=alex)).status_code == 200
    before = await counts(engine)
    for path, body in (
        ("hand-on", {"organisations": [VALE], "reason": "The street is in Abingdon"}),
        ("relocate", {"location": {"postcode": "OX14 1AA"}}),
        ("close", {"outcome": "first_contact", "note": "Told them the new collection day"}),
    ):
        refused = await client.post(f"/v1/enquiries/{reference}/{path}", json=body, headers=sam)
        assert refused.status_code == 409, (path, refused.text)
        assert "Alex Agent holds" in refused.json()["detail"]
    assert await counts(engine) == before  # nothing half-stored


# --- hand on ---------------------------------------------------------------------------------


async def test_handing_on_sends_it_through_the_outbox_and_closes_the_desks_part(
    client, app, engine
):
    reference = await submit(client, missed_bin())
    agent = bearer(await make_person(app, "agent", name="Alex Agent"))
    await app.state.runtime.dispatcher.run_until_idle()  # the desk's own part is delivered
    answer = await client.post(
        f"/v1/enquiries/{reference}/hand-on",
        json={"organisations": [VALE], "reason": "Caller says the house is in Sutton Courtenay"},
        headers=agent,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["still_at_triage"] is False
    assert body["status"] == "routed"
    by_id = {d["organisation_id"]: d for d in body["destinations"]}
    assert by_id[VALE]["state"] == "pending"
    assert by_id[VALE]["reason"] == (
        "Oxfordshire Contact Centre (triage desk) handed it on: "
        "Caller says the house is in Sutton Courtenay"
    )
    stored = await parts(engine, reference)
    assert stored[TRIAGE]["closure"] == "handed_on"
    assert stored[TRIAGE]["closure_note"] == "Caller says the house is in Sutton Courtenay"
    assert stored[TRIAGE]["closed_by"].startswith("staff:")
    assert stored[TRIAGE]["claimed_by"] is None
    assert await queue(client) == []
    await app.state.runtime.dispatcher.run_until_idle()
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "dispatched"
    [handed] = [t for t in enquiry["timeline"] if t["type"] == "enquiry.handed_on"]
    assert handed["actor"] == "Alex Agent"
    assert "Vale of White Horse District Council" in handed["detail"]
    again = await client.post(
        f"/v1/enquiries/{reference}/hand-on",
        json={"organisations": [SOUTH], "reason": "again"},
        headers=agent,
    )
    assert again.status_code == 409
    assert "not at the triage desk" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"organisations": [], "reason": "x"}, "#/organisations"),
        ({"organisations": ["a", "b", "c", "d", "e", "f"], "reason": "x"}, "#/organisations"),
        ({"organisations": ["nobody"], "reason": "x"}, "#/organisations/0"),
        ({"organisations": [VALE, TRIAGE], "reason": "x"}, "#/organisations/1"),
        ({"organisations": [VALE, VALE], "reason": "x"}, "#/organisations"),
        ({"organisations": [VALE], "reason": ""}, "#/reason"),
        ({"organisations": [VALE], "reason": "x" * 501}, "#/reason"),
        ({"organisations": [VALE], "reason": "a\x00b"}, "#/reason"),
        ({"organisations": [VALE]}, "#/reason"),
        ({"organisations": [VALE], "reason": "x", "extra": 1}, "#/extra"),
    ],
)
async def test_a_bad_hand_on_is_a_problem_and_stores_nothing(client, engine, body, pointer):
    reference = await submit(client, missed_bin())
    before = await counts(engine)
    answer = await client.post(f"/v1/enquiries/{reference}/hand-on", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert pointer in [e["pointer"] for e in answer.json()["errors"]]
    assert await counts(engine) == before


async def test_hand_on_refuses_an_organisation_already_working_it(client, app):
    # Anti-social behaviour at a straddling sector: the police have it, the district waits.
    reference = await submit(
        client,
        enquiry_body(
            service_code="anti-social-behaviour",
            location={"postcode": STRADDLING},
            attributes={"ongoing": "yes"},
        ),
    )
    [item] = await queue(client)
    assert "thames-valley-police" not in [c["organisation_id"] for c in item["candidates"]]
    answer = await client.post(
        f"/v1/enquiries/{reference}/hand-on",
        json={"organisations": ["thames-valley-police"], "reason": "the police"},
    )
    assert answer.status_code == 409
    assert "thames-valley-police already has" in answer.json()["detail"]


async def test_unknown_and_malformed_references(client):
    body = {"organisations": [VALE], "reason": "x"}
    missing = await client.post("/v1/enquiries/K7Q-M4X-PB6/hand-on", json=body)
    assert missing.status_code in (404, 422)
    assert (await client.post("/v1/triage/not-a-ref/claim")).status_code == 422
    not_triage = await submit(client, enquiry_body())
    answer = await client.post(f"/v1/enquiries/{not_triage}/hand-on", json=body)
    assert answer.status_code == 409


# --- relocate --------------------------------------------------------------------------------


async def test_relocating_to_a_decided_postcode_hands_it_on(client, app, engine):
    reference = await submit(client, missed_bin())
    agent = bearer(await make_person(app, "agent", name="Alex Agent"))
    answer = await client.post(
        f"/v1/enquiries/{reference}/relocate",
        json={"location": {"postcode": "OX14 1AA"}},
        headers=agent,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["still_at_triage"] is False
    assert VALE in [d["organisation_id"] for d in answer.json()["destinations"]]
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["place"]["postcode"] == "OX14 1AA"
    assert enquiry["place"]["district_code"] == "E07000180"
    types = [t["type"] for t in enquiry["timeline"] if t.get("actor") == "Alex Agent"]
    assert types == ["enquiry.relocated", "enquiry.handed_on"]
    stored = await parts(engine, reference)
    assert stored[TRIAGE]["closure"] == "handed_on"
    async with engine.connect() as conn:
        actions = (await conn.execute(select(audit_table.c.action))).scalars().all()
    assert "triage.relocated" in actions


async def test_relocating_to_another_straddling_place_keeps_it_with_new_candidates(client, app):
    reference = await submit(client, missed_bin())
    answer = await client.post(
        f"/v1/enquiries/{reference}/relocate", json={"location": {"postcode": "OX1 5AA"}}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["still_at_triage"] is True
    [item] = await queue(client)
    assert item["place"]["postcode"] == "OX1 5AA"
    assert "OX1 5AA cannot be decided" in item["reason"]
    assert [c["postcodes"] for c in item["candidates"]] == [142, 4]
    assert item["claimed_by"] is not None  # relocating claimed it


async def test_relocating_out_of_area_is_a_problem_and_changes_nothing(client, engine):
    reference = await submit(client, missed_bin())
    before = await counts(engine)
    for location, status in (
        ({"postcode": "SW1A 1AA"}, 422),
        ({"postcode": "nonsense"}, 422),
        ({}, 422),
        ({"lat": 51.0}, 422),
    ):
        answer = await client.post(
            f"/v1/enquiries/{reference}/relocate", json={"location": location}
        )
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert await counts(engine) == before
    [item] = await queue(client)
    assert item["place"]["postcode"] == STRADDLING


# --- close -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "status"), [("first_contact", "resolved"), ("outside_remit", "closed")]
)
async def test_closing_at_the_desk_counts_its_outcome(client, app, engine, outcome, status):
    reference = await submit(
        client, enquiry_body(service_code="general-enquiry", location=None, attributes={})
    )
    agent = bearer(await make_person(app, "agent", name="Alex Agent"))
    answer = await client.post(
        f"/v1/enquiries/{reference}/close",
        json={"outcome": outcome, "note": "Gave the opening hours of the tip"},
        headers=agent,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == status
    stored = await parts(engine, reference)
    assert stored[TRIAGE]["closure"] == outcome
    assert stored[TRIAGE]["closure_note"] == "Gave the opening hours of the tip"
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == status
    assert enquiry["closed_at"] is not None
    closing = [t for t in enquiry["timeline"] if t.get("actor") == "Alex Agent"]
    assert closing[0]["type"] == "status.updated"
    assert closing[0]["status"] == status
    assert f"enquiry.{status}" in [t["type"] for t in enquiry["timeline"]]
    async with engine.connect() as conn:
        counted = await conn.scalar(
            select(func.count())
            .select_from(dispatch_table)
            .where(dispatch_table.c.closure == outcome)
        )
    assert counted == 1
    assert await queue(client) == []


@pytest.mark.parametrize(
    "body",
    [
        {"outcome": "handed_on", "note": "x"},
        {"outcome": "first_contact", "note": ""},
        {"outcome": "first_contact", "note": "x" * 2001},
        {"outcome": "first_contact"},
        {"note": "x"},
    ],
)
async def test_a_bad_close_is_a_problem_and_stores_nothing(client, engine, body):
    reference = await submit(client, missed_bin())
    before = await counts(engine)
    answer = await client.post(f"/v1/enquiries/{reference}/close", json=body)
    assert answer.status_code == 422, answer.text
    assert await counts(engine) == before


# --- who may ---------------------------------------------------------------------------------


async def test_a_partners_staff_may_not_use_the_desk(client, app):
    reference = await submit(client, missed_bin())
    officer = bearer(
        await make_person(app, "supervisor", organisation="thames-valley-police", name="PC Lee")
    )
    body = {"organisations": ["thames-valley-police"], "reason": "ours"}
    for method, path, json in (
        ("GET", "/v1/triage", None),
        ("POST", f"/v1/triage/{reference}/claim", None),
        ("DELETE", f"/v1/triage/{reference}/claim", None),
        ("POST", f"/v1/enquiries/{reference}/hand-on", body),
        ("POST", f"/v1/enquiries/{reference}/relocate", {"location": {"postcode": "OX14 1AA"}}),
        ("POST", f"/v1/enquiries/{reference}/close", {"outcome": "first_contact", "note": "x"}),
    ):
        answer = await client.request(method, path, json=json, headers=officer)
        assert answer.status_code == 403, (path, answer.text)
    [item] = await queue(client)
    assert item["claimed_by"] is None
