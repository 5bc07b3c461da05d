"""POST /v1/enquiries: what a caller sees for good and bad enquiries, and what gets stored."""

import pytest
from sqlalchemy import func, select

from app.core import reference
from app.core.models import dispatch_table, enquiry_table, event_table
from tests.conftest import enquiry_body


async def count_rows(engine):
    async with engine.connect() as conn:
        return [
            await conn.scalar(select(func.count()).select_from(table))
            for table in (enquiry_table, dispatch_table, event_table)
        ]


async def test_accepted_enquiry_gives_a_readable_reference_and_its_destinations(client, engine):
    response = await client.post("/v1/enquiries", json=enquiry_body())
    assert response.status_code == 201
    body = response.json()
    assert reference.parse(body["reference"]) == body["reference"].replace("-", "")
    assert response.headers["location"] == f"/v1/enquiries/{body['reference']}"
    assert body["status"] == "routed"
    [county] = body["destinations"]
    assert county["organisation_id"] == "oxfordshire-county"
    assert county["organisation_name"] == "Oxfordshire County Council"
    assert county["state"] == "pending"
    assert "county service" in county["reason"]
    assert await count_rows(engine) == [1, 1, 1]


async def test_two_tier_service_gets_one_dispatch_per_organisation(client):
    response = await client.post(
        "/v1/enquiries",
        json=enquiry_body(
            service_code="anti-social-behaviour",
            attributes={},
            description="Groups gathering and shouting every night",
        ),
    )
    destinations = [d["organisation_id"] for d in response.json()["destinations"]]
    assert destinations == ["oxford-city", "thames-valley-police"]


async def test_straddling_postcode_goes_to_triage_with_the_reason(client):
    response = await client.post(
        "/v1/enquiries",
        json=enquiry_body(
            service_code="missed-bin",
            attributes={"bin_type": "recycling"},
            location={"postcode": "OX1 5ZZ"},
        ),
    )
    [triage] = response.json()["destinations"]
    assert triage["organisation_id"] == "contact-centre"
    assert "OX1 5ZZ" in triage["reason"]


async def test_out_of_area_postcode_is_refused_and_nothing_stored(client, engine):
    response = await client.post(
        "/v1/enquiries", json=enquiry_body(location={"postcode": "SW1A 1AA"})
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/out-of-area"
    assert "SW1A 1AA" in response.json()["detail"]
    assert await count_rows(engine) == [0, 0, 0]


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"location": {"postcode": "OX4 1A"}}, "#/location/postcode"),
        ({"location": {"lat": 51.7}}, "#/location"),
        # Found by Schemathesis: `false` was read as the longitude 0.
        ({"location": {"lat": 51.75, "lon": False}}, "#/location/lon"),
        ({"location": {"lat": "51.75", "lon": -1.25}}, "#/location/lat"),
        ({"service_code": "potholes"}, "#/service_code"),
        ({"description": ""}, "#/description"),
        ({"description": "x" * 4001}, "#/description"),
        # Found by fuzzing: a 500 on PostgreSQL, whose text columns cannot hold NUL.
        ({"description": "pot\x00hole"}, "#/description"),
        ({"citizen": {"name": "Ann\x00"}}, "#/citizen/name"),
        ({"channel": "pigeon"}, "#/channel"),
        ({"surprise": 1}, "#/surprise"),
        ({"attributes": {}}, "#/attributes/road_or_pavement"),
        ({"attributes": {"road_or_pavement": "sky"}}, "#/attributes/road_or_pavement"),
        ({"attributes": {"road_or_pavement": "road", "depth_cm": "deep"}}, "#/attributes/depth_cm"),
        ({"attributes": {"road_or_pavement": "road", "colour": "red"}}, "#/attributes/colour"),
        ({"location": None}, "#/location"),
        ({"citizen": {"email": "not-an-email"}}, "#/citizen/email"),
        ({"citizen": {"phone": "call me"}}, "#/citizen/phone"),
        ({"citizen": {"preferred_contact": "email"}}, "#/citizen"),
        ({"citizen": {"language": "english please"}}, "#/citizen/language"),
        ({"consent": {"share_contact_details": "maybe"}}, "#/consent/share_contact_details"),
    ],
)
async def test_invalid_enquiry_names_the_field_and_stores_nothing(client, engine, change, pointer):
    response = await client.post("/v1/enquiries", json=enquiry_body(**change))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["type"] == "/problems/validation"
    assert pointer in [e.get("pointer") for e in problem["errors"]]
    assert await count_rows(engine) == [0, 0, 0]


@pytest.mark.parametrize(
    ("change", "pointer", "detail"),
    [
        ({"description": "x" * 4001}, "#/description", "should have at most 4000 characters"),
        ({"citizen": {"name": "A" * 201}}, "#/citizen/name", "should have at most 200 characters"),
        ({"description": " "}, "#/description", "should have at least 1 character"),
        (
            {"attributes": {}},
            "#/attributes/road_or_pavement",
            "required: Is the pothole in the road or on the pavement? "
            "(one of ['cycle_lane', 'pavement', 'road'])",
        ),
    ],
)
async def test_errors_say_what_a_person_would(client, change, pointer, detail):
    response = await client.post("/v1/enquiries", json=enquiry_body(**change))
    errors = {e["pointer"]: e["detail"] for e in response.json()["errors"]}
    assert errors[pointer] == detail


async def test_malformed_json_is_400(client):
    response = await client.post(
        "/v1/enquiries", content=b'{"service_code": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/malformed-json"


async def test_wrong_content_type_is_415(client):
    response = await client.post(
        "/v1/enquiries",
        content=b"service_code=pothole",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert response.json()["type"] == "/problems/unsupported-media-type"


async def test_oversized_body_is_413_whether_declared_or_streamed(client, engine):
    huge = enquiry_body(description="x" * 70_000)
    response = await client.post("/v1/enquiries", json=huge)
    assert response.status_code == 413
    assert response.json()["type"] == "/problems/payload-too-large"

    async def stream():
        yield b'{"description": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    streamed = await client.post(
        "/v1/enquiries", content=stream(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert await count_rows(engine) == [0, 0, 0]


@pytest.mark.parametrize(
    ("service_code", "description", "advised"),
    [
        ("non-emergency-crime", "Someone is breaking in next door right now", True),
        ("health-enquiry", "My dad has chest pain and is struggling", True),
        ("anti-social-behaviour", "They threatened us with a knife", True),
        ("non-emergency-crime", "My bike was stolen last week", False),
        ("pothole", "Pothole so deep it is an emergency", False),
    ],
)
async def test_emergency_words_on_police_and_health_services_advise_999(
    client, service_code, description, advised
):
    attributes = {"road_or_pavement": "road"} if service_code == "pothole" else {}
    response = await client.post(
        "/v1/enquiries",
        json=enquiry_body(
            service_code=service_code, description=description, attributes=attributes
        ),
    )
    assert response.status_code == 201
    advice = response.json()["advice"]
    assert bool(advice) is advised
    if advised:
        assert advice[0]["code"] == "call-999"
        assert "999" in advice[0]["message"]


async def test_service_without_location_need_accepts_no_location(client):
    response = await client.post(
        "/v1/enquiries",
        json=enquiry_body(
            service_code="council-tax",
            attributes={},
            location=None,
            description="I have moved house and need to update my account",
        ),
    )
    assert response.status_code == 201
    [triage] = response.json()["destinations"]
    assert triage["organisation_id"] == "contact-centre"
    assert "no location was given" in triage["reason"]


async def test_everything_submitted_is_recorded_for_the_agent(client):
    citizen = {
        "name": "Ann Example",
        "email": "ann@example.org",
        "phone": "01865 000000",
        "preferred_contact": "phone",
        "accessibility_needs": "Hard of hearing",
        "language": "cy",
    }
    created = await client.post(
        "/v1/enquiries",
        json=enquiry_body(
            channel="face_to_face", citizen=citizen, consent={"share_contact_details": True}
        ),
    )
    read = await client.get(f"/v1/enquiries/{created.json()['reference']}")
    body = read.json()
    assert body["citizen"] == citizen
    assert body["channel"] == "face_to_face"
    assert body["place"]["district_code"] == "E07000178"
    assert body["timeline"][0]["type"] == "enquiry.received"


async def test_a_list_where_one_choice_is_expected_is_refused_not_a_500(client, engine):
    """Found by fuzzing: `["road"]` for a single-choice attribute raised TypeError (a list
    cannot be looked up in the set of choices)."""
    response = await client.post(
        "/v1/enquiries", json=enquiry_body(attributes={"road_or_pavement": ["road"]})
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["pointer"] == "#/attributes/road_or_pavement"
    assert await count_rows(engine) == [0, 0, 0]
