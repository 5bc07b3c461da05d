"""The Open311 front door in process: what a civic app posts becomes the same enquiry as
/v1's, read back without personal data, in JSON and XML; every error in Open311's shape."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import xmltodict
from sqlalchemy import select

from app.clients.service import Scope
from app.core.db import reading
from app.core.models import attachment_table, enquiry_table, message_table
from app.core.reference import parse
from tests.attachments.images import phone_photo
from tests.conftest import bearer, enquiry_body, make_key
from tests.open311.helpers import (
    V2,
    Files,
    add_cherwell_postcode,
    as_list,
    file_server,
    form_body,
    missed_bin_form,
)


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    with file_server() as server:
        yield server


@pytest.fixture
def media(files: Files) -> Files:
    files.reset()
    return files


async def submitter(engine: Any) -> str:
    return await make_key(engine, Scope.enquiries_submit, Scope.enquiries_read)


async def post(http: Any, form: dict[str, Any], fmt: str = "json") -> Any:
    return await http.post(f"{V2}/requests.{fmt}", data=form)


def error_of(answer: Any) -> tuple[int, str]:
    """(code, description) of the one Open311 error an answer holds, JSON or XML alike."""
    if answer.headers["content-type"].startswith("text/xml"):
        [error] = as_list(xmltodict.parse(answer.text)["errors"]["error"])
        return int(error["code"]), str(error["description"])
    [error] = answer.json()
    return int(error["code"]), str(error["description"])


async def test_services_and_their_questions_come_from_the_catalogue(anonymous, app):
    listed = (await anonymous.get(f"{V2}/services.json")).json()
    catalogue = app.state.iap.catalogue
    assert [s["service_code"] for s in listed] == list(catalogue.services)
    [bins] = [s for s in listed if s["service_code"] == "missed-bin"]
    assert bins == {
        "service_code": "missed-bin",
        "service_name": "Missed bin collection",
        "description": "Missed bin collection",
        "metadata": True,
        "type": "realtime",
        "keywords": "rubbish,refuse,collection,waste",
        "group": "Bins and recycling",
    }
    definition = (await anonymous.get(f"{V2}/services/missed-bin.json")).json()
    assert definition["service_code"] == "missed-bin"
    bin_type, collection_date = definition["attributes"]
    assert bin_type == {
        "variable": True,
        "code": "bin_type",
        "datatype": "singlevaluelist",
        "required": True,
        "datatype_description": "One of the keys in values, as attribute[code].",
        "order": 1,
        "description": "Which bin was missed?",
        "values": [
            {"key": "refuse", "name": "General waste"},
            {"key": "recycling", "name": "Recycling"},
            {"key": "food", "name": "Food waste"},
            {"key": "garden", "name": "Garden waste"},
        ],
    }
    assert (collection_date["datatype"], collection_date["order"]) == ("datetime", 2)
    assert collection_date["required"] is False
    assert collection_date["values"] == []


async def test_a_request_becomes_the_same_enquiry_as_v1_makes(anonymous, engine):
    await add_cherwell_postcode(engine)
    key = await submitter(engine)
    answer = await post(anonymous, missed_bin_form(key))
    assert answer.status_code == 201, answer.text
    [created] = answer.json()
    assert set(created) == {"service_request_id", "token", "service_notice", "account_id"}
    assert (created["service_notice"], created["account_id"]) == ("", None)

    enquiry = (
        await anonymous.get(
            f"/v1/enquiries/{created['service_request_id']}",
            headers=bearer(await make_key(engine, Scope.enquiries_read_all)),
        )
    ).json()
    assert enquiry["channel"] == "app"
    assert enquiry["service_code"] == "missed-bin"
    assert enquiry["attributes"] == {"bin_type": "garden"}
    assert enquiry["location"] == {
        "address": "12 Bridge Street, Banbury",
        "lat": 52.0601,
        "lon": -1.3402,
    }
    assert enquiry["citizen"]["name"] == "Robin Resident"
    assert enquiry["citizen"]["email"] == "resident@example.org"
    # Routed as /v1 routes it: the pin beside a Cherwell postcode goes to Cherwell.
    assert [d["organisation_id"] for d in enquiry["destinations"]] == ["cherwell"]


async def test_a_police_request_about_danger_carries_the_999_notice(anonymous, engine, app):
    police = next(s for s in app.state.iap.catalogue.services.values() if s.tiers == ("police",))
    key = await submitter(engine)
    form = {
        "api_key": key,
        "service_code": police.code,
        "description": "Someone with a knife is outside right now",
        "address_id": "100120000001",
    }
    form.update({f"attribute[{a.code}]": a.values[0].key for a in police.attributes if a.values})
    answer = await post(anonymous, form, "xml")
    assert answer.status_code == 201, answer.text
    request = xmltodict.parse(answer.text)["service_requests"]["request"]
    assert request["service_notice"].startswith("If anyone is in danger")
    assert request["account_id"] is None


async def test_a_multivaluelist_is_sent_as_repeated_fields(anonymous, engine):
    key = await submitter(engine)
    form = [
        ("api_key", key),
        ("service_code", "fly-tipping"),
        ("address_string", "Lay-by on the A361"),
        ("attribute[waste_type][]", "furniture"),
        ("attribute[waste_type][]", "building"),
        ("description", "Sofa and rubble"),
    ]
    answer = await anonymous.post(f"{V2}/requests.json", **form_body(form))
    assert answer.status_code == 201, answer.text
    reference = answer.json()[0]["service_request_id"]
    async with reading(engine) as conn:
        attributes = await conn.scalar(
            select(enquiry_table.c.attributes).where(enquiry_table.c.reference == parse(reference))
        )
    assert attributes == {"waste_type": ["furniture", "building"]}


# Every error the spec names for POST requests, form-encoded, in both formats.
ERRORS = [
    ("no api_key", {"api_key": ""}, 403, "This needs an api_key"),
    ("an unknown api_key", {"api_key": "iap_000000000000_nope"}, 403, "not known"),
    ("another jurisdiction", {"jurisdiction_id": "elsewhere.gov"}, 404, "jurisdiction"),
    ("an unknown service", {"service_code": "teleport"}, 404, "no service 'teleport'"),
    ("no service_code", {"service_code": ""}, 400, "service_code is required"),
    ("no location", {"lat": "", "long": "", "address_string": ""}, 400, "needs a location"),
    ("half a point", {"long": ""}, 400, "both lat and long"),
    ("a point that is no number", {"lat": "north"}, 400, "lat is not a number"),
    ("a point off the globe", {"lat": "95"}, 400, "lat:"),
    ("an address_id that is no UPRN", {"address_id": "12A"}, 400, "address_id:"),
    ("a missing required answer", {"attribute[bin_type]": ""}, 400, "attribute[bin_type]"),
    ("an answer not in the list", {"attribute[bin_type]": "gold"}, 400, "must be one of"),
    ("a question the service lacks", {"attribute[colour]": "red"}, 400, "no attribute 'colour'"),
    ("a bad email", {"email": "not-an-email"}, 400, "email:"),
    ("a bad phone", {"phone": "call me"}, 400, "phone:"),
    ("a description too long", {"description": "x" * 4001}, 400, "description:"),
    ("a NUL character", {"description": "bad\x00byte"}, 400, "NUL"),
    ("a media_url that is no URL", {"media_url": "file:///etc/passwd"}, 400, "media_url"),
]


@pytest.mark.parametrize("fmt", ["json", "xml"])
@pytest.mark.parametrize(("case", "change", "code", "words"), ERRORS, ids=[e[0] for e in ERRORS])
async def test_each_error_is_open311s(anonymous, engine, fmt, case, change, code, words):
    key = await submitter(engine)
    answer = await post(anonymous, missed_bin_form(key, **change), fmt)
    assert answer.status_code == code, answer.text
    assert answer.headers["content-type"].startswith(
        "application/json" if fmt == "json" else "text/xml"
    )
    assert error_of(answer)[0] == code
    assert words in error_of(answer)[1]
    async with reading(engine) as conn:  # nothing half-stored
        assert await conn.scalar(select(enquiry_table.c.id)) is None


async def test_a_key_without_the_scope_is_403(anonymous, engine):
    reader = await make_key(engine, Scope.enquiries_read)
    answer = await post(anonymous, missed_bin_form(reader), "xml")
    assert answer.status_code == 403
    assert error_of(answer) == (403, "This needs an API key with the scope enquiries:submit.")
    assert "WWW-Authenticate" not in answer.headers


async def test_a_json_body_a_repeat_field_and_an_unknown_path_answer_open311s_errors(
    anonymous, engine
):
    key = await submitter(engine)
    as_json = await anonymous.post(f"{V2}/requests.json", json=missed_bin_form(key))
    assert (as_json.status_code, error_of(as_json)[0]) == (415, 415)
    twice = await anonymous.post(
        f"{V2}/requests.json", **form_body([*missed_bin_form(key).items(), ("lat", "51")])
    )
    assert (twice.status_code, error_of(twice)) == (400, (400, "lat is given more than once."))
    unknown = await anonymous.get(f"{V2}/nothing-here.xml")
    assert (unknown.status_code, error_of(unknown)[0]) == (404, 404)
    wrong_format = await anonymous.get(f"{V2}/services.csv")
    assert error_of(wrong_format) == (404, "This front door answers .json and .xml, not .csv.")


async def test_the_rate_limit_is_answered_429_with_retry_after(settings, tmp_path):
    from app.core.settings import ApiSettings
    from app.main import create_app
    from tests.conftest import make_settings

    limited = make_settings(
        settings.database_url,
        settings.sandbox_url,
        api=ApiSettings(
            key_cache_seconds=0,
            rate_limit_anonymous="2/minute",
            trusted_hosts=["iap.test"],
        ),
    )
    import httpx

    application = create_app(limited, run_dispatcher=False)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://iap.test") as http:
            answers = [await http.get(f"{V2}/services.xml") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert error_of(answers[2])[0] == 429
    assert int(answers[2].headers["Retry-After"]) >= 1


async def test_requests_are_read_back_without_personal_data(anonymous, engine):
    await add_cherwell_postcode(engine)
    key = await submitter(engine)
    [created] = (await post(anonymous, missed_bin_form(key))).json()
    reference = created["service_request_id"]

    [request] = (await anonymous.get(f"{V2}/requests/{reference}.json?api_key={key}")).json()
    assert request == {
        "service_request_id": reference,
        "status": "open",
        "status_notes": request["status_notes"],
        "service_name": "Missed bin collection",
        "service_code": "missed-bin",
        "description": "The garden waste bin was missed again",
        "agency_responsible": "Cherwell District Council",
        "service_notice": "",
        "requested_datetime": request["requested_datetime"],
        "updated_datetime": request["updated_datetime"],
        "expected_datetime": None,
        "address": "12 Bridge Street, Banbury",
        "address_id": None,
        "zipcode": "OX16 5QA",  # where the gazetteer placed the pin
        "lat": 52.0601,
        "long": -1.3402,
        "media_url": None,
    }
    requested = datetime.fromisoformat(request["requested_datetime"])
    assert requested.tzinfo is not None
    assert request["requested_datetime"].endswith("Z")
    text = str(request)
    for personal in ("Robin", "Resident", "resident@example.org", "07700"):
        assert personal not in text
    token = (await anonymous.get(f"{V2}/tokens/{created['token']}.json?api_key={key}")).json()
    assert token == [{"token": created["token"], "service_request_id": reference}]


async def test_a_key_sees_its_own_requests_and_read_all_sees_every_one(anonymous, engine):
    mine, theirs = await submitter(engine), await submitter(engine)
    staff = await make_key(engine, Scope.enquiries_read_all)
    form = {"address_string": "Market Place, Banbury"}
    [own] = (await post(anonymous, missed_bin_form(mine, **form))).json()
    [other] = (await post(anonymous, missed_bin_form(theirs, **form))).json()

    def ids(answer: Any) -> set[str]:
        return {r["service_request_id"] for r in answer.json()}

    listed = await anonymous.get(f"{V2}/requests.json", params={"api_key": mine})
    assert ids(listed) == {own["service_request_id"]}
    everything = await anonymous.get(f"{V2}/requests.json", params={"api_key": staff})
    assert ids(everything) == {own["service_request_id"], other["service_request_id"]}
    hidden = await anonymous.get(f"{V2}/requests/{other['service_request_id']}.xml?api_key={mine}")
    assert (hidden.status_code, error_of(hidden)[0]) == (404, 404)
    token = await anonymous.get(f"{V2}/tokens/{other['token']}.json", params={"api_key": mine})
    assert token.status_code == 404
    submit_only = await make_key(engine, Scope.enquiries_submit)
    refused = await anonymous.get(f"{V2}/requests.json", params={"api_key": submit_only})
    assert refused.status_code == 403


async def test_the_filters_of_get_requests(anonymous, engine, client):
    key = await submitter(engine)
    form = {"address_string": "Market Place, Banbury"}
    [first] = (await post(anonymous, missed_bin_form(key, **form))).json()
    [second] = (await post(anonymous, missed_bin_form(key, **form))).json()
    [pothole] = (
        await post(
            anonymous,
            {
                "api_key": key,
                "service_code": "pothole",
                "address_string": "High Street",
                "attribute[road_or_pavement]": "road",
            },
        )
    ).json()
    # One withdrawn (closed) through /v1 as the citizen's client would.
    withdrawn = await anonymous.post(
        f"/v1/enquiries/{second['service_request_id']}/withdraw",
        json={"reason": "collected"},
        headers=bearer(key),
    )
    assert withdrawn.status_code == 201, withdrawn.text

    async def found(**params: str) -> list[str]:
        answer = await anonymous.get(f"{V2}/requests.json", params={"api_key": key, **params})
        assert answer.status_code == 200, answer.text
        return [r["service_request_id"] for r in answer.json()]

    everyone = [pothole, second, first]
    assert await found() == [r["service_request_id"] for r in everyone]  # newest first
    assert await found(service_code="pothole") == [pothole["service_request_id"]]
    assert await found(status="closed") == [second["service_request_id"]]
    assert second["service_request_id"] not in await found(status="open")
    assert await found(status="open,closed") == await found()  # comma delimited, as the spec
    assert await found(service_code="pothole,missed-bin") == await found()
    listed = f"{first['service_request_id']},{pothole['service_request_id']}"
    assert set(await found(service_request_id=listed)) == {
        first["service_request_id"],
        pothole["service_request_id"],
    }
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await found(start_date=later) == []
    earlier = (datetime.now(UTC) - timedelta(days=100)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await found(end_date=earlier) == []
    for bad in ({"status": "pending"}, {"start_date": "yesterday"}, {"service_request_id": "!!"}):
        answer = await anonymous.get(f"{V2}/requests.xml", params={"api_key": key, **bad})
        assert (answer.status_code, error_of(answer)[0]) == (400, 400), bad


async def test_media_url_is_fetched_kept_without_exif_and_linked(anonymous, engine, media):
    media.files["bin.jpg"] = (phone_photo(), "image/jpeg")
    key = await submitter(engine)
    answer = await post(
        anonymous, missed_bin_form(key, media_url=f"{media.url}/bin.jpg", address_id="1234")
    )
    assert answer.status_code == 201, answer.text
    assert media.fetched == ["bin.jpg"]
    reference = answer.json()[0]["service_request_id"]
    [request] = (await anonymous.get(f"{V2}/requests/{reference}.json?api_key={key}")).json()
    photo = await anonymous.get(request["media_url"].removeprefix("http://127.0.0.1:8000"))
    assert photo.status_code == 200
    assert photo.headers["content-type"] == "image/jpeg"
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(photo.content)) as image:
        assert not image.getexif()  # the phone's GPS position is gone
    assert request["address_id"] == "1234"


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.jpg", None, "HTTP 404"),
        ("notes.txt", (b"just text", "text/plain"), "Only photos"),
    ],
)
async def test_media_that_cannot_be_kept_refuses_the_request(
    anonymous, engine, media, name, content, words
):
    if content is not None:
        media.files[name] = content
    key = await submitter(engine)
    answer = await post(anonymous, missed_bin_form(key, media_url=f"{media.url}/{name}"), "xml")
    assert answer.status_code == 400
    assert words in error_of(answer)[1]
    async with reading(engine) as conn:
        assert await conn.scalar(select(enquiry_table.c.id)) is None
        assert await conn.scalar(select(attachment_table.c.id)) is None


async def test_an_update_is_added_once_per_update_id(anonymous, engine, media):
    key = await submitter(engine)
    [created] = (await post(anonymous, missed_bin_form(key, address_string="Banbury"))).json()
    media.files["more.jpg"] = (phone_photo(), "image/jpeg")
    form = {
        "api_key": key,
        "service_request_id": created["service_request_id"],
        "update_id": "fms-update-77",
        "updated_datetime": "2026-12-04T10:00:00Z",
        "status": "OPEN",
        "description": "It is behind the gate",
        "media_url": f"{media.url}/more.jpg",
        "email": "resident@example.org",
        "first_name": "Robin",
        "last_name": "Resident",
    }
    first = await anonymous.post(f"{V2}/servicerequestupdates.json", data=form)
    assert first.status_code == 201, first.text
    again = await anonymous.post(f"{V2}/servicerequestupdates.xml", data=form)
    assert again.status_code == 201, again.text
    [update] = first.json()
    parsed = xmltodict.parse(again.text)["service_request_updates"]["request_update"]
    assert parsed["update_id"] == update["update_id"]
    assert media.fetched == ["more.jpg"]  # the repeat fetched nothing and added nothing
    async with reading(engine) as conn:
        texts = list(await conn.scalars(select(message_table.c.text)))
    assert texts == ["It is behind the gate"]

    other = await make_key(engine, Scope.enquiries_submit)
    theirs = await anonymous.post(
        f"{V2}/servicerequestupdates.json", data={**form, "api_key": other, "update_id": "x"}
    )
    assert (theirs.status_code, error_of(theirs)[0]) == (404, 404)
    empty = await anonymous.post(
        f"{V2}/servicerequestupdates.json",
        data={"api_key": key, "service_request_id": created["service_request_id"]},
    )
    assert (empty.status_code, error_of(empty)[0]) == (400, 400)


async def test_status_changes_are_listed_as_request_updates(anonymous, engine, client):
    key = await submitter(engine)
    [created] = (await post(anonymous, missed_bin_form(key, address_string="Banbury"))).json()
    reference = created["service_request_id"]
    await anonymous.post(
        f"/v1/enquiries/{reference}/withdraw", json={"reason": "done"}, headers=bearer(key)
    )
    answer = await anonymous.get(f"{V2}/servicerequestupdates.json", params={"api_key": key})
    updates = answer.json()
    assert [(u["service_request_id"], u["status"]) for u in updates] == [
        (reference, "open"),
        (reference, "closed"),
    ]
    assert [u["external_status_code"] for u in updates] == ["routed", "withdrawn"]
    assert len({u["update_id"] for u in updates}) == 2
    again = await anonymous.get(f"{V2}/servicerequestupdates.json", params={"api_key": key})
    assert [u["update_id"] for u in again.json()] == [u["update_id"] for u in updates]
    future = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    none = await anonymous.get(
        f"{V2}/servicerequestupdates.json", params={"api_key": key, "start_date": future}
    )
    assert none.json() == []
    stranger = await make_key(engine, Scope.enquiries_read)
    theirs = await anonymous.get(f"{V2}/servicerequestupdates.json", params={"api_key": stranger})
    assert theirs.json() == []


async def test_v1_enquiries_are_open311_requests_too(anonymous, engine):
    key = await submitter(engine)
    made = await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=bearer(key))
    reference = made.json()["reference"]
    [request] = (await anonymous.get(f"{V2}/requests/{reference}.json?api_key={key}")).json()
    assert (request["service_code"], request["zipcode"]) == ("pothole", "OX4 1AA")


async def test_a_key_bound_to_a_channel_submits_on_it(anonymous, engine):
    partner = await make_key(
        engine, Scope.enquiries_submit, Scope.enquiries_read, channel="partner"
    )
    answer = await post(anonymous, missed_bin_form(partner, address_string="Banbury"))
    assert answer.status_code == 201, answer.text
    reference = answer.json()[0]["service_request_id"]
    async with reading(engine) as conn:
        channel = await conn.scalar(
            select(enquiry_table.c.channel).where(enquiry_table.c.reference == parse(reference))
        )
    assert channel == "partner"
