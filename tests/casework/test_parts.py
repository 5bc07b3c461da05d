"""Partners' staff and their parts: a police officer reads only the police's part of an enquiry
and moves it in the police's words or ours; every other organisation's part is hidden, as if it
did not exist."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from app.core.models import audit_table, dispatch_table, event_table, status_update_table
from app.core.reference import display, new_reference
from app.sandbox import Behaviour
from tests.conftest import bearer, enquiry_body, make_person

POLICE = "thames-valley-police"
CITY = "oxford-city"
COUNTY = "oxfordshire-county"
CITIZEN = {
    "name": "Nia Okafor",
    "email": "nia.okafor@example.org",
    "phone": "07700 900456",
    "preferred_contact": "phone",
    "accessibility_needs": "Deaf: text, do not call",
}


def crime(**change: Any) -> dict[str, Any]:
    """A non-emergency crime: the police alone receive it (by email)."""
    return enquiry_body(
        service_code="non-emergency-crime",
        description="Bike stolen from the rack outside the library",
        attributes={},
        **change,
    )


def asb(**change: Any) -> dict[str, Any]:
    """Anti-social behaviour in Oxford: the city council and the police each have a part."""
    return enquiry_body(
        service_code="anti-social-behaviour",
        description="Fireworks thrown at the bus shelter every night",
        location={"postcode": "OX1 1BX"},
        attributes={"ongoing": "yes"},
        **change,
    )


async def submitted(client: Any, body: dict[str, Any]) -> str:
    created = await client.post("/v1/enquiries", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["reference"])


async def delivered(client: Any, app: Any, body: dict[str, Any]) -> str:
    reference = await submitted(client, body)
    await app.state.runtime.dispatcher.run_until_idle()
    return reference


def move(anonymous: Any, token: str, reference: str, organisation: str, **body: Any) -> Any:
    return anonymous.post(
        f"/v1/enquiries/{reference}/parts/{organisation}/updates",
        json=body,
        headers=bearer(token),
    )


async def officer(app: Any, name: str = "PC Dana Hale") -> str:
    return await make_person(app, "agent", organisation=POLICE, name=name)


async def counts(engine: Any) -> tuple[int, ...]:
    tables = (event_table, status_update_table, audit_table, dispatch_table)
    async with engine.connect() as conn:
        return tuple([await conn.scalar(select(func.count()).select_from(t)) for t in tables])


# --- organisation-scoped reads ------------------------------------------------------------


async def test_a_police_officer_cannot_read_a_county_only_enquiry(client, app, anonymous):
    pothole = await delivered(client, app, enquiry_body())
    token = await officer(app)
    hidden = await anonymous.get(f"/v1/enquiries/{pothole}", headers=bearer(token))
    unknown = display(new_reference())
    missing = await anonymous.get(f"/v1/enquiries/{unknown}", headers=bearer(token))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["type"] == missing.json()["type"] == "/problems/not-found"
    assert hidden.json()["detail"] == f"No enquiry has the reference {pothole}."
    assert missing.json()["detail"] == f"No enquiry has the reference {unknown}."
    # The contact centre's own agent reads it.
    agent = await make_person(app, "agent")
    assert (await anonymous.get(f"/v1/enquiries/{pothole}", headers=bearer(agent))).is_success


async def test_on_a_shared_enquiry_the_police_see_only_their_part(
    client, app, anonymous, back_office
):
    # The city's back-office fails for now: its error must not reach the police.
    back_office.behaviour[CITY] = Behaviour(fail_rate=1.0, fail_status=503)
    reference = await delivered(
        client, app, asb(citizen=CITIZEN, consent={"share_contact_details": True})
    )
    everything = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert {d["organisation_id"] for d in everything["destinations"]} == {CITY, POLICE}
    assert "HTTP 503" in str(everything)  # staff of the contact centre see why

    token = await officer(app)
    seen = await anonymous.get(f"/v1/enquiries/{reference}", headers=bearer(token))
    assert seen.status_code == 200, seen.text
    view = seen.json()
    [part] = view["destinations"]
    assert (part["organisation_id"], part["state"]) == (POLICE, "delivered")
    assert [a["outcome"] for a in part["attempt_log"]] == ["delivered"]
    for other in (CITY, "Oxford City", "E07000178", "HTTP 503", "retried"):
        assert other not in str(view["destinations"]), other
        assert other not in str(view["timeline"]), other
    assert "Oxford" not in str(view["place"])  # its area codes, never a council's name
    assert {e["organisation_id"] for e in view["timeline"]} <= {None, POLICE}
    [received] = [e for e in view["timeline"] if e["type"] == "enquiry.received"]
    assert received["detail"].startswith(f"{POLICE}: ")
    assert "dispatch.retry" not in {e["type"] for e in view["timeline"]}
    # The citizen's details as the police's agreement and the citizen's consent allow.
    assert view["citizen"] == CITIZEN
    assert view["location"] == {"postcode": "OX1 1BX"}


async def test_the_citizens_details_follow_the_organisations_sharing_and_consent(
    client, app, anonymous, engine
):
    token = await officer(app, name="PC Rowan Ellis")
    withheld = await delivered(client, app, asb(citizen=CITIZEN))  # no consent
    shared = await delivered(
        client,
        app,
        asb(citizen={**CITIZEN, "language": "cy"}, consent={"share_contact_details": True}),
    )
    without = (await anonymous.get(f"/v1/enquiries/{withheld}", headers=bearer(token))).json()
    assert without["citizen"] is None
    assert "Nia" not in str(without)
    seen = (await anonymous.get(f"/v1/enquiries/{shared}", headers=bearer(token))).json()
    assert seen["citizen"]["name"] == "Nia Okafor"
    assert seen["citizen"]["language"] == "cy"
    async with engine.connect() as conn:
        reads = (
            await conn.execute(
                select(audit_table.c.actor, audit_table.c.subject).where(
                    audit_table.c.action == "enquiry.read"
                )
            )
        ).all()
    # Only the read that showed the citizen's details is audited, naming the officer.
    assert [tuple(r) for r in reads] == [("PC Rowan Ellis", shared)]


async def test_a_partners_staff_list_only_enquiries_with_their_part(client, app, anonymous):
    pothole = await submitted(client, enquiry_body())
    shared = await submitted(client, asb())
    theft = await submitted(client, crime())
    token = await officer(app)

    async def listed(**params: Any) -> list[str]:
        answer = await anonymous.get("/v1/enquiries", params=params, headers=bearer(token))
        assert answer.status_code == 200, answer.text
        return [item["reference"] for item in answer.json()["items"]]

    assert await listed() == [theft, shared]
    assert await listed(organisation_id=POLICE) == [theft, shared]
    # Naming another organisation finds nothing, not even the enquiry the police share with it.
    assert await listed(organisation_id=CITY) == []
    assert await listed(organisation_id=COUNTY) == []
    assert await listed(service_code="pothole") == []
    agent = await make_person(app, "agent")
    everything = await anonymous.get("/v1/enquiries", headers=bearer(agent))
    assert [i["reference"] for i in everything.json()["items"]] == [theft, shared, pothole]


# --- moving a part ---------------------------------------------------------------------------


async def test_an_officer_acknowledges_then_closes_the_polices_part(client, app, anonymous, engine):
    reference = await delivered(client, app, crime())
    token = await officer(app, name="PC Sam Okoro")

    acknowledged = await move(anonymous, token, reference, POLICE, status="acknowledged")
    assert acknowledged.status_code == 200, acknowledged.text
    answer = acknowledged.json()
    assert answer["reference"] == reference
    assert answer["enquiry_status"] == "acknowledged"
    assert (answer["part"]["organisation_id"], answer["part"]["remote_status"]) == (
        POLICE,
        "acknowledged",
    )
    closed = await move(
        anonymous,
        token,
        reference,
        POLICE,
        status="Closed",
        description="Crime number 43260001234 given to the reporter",
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["enquiry_status"] == "closed"

    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "closed"
    assert enquiry["closed_at"] is not None
    updates = [e for e in enquiry["timeline"] if e["type"] == "status.updated"]
    assert [(e["status"], e["actor"]) for e in updates] == [
        ("acknowledged", "PC Sam Okoro"),
        ("closed", "PC Sam Okoro"),
    ]
    assert "Crime number 43260001234" in updates[1]["detail"]
    assert [e["type"] for e in enquiry["timeline"]][-1] == "enquiry.closed"
    # The officer's own view names them too.
    own = (await anonymous.get(f"/v1/enquiries/{reference}", headers=bearer(token))).json()
    assert [e["actor"] for e in own["timeline"] if e["type"] == "status.updated"] == [
        "PC Sam Okoro"
    ] * 2
    async with engine.connect() as conn:
        audited = (
            await conn.execute(
                select(audit_table.c.actor, audit_table.c.subject, audit_table.c.detail)
                .where(audit_table.c.action == "part.updated")
                .order_by(audit_table.c.at)
            )
        ).all()
        via = (await conn.execute(select(status_update_table.c.received_via))).scalars().all()
    assert [(a.actor, a.subject, a.detail["status"]) for a in audited] == [
        ("PC Sam Okoro", reference, "acknowledged"),
        ("PC Sam Okoro", reference, "closed"),
    ]
    assert "43260001234" not in str(audited)  # the description may quote the citizen
    assert via == ["staff", "staff"]


async def test_an_organisations_own_words_are_mapped_as_pushes_are(client, app, anonymous):
    reference = await delivered(
        client,
        app,
        enquiry_body(
            service_code="missed-bin",
            location={"postcode": "OX1 1BX"},
            attributes={"bin_type": "refuse"},
        ),
    )
    city_agent = await make_person(app, "agent", organisation=CITY, name="Lee Marsh")
    fixed = await move(anonymous, city_agent, reference, CITY, status="fixed")  # Open311's word
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["part"]["remote_status"] == "resolved"
    assert fixed.json()["enquiry_status"] == "resolved"


async def test_a_word_nobody_knows_is_refused_with_the_words_accepted(client, app, anonymous):
    reference = await delivered(client, app, asb())
    token = await make_person(app, "agent")  # the contact centre's: any part
    before = await counts(app.state.iap.engine)
    for organisation, word in ((POLICE, "sorted"), (POLICE, "routed"), (CITY, "dispatched")):
        refused = await move(anonymous, token, reference, organisation, status=word)
        assert refused.status_code == 422, refused.text
        problem = refused.json()
        assert problem["type"] == "/problems/validation"
        assert problem["errors"][0]["pointer"] == "#/status"
        accepted = problem["errors"][0]["detail"]
        assert "acknowledged" in accepted
        assert "closed" in accepted
        assert "routed" not in accepted
        assert "dispatched" not in accepted
        if organisation == CITY:
            assert "fixed" in accepted
            assert "no_further_action" in accepted
    assert await counts(app.state.iap.engine) == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": ""},
        {"status": "x" * 65},
        {"status": "closed", "description": "x" * 2001},
        {"status": "closed", "extra": 1},
        {"status": "clo\u0000sed"},
        {"status": 3},
    ],
)
async def test_a_malformed_update_is_a_validation_problem(client, app, anonymous, body):
    reference = await delivered(client, app, crime())
    token = await officer(app)
    before = await counts(app.state.iap.engine)
    refused = await anonymous.post(
        f"/v1/enquiries/{reference}/parts/{POLICE}/updates", json=body, headers=bearer(token)
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert await counts(app.state.iap.engine) == before


async def test_an_officer_cannot_move_another_organisations_part(client, app, anonymous):
    reference = await delivered(client, app, asb())
    pothole = await delivered(client, app, enquiry_body())
    token = await officer(app)
    supervisor = await make_person(app, "supervisor", organisation=POLICE)
    engine = app.state.iap.engine
    before = await counts(engine)
    unknown = display(new_reference())
    answers = [
        await move(anonymous, person, ref, organisation, status="closed")
        for person in (token, supervisor)
        for ref, organisation in (
            (reference, CITY),  # shared with the police, but the city's part
            (pothole, COUNTY),
            (pothole, POLICE),  # no police part
            (unknown, POLICE),
            (reference, "no-such-organisation"),
        )
    ]
    assert [a.status_code for a in answers] == [404] * len(answers)
    details = {a.json()["detail"].split(" has a part")[0] for a in answers}
    assert details == {f"No enquiry {r}" for r in (reference, pothole, unknown)}
    assert await counts(engine) == before
    city = (await client.get(f"/v1/enquiries/{reference}")).json()["destinations"]
    assert {d["organisation_id"]: d["remote_status"] for d in city} == {CITY: None, POLICE: None}


async def test_only_a_delivered_part_can_be_moved(client, app, anonymous, back_office):
    token = await officer(app)
    waiting = await submitted(client, crime())  # not delivered yet
    answer = await move(anonymous, token, waiting, POLICE, status="acknowledged")
    assert answer.status_code == 409
    assert answer.json()["type"] == "/problems/state-conflict"
    assert "not been delivered" in answer.json()["detail"]

    back_office.behaviour[COUNTY] = Behaviour(fail_rate=1.0, fail_status=400)
    given_up = await delivered(client, app, enquiry_body())
    agent = await make_person(app, "agent")
    dead = await move(anonymous, agent, given_up, COUNTY, status="closed")
    assert dead.status_code == 409
    assert "(state: dead)" in dead.json()["detail"]

    triage = await delivered(
        client, app, enquiry_body(service_code="general-enquiry", attributes={})
    )
    desk = await move(anonymous, agent, triage, "contact-centre", status="closed")
    assert desk.status_code == 409
    assert "triage desk" in desk.json()["detail"]
    # Delivered since (the dispatcher ran for the others): now it can be moved.
    later = await move(anonymous, token, waiting, POLICE, status="acknowledged")
    assert later.status_code == 200, later.text


async def test_not_ours_from_an_officer_sends_the_enquiry_to_the_triage_desk(
    client, app, anonymous
):
    reference = await delivered(client, app, crime())
    token = await officer(app)
    said = await move(
        anonymous,
        token,
        reference,
        POLICE,
        status="not_our_responsibility",
        description="A civil dispute over a shared fence",
    )
    assert said.status_code == 200, said.text
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert [d["organisation_id"] for d in enquiry["destinations"]] == [POLICE, "contact-centre"]
    assert "enquiry.rerouted" in [e["type"] for e in enquiry["timeline"]]
    # The triage desk's part is not the police's to see.
    own = (await anonymous.get(f"/v1/enquiries/{reference}", headers=bearer(token))).json()
    assert [d["organisation_id"] for d in own["destinations"]] == [POLICE]
    assert "contact-centre" not in str(own["timeline"])


async def test_an_api_key_without_parts_update_may_not_move_a_part(client, app, anonymous):
    reference = await delivered(client, app, crime())
    dpo = await make_person(app, "data-protection-officer")
    refused = await move(anonymous, dpo, reference, POLICE, status="closed")
    assert refused.status_code == 403


# --- the open parts, listed --------------------------------------------------------------


async def test_an_organisations_open_parts_are_listed_for_its_own_staff_only(
    client, app, anonymous
):
    ours = await delivered(client, app, asb())
    pothole = await delivered(client, app, enquiry_body(description="The county's alone"))
    police = bearer(await officer(app))
    listed = await anonymous.get("/v1/parts", headers=police)
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert (item["reference"], item["organisation_id"], item["status"]) == (
        ours,
        POLICE,
        "dispatched",
    )
    assert "citizen" not in item
    assert "description" not in item
    assert (
        await anonymous.get("/v1/parts", params={"organisation_id": CITY}, headers=police)
    ).json()["items"] == []
    county = await client.get("/v1/parts", params={"organisation_id": COUNTY})
    assert [i["reference"] for i in county.json()["items"]] == [pothole]
    assert (await client.get("/v1/parts")).status_code == 422
    assert (await client.get("/v1/parts", params={"organisation_id": "nobody"})).status_code == 422
    token = await officer(app)
    resolved = await move(anonymous, token, ours, POLICE, status="resolved")
    assert resolved.status_code == 200, resolved.text
    assert (await anonymous.get("/v1/parts", headers=police)).json()["items"] == []
