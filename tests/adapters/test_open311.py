"""The open311 adapter: the outbound form field by field, minimisation, every error class, the
token flow, "already exists", the look-up before a repeat, and polling in both modes (respx)."""

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from pydantic import ValidationError

from app.adapters import ADAPTER_TYPES
from app.adapters.base import Delivery, PermanentError, RetryableError, Tracked
from app.adapters.open311 import Open311Adapter, Open311Config, parse_time
from app.catalogue.status import OPEN311_WORDS
from tests.adapters import factory

BASE = "http://bo.test/cherwell/open311/v2"
REQUESTS = f"{BASE}/requests.json"
UPDATES = f"{BASE}/servicerequestupdates.json"
DISPATCH_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
REFERENCE = "K7Q-M4X-PB6"
CREATED = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
CITIZEN = {
    "name": "Ann van Example",
    "email": "ann@example.org",
    "phone": "01865 000000",
    "preferred_contact": "email",
    "language": "cy",
    "accessibility_needs": "Large print",
}
PERSONAL = {"email", "first_name", "last_name", "phone"}


def delivery(
    *,
    share: bool = True,
    shares: tuple[str, ...] | None = None,
    attempt: int = 1,
    citizen: dict | None = None,
    **enquiry_fields,
) -> Delivery:
    fields = {
        "service_code": "missed-bin",
        "description": "Bin missed again",
        "channel": "phone",
        "location": {"postcode": "OX16 1AA"},
        "attributes": {"bin_type": "food"},
        "created_at": CREATED,
    } | enquiry_fields
    return factory.delivery(
        "cherwell",
        citizen=CITIZEN if citizen is None else citizen,
        share=share,
        shares=shares,
        attempt=attempt,
        dispatch_id=DISPATCH_ID,
        service_name="Missed bin collection",
        **fields,
    )


def config(**overrides) -> Open311Config:
    return Open311Config(type="open311", base_url=BASE, api_key="k3y", **overrides)


async def send(d: Delivery, **overrides):
    async with httpx.AsyncClient() as client:
        adapter = Open311Adapter(config=config(**overrides), client=client, timeout=5)
        return await adapter.deliver(d)


async def poll(tracked, *, cursor=None, **overrides):
    async with httpx.AsyncClient() as client:
        adapter = Open311Adapter(config=config(**overrides), client=client, timeout=5)
        return await adapter.poll(tracked, cursor=cursor)


def form(route) -> list[tuple[str, str]]:
    """The last request's form body as sorted pairs (repeated keys kept)."""
    return sorted(parse_qsl(route.calls.last.request.content.decode(), keep_blank_values=True))


def created(request_id="1234"):
    return httpx.Response(201, json=[{"service_request_id": request_id, "service_notice": "ok"}])


def tracked(remote, *, n=1, delivered=CREATED):
    return Tracked(
        dispatch_id=uuid.UUID(int=n),
        reference=f"REF-{n}",
        remote_reference=remote,
        delivered_at=delivered,
    )


# -- registry and config ------------------------------------------------------------------


def test_registered_with_open311_words_and_polling():
    assert ADAPTER_TYPES["open311"] is Open311Adapter
    assert list(ADAPTER_TYPES) == sorted(ADAPTER_TYPES)
    assert Open311Adapter.status_words is OPEN311_WORDS
    assert Open311Adapter.can_poll


def test_config_defaults_and_validation():
    loaded = config()
    assert loaded.reference_attribute == "iap_reference"
    assert loaded.updates == "servicerequestupdates"
    assert loaded.jurisdiction_id is None
    assert "k3y" not in repr(loaded)
    with pytest.raises(ValidationError, match="regular expression"):
        config(already_exists="(unclosed")
    with pytest.raises(ValidationError):
        config(updates="push")
    with pytest.raises(ValidationError):
        config(device_id="x")


# -- the create form ----------------------------------------------------------------------


@respx.mock
async def test_without_consent_the_form_has_no_personal_data_at_all():
    route = respx.post(REQUESTS).mock(return_value=created())
    receipt = await send(delivery(share=False))
    assert receipt.remote_reference == "1234"
    assert form(route) == [
        ("address_string", "OX16 1AA"),
        ("api_key", "k3y"),
        ("attribute[bin_type]", "food"),
        ("attribute[iap_reference]", REFERENCE),
        ("description", f"Bin missed again\n\nIAP reference: {REFERENCE}"),
        ("service_code", "missed-bin"),
    ]
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"


@respx.mock
async def test_with_consent_every_field_is_sent_as_the_spec_names_it():
    route = respx.post(REQUESTS).mock(return_value=created())
    d = delivery(
        location={"lat": 51.75, "lon": -1.25, "postcode": "OX1 1AA", "address": "1 High St"},
        attributes={
            "bin_type": "food",
            "sacks": 3,
            "weight": 1.5,
            "blocked": True,
            "seen": ["a", "b"],
        },
    )
    await send(d, jurisdiction_id="cherwell.gov.uk", service_codes={"missed-bin": "MB01"})
    assert form(route) == [
        ("api_key", "k3y"),
        ("attribute[bin_type]", "food"),
        ("attribute[blocked]", "true"),
        ("attribute[iap_reference]", REFERENCE),
        ("attribute[sacks]", "3"),
        ("attribute[seen][]", "a"),
        ("attribute[seen][]", "b"),
        ("attribute[weight]", "1.5"),
        ("description", f"Bin missed again\n\nIAP reference: {REFERENCE}"),
        ("email", "ann@example.org"),
        ("first_name", "Ann van"),
        ("jurisdiction_id", "cherwell.gov.uk"),
        ("last_name", "Example"),
        ("lat", "51.75"),
        ("long", "-1.25"),
        ("phone", "01865 000000"),
        ("service_code", "MB01"),
    ]


@pytest.mark.parametrize(
    ("shares", "expected"),
    [
        (("email",), {("email", "ann@example.org")}),
        (("name",), {("first_name", "Ann van"), ("last_name", "Example")}),
        (("phone", "language"), {("phone", "01865 000000")}),
        (("language", "accessibility_needs", "preferred_contact"), set()),
        ((), set()),
    ],
)
@respx.mock
async def test_narrow_shares_send_only_those_fields(shares, expected):
    route = respx.post(REQUESTS).mock(return_value=created())
    await send(delivery(shares=shares))
    sent = {pair for pair in form(route) if pair[0] in PERSONAL}
    assert sent == expected
    names = {name for name, _ in form(route)}
    assert not names & {"device_id", "account_id", "language", "accessibility_needs"}


@respx.mock
async def test_a_one_word_name_goes_in_first_name():
    route = respx.post(REQUESTS).mock(return_value=created())
    await send(delivery(shares=("name",), citizen={"name": "Cher"}))
    assert [p for p in form(route) if p[0] in PERSONAL] == [("first_name", "Cher")]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ({"lat": 51.7, "lon": -1.2}, [("lat", "51.7"), ("long", "-1.2")]),
        ({"lat": 51.7, "postcode": "OX1 1AA"}, [("address_string", "OX1 1AA")]),
        ({"address": "1 High St", "postcode": "OX1 1AA"}, [("address_string", "1 High St")]),
        ({"uprn": "100120000000"}, []),
        (None, []),
    ],
)
@respx.mock
async def test_one_location_lat_long_else_address_else_postcode(location, expected):
    route = respx.post(REQUESTS).mock(return_value=created())
    await send(delivery(location=location))
    where = {"lat", "long", "address_string", "address_id"}
    assert [p for p in form(route) if p[0] in where] == expected


@respx.mock
async def test_description_is_cut_to_end_with_our_reference_within_4000_characters():
    route = respx.post(REQUESTS).mock(return_value=created())
    await send(delivery(description="x" * 4100, attributes={}))
    description = dict(form(route))["description"]
    assert len(description) == 4000
    # Every list answer shows the description, so a look-up finds the reference there.
    assert description.endswith(f"xx\n\nIAP reference: {REFERENCE}")


@respx.mock
async def test_an_enquiry_attribute_cannot_overwrite_our_reference():
    route = respx.post(REQUESTS).mock(return_value=created())
    await send(delivery(attributes={"ref": "ABC-DEF-GHJ"}), reference_attribute="ref")
    assert [p for p in form(route) if p[0].startswith("attribute")] == [
        ("attribute[ref]", REFERENCE)
    ]


# -- answers to a create ------------------------------------------------------------------


@respx.mock
async def test_a_numeric_id_and_a_lone_object_are_understood():
    respx.post(REQUESTS).respond(200, json={"service_request_id": 42})
    assert (await send(delivery())).remote_reference == "42"


@respx.mock
async def test_a_token_known_at_once_gives_the_request_id():
    respx.post(REQUESTS).respond(201, json=[{"token": "abc"}])
    token = respx.get(f"{BASE}/tokens/abc.json").respond(
        200, json=[{"service_request_id": "1234", "token": "abc"}]
    )
    assert (await send(delivery(), jurisdiction_id="j")).remote_reference == "1234"
    assert dict(token.calls.last.request.url.params) == {"api_key": "k3y", "jurisdiction_id": "j"}


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json=[{"token": "abc"}]),
        httpx.Response(404, json=[{"code": 404, "description": "not yet"}]),
        httpx.Response(503),
        httpx.Response(200, text="junk"),
    ],
)
@respx.mock
async def test_a_token_not_known_yet_is_kept_for_poll_to_resolve(answer):
    respx.post(REQUESTS).respond(201, json=[{"token": "abc"}])
    respx.get(f"{BASE}/tokens/abc.json").mock(return_value=answer)
    assert (await send(delivery())).remote_reference == "token:abc"


@respx.mock
async def test_already_exists_with_an_id_is_success_without_a_look_up():
    respx.post(REQUESTS).respond(
        400, json=[{"code": 400, "description": "Request already exists: service_request_id 77"}]
    )
    look_up = respx.get(REQUESTS).respond(200, json=[])
    assert (await send(delivery())).remote_reference == "77"
    assert not look_up.called


@respx.mock
async def test_already_exists_without_an_id_looks_the_request_up():
    respx.post(REQUESTS).respond(400, json=[{"code": 400, "description": "Duplicate request"}])
    respx.get(REQUESTS).respond(
        200, json=[{"service_request_id": "88", "description": "x", "iap_reference": REFERENCE}]
    )
    assert (await send(delivery())).remote_reference == "88"


@respx.mock
async def test_already_exists_that_cannot_be_found_is_still_delivered():
    respx.post(REQUESTS).respond(400, json=[{"code": 400, "description": "already exists"}])
    respx.get(REQUESTS).respond(200, json=[])
    assert (await send(delivery())).remote_reference is None


@respx.mock
async def test_already_exists_follows_the_configured_words():
    respx.post(REQUESTS).respond(
        400, json=[{"code": 400, "description": "Doublon: service_request_id=5."}]
    )
    assert (await send(delivery(), already_exists="^Doublon")).remote_reference == "5"
    with pytest.raises(PermanentError, match="Doublon"):
        await send(delivery())


# -- the look-up before a repeat ----------------------------------------------------------


@pytest.mark.parametrize(
    "found",
    [
        {"service_request_id": "9", "iap_reference": REFERENCE},
        {"service_request_id": "9", "attributes": {"iap_reference": REFERENCE}},
        {"service_request_id": "9", "attributes": [{"code": "iap_reference", "value": REFERENCE}]},
        {"service_request_id": "9", "description": f"Bin missed ({REFERENCE})"},
    ],
)
@respx.mock
async def test_a_repeat_finds_the_earlier_request_and_does_not_post(found):
    others = [{"service_request_id": "8", "description": "other", "iap_reference": "X"}]
    look_up = respx.get(REQUESTS).respond(200, json=[*others, found])
    post = respx.post(REQUESTS).mock(return_value=created())
    d = delivery(attempt=2)
    receipt = await send(d, jurisdiction_id="j", service_codes={"missed-bin": "MB01"})
    assert receipt.remote_reference == "9"
    assert not post.called
    params = dict(look_up.calls.last.request.url.params)
    # From a little before the enquiry was made until a little after now.
    assert parse_time(params.pop("end_date")) > datetime.now(UTC)
    assert params == {
        "api_key": "k3y",
        "jurisdiction_id": "j",
        "service_code": "MB01",
        "start_date": "2026-11-25T09:20:00Z",
    }


@pytest.mark.parametrize(
    "answer", [httpx.Response(200, json=[]), httpx.Response(404, json=[{"code": 404}])]
)
@respx.mock
async def test_a_repeat_that_finds_nothing_posts(answer):
    look_up = respx.get(REQUESTS).mock(return_value=answer)
    post = respx.post(REQUESTS).mock(return_value=created("10"))
    assert (await send(delivery(attempt=3))).remote_reference == "10"
    assert look_up.call_count == 1
    assert post.call_count == 1


@respx.mock
async def test_a_first_attempt_does_not_look_up():
    look_up = respx.get(REQUESTS).respond(200, json=[])
    respx.post(REQUESTS).mock(return_value=created())
    await send(delivery(attempt=1))
    assert not look_up.called


@respx.mock
async def test_a_look_up_that_fails_does_not_post():
    respx.get(REQUESTS).respond(503, headers={"Retry-After": "3"})
    post = respx.post(REQUESTS).mock(return_value=created())
    with pytest.raises(RetryableError):
        await send(delivery(attempt=2))
    assert not post.called


@respx.mock
async def test_the_ambiguous_failure_then_repeat():
    """A timeout after the request left, then attempt 2 finds what attempt 1 made."""
    post = respx.post(REQUESTS).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RetryableError, match="ReadTimeout"):
        await send(delivery(attempt=1))
    respx.get(REQUESTS).respond(
        200, json=[{"service_request_id": "55", "iap_reference": REFERENCE}]
    )
    assert (await send(delivery(attempt=2))).remote_reference == "55"
    assert post.call_count == 1


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
@respx.mock
async def test_other_client_errors_are_permanent_with_the_councils_words(status):
    respx.post(REQUESTS).respond(status, json=[{"code": status, "description": "Invalid api_key"}])
    with pytest.raises(PermanentError, match=f"HTTP {status} .*Invalid api_key") as caught:
        await send(delivery())
    assert "k3y" not in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (httpx.Response(201, text="<html>ok</html>"), "not JSON"),
        (httpx.Response(201, json=[]), "empty array"),
        (httpx.Response(201, json=[{"service_notice": "thanks"}]), "neither"),
        (httpx.Response(201, json="1234"), "array of objects"),
        (httpx.Response(201, json=[{"service_request_id": {"id": 1}}]), "service_request_id"),
    ],
)
@respx.mock
async def test_answers_we_cannot_understand_are_permanent(answer, message):
    respx.post(REQUESTS).mock(return_value=answer)
    with pytest.raises(PermanentError, match=message):
        await send(delivery())


# -- polling: servicerequestupdates -------------------------------------------------------


def update(update_id, request_id, when, status="in_progress", description="On it"):
    return {
        "update_id": update_id,
        "service_request_id": request_id,
        "status": status,
        "updated_datetime": when,
        "description": description,
        "external_status_code": "X1",
    }


@respx.mock
async def test_first_poll_starts_at_the_earliest_delivery_and_keeps_only_ours():
    route = respx.get(UPDATES).respond(
        200,
        json={
            "service_request_updates": [
                update("u1", "1", "2026-11-25T10:00:00+00:00"),
                update("u2", "999", "2026-11-25T12:00:00Z"),  # not ours
                update("u3", 2, "2026-11-25T11:00:00+01:00", status="fixed", description=""),
            ]
        },
    )
    items = [tracked("1", n=1), tracked("2", n=2, delivered=CREATED - timedelta(hours=2))]
    result = await poll(items, jurisdiction_id="j")
    assert dict(route.calls.last.request.url.params) == {
        "api_key": "k3y",
        "jurisdiction_id": "j",
        "start_date": "2026-11-25T07:30:00Z",
    }
    assert [(u.remote_reference, u.update_id, u.status, u.description) for u in result.updates] == [
        ("1", "u1", "in_progress", "On it"),
        ("2", "u3", "fixed", None),
    ]
    assert result.updates[1].updated_at == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert result.updates[0].updated_at.tzinfo is not None
    # The latest time seen, even on an update for someone else's request.
    assert result.cursor == "2026-11-25T12:00:00Z"
    assert result.references == {}


@respx.mock
async def test_the_cursor_advances_and_a_quiet_poll_keeps_it():
    route = respx.get(UPDATES)
    route.side_effect = [
        httpx.Response(200, json=[update("u1", "1", "2026-11-25T10:00:00Z")]),
        httpx.Response(200, json={"service_request_updates": []}),
        httpx.Response(200, json=[update("u1", "1", "2026-11-25T10:00:00Z")]),
    ]
    first = await poll([tracked("1")])
    assert first.cursor == "2026-11-25T10:00:00Z"
    quiet = await poll([tracked("1")], cursor=first.cursor)
    # Read from a little before the cursor, for an update written as we last read.
    assert route.calls.last.request.url.params["start_date"] == "2026-11-25T09:55:00Z"
    assert quiet.updates == []
    assert quiet.cursor == first.cursor
    again = await poll([tracked("1")], cursor=first.cursor)
    # Seen again from an inclusive start_date: the same change keeps the same id.
    assert [u.update_id for u in again.updates] == [u.update_id for u in first.updates]


@respx.mock
async def test_a_token_is_resolved_before_polling_and_read_from_its_delivery():
    respx.get(f"{BASE}/tokens/abc.json").respond(
        200, json=[{"service_request_id": "77", "token": "abc"}]
    )
    respx.get(f"{BASE}/tokens/def.json").respond(200, json=[{"token": "def"}])
    route = respx.get(UPDATES).respond(200, json=[update("u9", "77", "2026-11-25T09:45:00Z")])
    items = [
        tracked("token:abc", n=1),
        tracked("token:def", n=2),
        tracked("5", n=3, delivered=CREATED - timedelta(days=3)),
    ]
    result = await poll(items, cursor="2026-11-26T00:00:00Z")
    assert result.references == {uuid.UUID(int=1): "77"}
    assert route.calls.last.request.url.params["start_date"] == "2026-11-25T09:30:00Z"
    assert [(u.remote_reference, u.update_id) for u in result.updates] == [("77", "u9")]
    assert result.cursor == "2026-11-26T00:00:00Z"  # never moves back


@respx.mock
async def test_only_unresolved_tokens_means_no_update_call():
    respx.get(f"{BASE}/tokens/abc.json").respond(404)
    route = respx.get(UPDATES).respond(200, json=[])
    result = await poll([tracked("token:abc")])
    assert result.updates == []
    assert result.references == {}
    assert not route.called
    assert (await poll([])).updates == []


# -- polling: requests --------------------------------------------------------------------


def request_state(request_id, status="open", when="2026-11-25T10:00:00Z", notes="Logged"):
    return {
        "service_request_id": request_id,
        "status": status,
        "updated_datetime": when,
        "status_notes": notes,
    }


@respx.mock
async def test_requests_mode_asks_in_chunks_of_50_and_reports_current_states():
    ids = [str(n) for n in range(1, 121)]

    def answer(request: httpx.Request) -> httpx.Response:
        asked = request.url.params["service_request_id"].split(",")
        return httpx.Response(200, json=[request_state(i) for i in [*asked, "999"]])

    route = respx.get(REQUESTS).mock(side_effect=answer)
    result = await poll([tracked(i, n=int(i)) for i in ids], updates="requests")
    asked = [c.request.url.params["service_request_id"].split(",") for c in route.calls]
    assert [len(chunk) for chunk in asked] == [50, 50, 20]
    assert sorted(i for chunk in asked for i in chunk) == sorted(ids)
    assert route.calls.last.request.url.params["api_key"] == "k3y"
    assert len(result.updates) == 120  # not 999, which is not ours
    first = next(u for u in result.updates if u.remote_reference == "1")
    assert first.update_id == "1:open:2026-11-25T10:00:00Z"
    assert (first.status, first.description) == ("open", "Logged")
    assert first.updated_at == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert result.cursor is None


@respx.mock
async def test_requests_mode_ids_change_only_when_the_state_does():
    route = respx.get(REQUESTS)
    route.side_effect = [
        httpx.Response(200, json=[request_state("1")]),
        httpx.Response(200, json=[request_state("1")]),
        httpx.Response(
            200, json=[request_state("1", "closed", "2026-11-26T08:00:00+00:00", notes=None)]
        ),
    ]
    seen = [(await poll([tracked("1")], updates="requests")).updates[0] for _ in range(3)]
    assert seen[0].update_id == seen[1].update_id
    assert seen[2].update_id == "1:closed:2026-11-26T08:00:00+00:00"
    assert seen[2].description is None


@respx.mock
async def test_requests_mode_resolves_tokens_too():
    respx.get(f"{BASE}/tokens/abc.json").respond(200, json=[{"service_request_id": "7"}])
    route = respx.get(REQUESTS).respond(200, json=[request_state("7", "fixed")])
    result = await poll([tracked("token:abc")], updates="requests", cursor="ignored")
    assert route.calls.last.request.url.params["service_request_id"] == "7"
    assert result.references == {uuid.UUID(int=1): "7"}
    assert [u.status for u in result.updates] == ["fixed"]


# -- polling errors -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["servicerequestupdates", "requests"])
@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(503, headers={"Retry-After": "9"}), RetryableError),
        (httpx.Response(429), RetryableError),
        (httpx.Response(403, json=[{"code": 403, "description": "bad key"}]), PermanentError),
        (httpx.Response(200, text="junk"), PermanentError),
        (httpx.Response(200, json=[{"service_request_id": "1"}]), PermanentError),
        (httpx.Response(200, json=[update("u", "1", "yesterday")]), PermanentError),
        (httpx.Response(200, json=[request_state("1", when="yesterday")]), PermanentError),
    ],
)
@respx.mock
async def test_poll_errors_are_classified(mode, answer, error):
    respx.get(UPDATES).mock(return_value=answer)
    respx.get(REQUESTS).mock(return_value=answer)
    with pytest.raises(error):
        await poll([tracked("1")], updates=mode)


@respx.mock
async def test_an_update_without_its_id_is_permanent():
    item = update("", "1", "2026-11-25T10:00:00Z")
    respx.get(UPDATES).respond(200, json=[item])
    with pytest.raises(PermanentError, match="update_id"):
        await poll([tracked("1")])


@respx.mock
async def test_poll_transport_failures_and_token_errors_are_raised():
    respx.get(UPDATES).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(RetryableError, match="ConnectError"):
        await poll([tracked("1")])
    respx.get(f"{BASE}/tokens/abc.json").respond(403, json=[{"code": 403, "description": "no"}])
    with pytest.raises(PermanentError, match="403"):
        await poll([tracked("token:abc")])


def test_naive_times_are_taken_as_utc():
    assert parse_time("2026-11-25T10:00:00") == datetime(2026, 11, 25, 10, tzinfo=UTC)
