"""A district's Open311 GeoReport v2 server, as the open311 adapter and a person see it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from app.adapters.base import Delivery, RetryableError
from app.adapters.open311 import Open311Adapter, Open311Config
from app.sandbox import Behaviour
from tests.adapters.factory import delivery
from tests.sandbox.conftest import ADAPTERS, eventually, protocol_catalogue

BASE = "/cherwell/open311/v2"


def report(reference: str = "K7Q-M4X-PB6", **fields: str) -> dict[str, str]:
    """A create form as the open311 adapter sends it."""
    form = {
        "api_key": "cherwell-key",
        "service_code": "CDC-BIN",
        "address_string": "1 High Street, Banbury",
        "description": "Bin not collected on Tuesday",
        "attribute[bin_type]": "general",
        "attribute[iap_reference]": reference,
        "first_name": "Ann",
        "last_name": "Example",
        "email": "ann@example.org",
    }
    form.update(fields)
    return form


async def test_services_are_the_district_ones_under_the_councils_own_codes(http):
    listed = (await http.get(f"{BASE}/services.json")).json()
    codes = {s["service_code"]: s["service_name"] for s in listed}
    assert codes["CDC-BIN"] == "Missed bin collection"  # mapped: missed-bin → CDC-BIN
    assert "fly-tipping" in codes  # unmapped codes are ours
    assert "pothole" not in codes  # a county service


async def test_a_service_definition_lists_its_questions_and_the_hidden_reference(http):
    definition = (await http.get(f"{BASE}/services/CDC-BIN.json")).json()
    by_code = {a["code"]: a for a in definition["attributes"]}
    assert by_code["bin_type"]["variable"] is True
    assert by_code["bin_type"]["values"]
    assert by_code["iap_reference"]["variable"] is False
    missing = await http.get(f"{BASE}/services/nope.json")
    assert missing.status_code == 404
    assert missing.json()[0]["code"] == 404


async def test_a_report_makes_a_case_the_council_can_read_back(http, office):
    answer = await http.post(f"{BASE}/requests.json", data=report())
    assert answer.status_code == 200
    [created] = answer.json()
    request_id = created["service_request_id"]
    [shown] = (await http.get(f"{BASE}/requests/{request_id}.json")).json()
    assert shown["status"] == "open"
    assert shown["iap_reference"] == "K7Q-M4X-PB6"
    assert shown["service_code"] == "CDC-BIN"
    assert shown["address"] == "1 High Street, Banbury"
    case = office.cases["cherwell"][request_id]
    assert case["citizen"] == {"name": "Ann Example", "email": "ann@example.org"}
    assert case["service_code"] == "missed-bin"
    assert "api_key" not in str(case["received"])


async def test_list_attributes_arrive_as_lists(http):
    form = [*report().items(), ("attribute[days][]", "mon"), ("attribute[days][]", "tue")]
    headers = {"content-type": "application/x-www-form-urlencoded"}
    answer = await http.post(f"{BASE}/requests.json", content=urlencode(form), headers=headers)
    [created] = answer.json()
    [shown] = (await http.get(f"{BASE}/requests/{created['service_request_id']}.json")).json()
    assert shown["attributes"]["days"] == ["mon", "tue"]


async def test_a_wrong_api_key_is_refused_and_nothing_is_made(http, office):
    answer = await http.post(f"{BASE}/requests.json", data=report(api_key="guess"))
    assert answer.status_code == 403
    assert answer.json() == [{"code": 403, "description": "Invalid api_key"}]
    assert "cherwell" not in office.cases


async def test_the_same_reference_twice_is_already_there(http, office):
    [first] = (await http.post(f"{BASE}/requests.json", data=report())).json()
    again = await http.post(f"{BASE}/requests.json", data=report())
    assert again.status_code == 400
    [error] = again.json()
    assert error["description"] == (
        f"Request already exists: service_request_id {first['service_request_id']}"
    )
    assert len(office.cases["cherwell"]) == 1
    assert office.posts_by_key[("cherwell", "K7Q-M4X-PB6")] == 2


async def test_an_unknown_service_or_jurisdiction_is_refused(http):
    unknown = await http.post(f"{BASE}/requests.json", data=report(service_code="pothole"))
    assert unknown.status_code == 400
    city = report(api_key="city-key", service_code="missed-bin", jurisdiction_id="elsewhere")
    wrong_place = await http.post("/oxford-city/open311/v2/requests.json", data=city)
    assert wrong_place.status_code == 404


async def test_organisations_on_other_protocols_have_no_open311_endpoint(http):
    answer = await http.get("/oxfordshire-county/open311/v2/services.json")
    assert answer.status_code == 404
    assert "No Open311 endpoint" in answer.json()[0]["description"]


async def test_a_token_answer_gives_the_id_once_the_council_knows_it(http):
    behaviour = {"answer_with_token": True, "token_delay_seconds": 0.3}
    await http.put("/_sandbox/behaviour", params={"organisation": "cherwell"}, json=behaviour)
    [answer] = (await http.post(f"{BASE}/requests.json", data=report())).json()
    assert "service_request_id" not in answer
    token = answer["token"]
    assert (await http.get(f"{BASE}/tokens/{token}.json")).json() == [{"token": token}]

    async def known():
        [found] = (await http.get(f"{BASE}/tokens/{token}.json")).json()
        return found.get("service_request_id")

    request_id = await eventually(known, what="the token's id")
    assert (await http.get(f"{BASE}/requests/{request_id}.json")).status_code == 200
    assert (await http.get(f"{BASE}/tokens/unknown.json")).status_code == 404


async def test_requests_can_be_found_by_id_code_status_and_date(http):
    ids = []
    for number in range(3):
        [made] = (await http.post(f"{BASE}/requests.json", data=report(f"REF-{number}"))).json()
        ids.append(made["service_request_id"])
    await http.post(f"/_sandbox/cherwell/cases/{ids[0]}/status", json={"status": "fixed"})

    async def found(**params):
        answer = await http.get(f"{BASE}/requests.json", params=params)
        return sorted(r["service_request_id"] for r in answer.json())

    assert await found(service_request_id=f"{ids[0]},{ids[2]}") == sorted([ids[0], ids[2]])
    assert await found(status="fixed") == [ids[0]]
    assert await found(service_code="CDC-BIN") == sorted(ids)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await found(start_date=tomorrow) == []
    assert (
        await http.get(f"{BASE}/requests.json", params={"start_date": "soon"})
    ).status_code == 400


async def test_status_moves_show_as_updates_with_ids_that_do_not_change(http):
    [made] = (await http.post(f"{BASE}/requests.json", data=report())).json()
    request_id = made["service_request_id"]
    move = {"status": "in_progress", "description": "Crew sent"}
    await http.post(f"/_sandbox/cherwell/cases/{request_id}/status", json=move)
    start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    first = (
        await http.get(f"{BASE}/servicerequestupdates.json", params={"start_date": start})
    ).json()
    [update] = first["service_request_updates"]
    assert update["service_request_id"] == request_id
    assert (update["status"], update["description"]) == ("in_progress", "Crew sent")
    assert update["external_status_code"] == "IN-PROGRESS"
    again = (
        await http.get(f"{BASE}/servicerequestupdates.json", params={"start_date": start})
    ).json()
    assert again["service_request_updates"][0]["update_id"] == update["update_id"]
    # The cursor a poller keeps (the latest time seen) finds that update again, never misses it.
    since = {"start_date": update["updated_datetime"]}
    after = (await http.get(f"{BASE}/servicerequestupdates.json", params=since)).json()
    assert [u["update_id"] for u in after["service_request_updates"]] == [update["update_id"]]
    [shown] = (await http.get(f"{BASE}/requests/{request_id}.json")).json()
    assert (shown["status"], shown["status_notes"]) == ("in_progress", "Crew sent")


@pytest.mark.parametrize("api_key", ["", "wrong"])
async def test_updates_refuse_a_wrong_api_key(http, api_key):
    answer = await http.get(f"{BASE}/servicerequestupdates.json", params={"api_key": api_key})
    assert answer.status_code == 403


# -- plain: a council that follows the spec and no more -----------------------------------


def plain_delivery(attempt: int, created_at: datetime) -> Delivery:
    return delivery(
        protocol_catalogue().organisations["cherwell"],
        citizen=None,
        attempt=attempt,
        dispatch_id=uuid.uuid4(),
        service_name="Missed bin collection",
        service_code="missed-bin",
        description="Bin missed again",
        channel="phone",
        location={"postcode": "OX16 1AA"},
        attributes={"bin_type": "food"},
        created_at=created_at,
    )


async def test_plain_lists_have_the_spec_shape_and_repeats_make_second_cases(http, office):
    office.behaviour["cherwell"] = Behaviour(plain=True)
    first = await http.post(f"{BASE}/requests.json", data=report())
    second = await http.post(f"{BASE}/requests.json", data=report())
    assert first.status_code == second.status_code == 200
    assert office.duplicates("cherwell") == {
        "K7Q-M4X-PB6": [
            first.json()[0]["service_request_id"],
            second.json()[0]["service_request_id"],
        ]
    }
    listed = (await http.get(f"{BASE}/requests.json")).json()
    assert [("attributes" in r, "iap_reference" in r) for r in listed] == [(False, False)] * 2


async def test_the_look_up_pages_through_a_capped_list_and_finds_the_case(http, office):
    """The council answers at most 3 requests per list, oldest first, in the spec's shape: the
    repeat still finds the case it made by halving the time window, and posts nothing."""
    office.behaviour["cherwell"] = Behaviour(plain=True, list_limit=3)
    config = Open311Config(**ADAPTERS["cherwell"], list_limit=3)
    adapter = Open311Adapter(config=config, client=http, timeout=5)
    enquired = datetime.now(UTC) - timedelta(minutes=5)
    for number in range(8):  # other people's reports, before and after ours
        made = await http.post(f"{BASE}/requests.json", data=report(f"OTHER-{number}"))
        case = office.cases["cherwell"][made.json()[0]["service_request_id"]]
        case["created_at"] = enquired + timedelta(seconds=40 * number - 60)
    ours = (await adapter.deliver(plain_delivery(1, enquired))).remote_reference
    posts = office.posts["cherwell"]

    again = await adapter.deliver(plain_delivery(2, enquired))

    assert again.remote_reference == ours
    assert office.posts["cherwell"] == posts, "posted again"
    assert office.duplicates("cherwell") == {}


async def test_a_look_up_that_cannot_see_past_the_cap_posts_nothing(http, office):
    office.behaviour["cherwell"] = Behaviour(plain=True, list_limit=2)
    config = Open311Config(**ADAPTERS["cherwell"], list_limit=2)
    adapter = Open311Adapter(config=config, client=http, timeout=5)
    enquired = datetime.now(UTC)
    for number in range(2):  # in the same second as ours, so no window is narrow enough
        await http.post(f"{BASE}/requests.json", data=report(f"OTHER-{number}"))
    await adapter.deliver(plain_delivery(1, enquired))
    posts = office.posts["cherwell"]
    with pytest.raises(RetryableError, match="too many requests"):
        await adapter.deliver(plain_delivery(2, enquired))
    assert office.posts["cherwell"] == posts
