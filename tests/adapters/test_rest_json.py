"""The rest-json adapter: its request field by field, the OAuth2 token, every error class."""

import asyncio
import json
from dataclasses import replace
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from pydantic import ValidationError

from app.adapters import rest_json
from app.adapters.base import Delivery, PermanentError, RetryableError
from app.adapters.rest_json import RestJsonAdapter, RestJsonConfig
from app.catalogue.status import Status, canonical
from tests.adapters import factory
from tests.adapters.factory import CITIZEN, DISPATCH_ID

BASE = "http://bo.test/oxfordshire-county/api"
CASES = f"{BASE}/cases"
TOKEN_URL = "http://bo.test/oxfordshire-county/oauth/token"
SECRET = "client-s3cret"


def delivery(*, share: bool, shares=None, attempt=1, location=None, attributes=None) -> Delivery:
    return factory.delivery(
        "oxfordshire-county",
        citizen=CITIZEN,
        share=share,
        shares=shares,
        attempt=attempt,
        dispatch_id=DISPATCH_ID,
        service_name="Report a pothole",
        service_code="pothole",
        description="Deep pothole outside the school",
        channel="web",
        location=location if location is not None else {"postcode": "OX1 1BX", "uprn": 1},
        attributes=attributes if attributes is not None else {"size": "large"},
    )


def config(**overrides) -> RestJsonConfig:
    fields = {
        "type": "rest-json",
        "base_url": BASE,
        "token_url": TOKEN_URL,
        "client_id": "iap",
        "client_secret": SECRET,
        "scope": "cases:write",
    }
    return RestJsonConfig(**{**fields, **overrides})


async def send(*deliveries: Delivery, **overrides):
    """Deliver each in turn through one adapter (so one token cache); the last receipt."""
    async with httpx.AsyncClient() as client:
        adapter = RestJsonAdapter(config=config(**overrides), client=client, timeout=5)
        receipt = None
        for d in deliveries:
            receipt = await adapter.deliver(d)
        return receipt


def token_route(*tokens: str, expires_in=300):
    answers = [
        httpx.Response(
            200, json={"access_token": t, "token_type": "Bearer", "expires_in": expires_in}
        )
        for t in tokens or ("tok-1",)
    ]
    return respx.post(TOKEN_URL).mock(side_effect=answers)


def sent_json(route, index=-1):
    return json.loads(route.calls[index].request.content)


# -- the outbound request ------------------------------------------------------------------


@respx.mock
async def test_without_consent_the_case_carries_no_citizen_at_all():
    tokens = token_route("tok-1")
    cases = respx.post(CASES).respond(201, json={"id": "OCC-000123", "status": "new"})
    receipt = await send(delivery(share=False))
    assert receipt.remote_reference == "OCC-000123"
    request = cases.calls.last.request
    assert request.headers["idempotency-key"] == str(DISPATCH_ID)
    assert request.headers["authorization"] == "Bearer tok-1"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "reference": "K7Q-M4X-PB6",
        "dispatch_id": str(DISPATCH_ID),
        "service_code": "pothole",
        "service_name": "Report a pothole",
        "description": "Deep pothole outside the school",
        "channel": "web",
        "location": {"postcode": "OX1 1BX", "uprn": 1},
        "attributes": {"size": "large"},
        "submitted_at": "2026-11-25T09:30:00+00:00",
    }
    for value in CITIZEN.values():
        assert value.encode() not in request.content
    assert tokens.call_count == 1


@respx.mock
async def test_the_token_request_is_client_credentials_in_the_form():
    tokens = token_route("tok-1")
    respx.post(CASES).respond(201, json={"id": "OCC-1"})
    await send(delivery(share=False))
    request = tokens.calls.last.request
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "authorization" not in request.headers
    assert parse_qs(request.content.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["iap"],
        "client_secret": [SECRET],
        "scope": ["cases:write"],
    }


@respx.mock
async def test_no_scope_is_sent_when_none_is_configured():
    tokens = token_route("tok-1")
    respx.post(CASES).respond(201, json={"id": "OCC-1"})
    await send(delivery(share=False), scope=None)
    assert "scope" not in parse_qs(tokens.calls.last.request.content.decode())


@respx.mock
async def test_with_consent_the_case_carries_every_shared_field():
    token_route()
    cases = respx.post(CASES).respond(201, json={"id": "OCC-1"})
    await send(delivery(share=True))
    assert sent_json(cases)["citizen"] == CITIZEN


@respx.mock
async def test_a_narrow_agreement_sends_only_its_fields():
    token_route()
    cases = respx.post(CASES).respond(201, json={"id": "OCC-1"})
    await send(delivery(share=True, shares=("email",)))
    body = sent_json(cases)
    assert body["citizen"] == {"email": "ann@example.org"}


@respx.mock
async def test_an_agreement_sharing_nothing_sends_no_citizen():
    token_route()
    cases = respx.post(CASES).respond(201, json={"id": "OCC-1"})
    await send(delivery(share=True, shares=()))
    assert "citizen" not in sent_json(cases)


@respx.mock
async def test_no_location_and_list_attributes_are_sent_as_they_are():
    token_route()
    cases = respx.post(CASES).respond(201, json={"id": "OCC-1"})
    attributes = {"hazards": ["glass", "oil"], "depth_cm": 12, "on_bus_route": True}
    d = delivery(share=False, attributes=attributes)
    await send(replace(d, enquiry=replace(d.enquiry, location=None)))
    body = sent_json(cases)
    assert body["location"] is None
    assert body["attributes"] == attributes


# -- 200 and 201, and the repeat after an ambiguous failure ------------------------------


@pytest.mark.parametrize("status", [200, 201])
@respx.mock
async def test_new_and_already_seen_cases_are_both_success(status):
    token_route()
    respx.post(CASES).respond(status, json={"id": 123, "status": "new"})
    receipt = await send(delivery(share=False))
    assert receipt.remote_reference == "123"


# -- the token: cached, one fetch at a time, renewed on a 401 ----------------------------


@respx.mock
async def test_one_token_serves_two_deliveries():
    tokens = token_route("tok-1", "tok-2")
    cases = respx.post(CASES).respond(201, json={"id": "OCC-1"})
    await send(delivery(share=False), delivery(share=False))
    assert tokens.call_count == 1
    assert cases.call_count == 2
    assert {c.request.headers["authorization"] for c in cases.calls} == {"Bearer tok-1"}


@respx.mock
async def test_concurrent_deliveries_wait_for_one_token_fetch():
    issued = iter(["tok-1", "tok-2"])

    async def slow_token_endpoint(request):
        # Give the other deliveries their turn while the token is on its way.
        for _ in range(5):
            await asyncio.sleep(0)
        return httpx.Response(200, json={"access_token": next(issued), "expires_in": 300})

    tokens = respx.post(TOKEN_URL).mock(side_effect=slow_token_endpoint)
    cases = respx.post(CASES).respond(201, json={"id": "OCC-1"})
    async with httpx.AsyncClient() as client:
        adapter = RestJsonAdapter(config=config(), client=client, timeout=5)
        await asyncio.gather(*(adapter.deliver(delivery(share=False)) for _ in range(5)))
    assert tokens.call_count == 1
    assert cases.call_count == 5
    assert {c.request.headers["authorization"] for c in cases.calls} == {"Bearer tok-1"}


@respx.mock
async def test_the_token_is_renewed_30_seconds_before_it_expires(monkeypatch):
    tokens = token_route("tok-1", "tok-2", expires_in=300)
    cases = respx.post(CASES).respond(201, json={"id": "OCC-1"})
    clock = [1000.0]
    monkeypatch.setattr(rest_json, "monotonic", lambda: clock[0])
    async with httpx.AsyncClient() as client:
        adapter = RestJsonAdapter(config=config(), client=client, timeout=5)
        await adapter.deliver(delivery(share=False))
        clock[0] = 1000.0 + 269
        await adapter.deliver(delivery(share=False))
        assert tokens.call_count == 1
        clock[0] = 1000.0 + 271
        await adapter.deliver(delivery(share=False))
    assert tokens.call_count == 2
    assert cases.calls.last.request.headers["authorization"] == "Bearer tok-2"


@respx.mock
async def test_a_token_without_expires_in_is_kept_until_refused():
    tokens = respx.post(TOKEN_URL).respond(200, json={"access_token": "tok-1"})
    respx.post(CASES).respond(201, json={"id": "OCC-1"})
    await send(delivery(share=False), delivery(share=False))
    assert tokens.call_count == 1


@respx.mock
async def test_a_401_drops_the_token_and_retries_exactly_once_with_a_new_one():
    tokens = token_route("tok-1", "tok-2")
    cases = respx.post(CASES).mock(
        side_effect=[httpx.Response(401), httpx.Response(201, json={"id": "OCC-9"})]
    )
    receipt = await send(delivery(share=False))
    assert receipt.remote_reference == "OCC-9"
    assert tokens.call_count == 2
    assert [c.request.headers["authorization"] for c in cases.calls] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]
    first, second = (call.request for call in cases.calls)
    assert first.content == second.content
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]


@respx.mock
async def test_a_late_401_for_the_old_token_keeps_the_one_already_renewed():
    b_sent_the_old_token, renewed = asyncio.Event(), asyncio.Event()
    issued = iter(["tok-1", "tok-2", "tok-3"])

    async def token_endpoint(request):
        token = next(issued)
        if token == "tok-2":
            renewed.set()
        return httpx.Response(200, json={"access_token": token, "expires_in": 300})

    async def county(request):
        if request.headers["authorization"] != "Bearer tok-1":
            return httpx.Response(201, json={"id": "OCC-1"})
        if not b_sent_the_old_token.is_set() and request.content.startswith(b'{"reference":"A'):
            await b_sent_the_old_token.wait()  # A's refusal arrives after B sent tok-1 too
        else:
            b_sent_the_old_token.set()
            await renewed.wait()  # B's refusal arrives after A renewed the token
        return httpx.Response(401)

    tokens = respx.post(TOKEN_URL).mock(side_effect=token_endpoint)
    cases = respx.post(CASES).mock(side_effect=county)
    a, b = (
        replace(d, enquiry=replace(d.enquiry, reference=reference))
        for d, reference in ((delivery(share=False), "A"), (delivery(share=False), "B"))
    )
    async with httpx.AsyncClient() as client:
        adapter = RestJsonAdapter(config=config(), client=client, timeout=5)
        await asyncio.gather(adapter.deliver(a), adapter.deliver(b))
    assert tokens.call_count == 2
    assert cases.call_count == 4


@respx.mock
async def test_a_second_401_is_permanent_and_not_retried_again():
    tokens = token_route("tok-1", "tok-2", "tok-3")
    cases = respx.post(CASES).respond(401)
    with pytest.raises(PermanentError, match="401"):
        await send(delivery(share=False))
    assert cases.call_count == 2
    assert tokens.call_count == 2


@respx.mock
async def test_after_a_renewal_the_next_delivery_uses_the_new_token():
    tokens = token_route("tok-1", "tok-2")
    cases = respx.post(CASES).mock(
        side_effect=[
            httpx.Response(401),
            httpx.Response(201, json={"id": "OCC-1"}),
            httpx.Response(201, json={"id": "OCC-2"}),
        ]
    )
    await send(delivery(share=False), delivery(share=False))
    assert tokens.call_count == 2
    assert cases.calls.last.request.headers["authorization"] == "Bearer tok-2"


@pytest.mark.parametrize("status", [400, 401])
@respx.mock
async def test_the_token_endpoint_refusing_our_credentials_is_permanent(status):
    respx.post(TOKEN_URL).respond(status, json={"error": "invalid_client"})
    cases = respx.post(CASES).respond(201, json={"id": "OCC-1"})
    with pytest.raises(PermanentError, match="rejected our client credentials") as caught:
        await send(delivery(share=False))
    assert SECRET not in str(caught.value)
    assert cases.call_count == 0


@pytest.mark.parametrize("status", [500, 503, 429])
@respx.mock
async def test_the_token_endpoint_failing_is_retryable(status):
    respx.post(TOKEN_URL).respond(status, headers={"Retry-After": "11"})
    with pytest.raises(RetryableError) as caught:
        await send(delivery(share=False))
    assert caught.value.retry_after == 11


@respx.mock
async def test_the_token_endpoint_unreachable_is_retryable():
    respx.post(TOKEN_URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(RetryableError, match="ConnectError"):
        await send(delivery(share=False))


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json={"token_type": "Bearer"}), "without an access_token"),
        (httpx.Response(200, json=["tok"]), "without an access_token"),
        (httpx.Response(200, json={"access_token": "t", "token_type": "MAC"}), "other than"),
    ],
)
@respx.mock
async def test_a_token_answer_we_cannot_use_is_permanent(answer, complaint):
    respx.post(TOKEN_URL).mock(return_value=answer)
    with pytest.raises(PermanentError, match=complaint):
        await send(delivery(share=False))


# -- without OAuth -------------------------------------------------------------------------


@respx.mock
async def test_without_a_token_url_the_api_key_is_the_bearer():
    cases = respx.post(CASES).respond(201, json={"id": "OCC-1"})
    await send(delivery(share=False), token_url=None, client_id=None, client_secret=None)
    assert "authorization" not in cases.calls.last.request.headers
    await send(delivery(share=False), token_url=None, api_key="k3y")
    assert cases.calls.last.request.headers["authorization"] == "Bearer k3y"


@respx.mock
async def test_without_oauth_a_401_is_permanent_at_once():
    cases = respx.post(CASES).respond(401)
    with pytest.raises(PermanentError, match="401"):
        await send(delivery(share=False), token_url=None, api_key="k3y")
    assert cases.call_count == 1


def test_a_token_url_needs_client_credentials_and_secrets_stay_hidden():
    with pytest.raises(ValidationError, match="client_id and client_secret"):
        config(client_secret=None)
    with pytest.raises(ValidationError, match="extra"):
        config(password="x")
    assert SECRET not in repr(config())


# -- the county's answers ------------------------------------------------------------------


@respx.mock
async def test_retry_after_as_an_http_date():
    token_route()
    respx.post(CASES).respond(503, headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    with pytest.raises(RetryableError) as caught:
        await send(delivery(share=False))
    assert caught.value.retry_after > 10_000


@respx.mock
async def test_a_refusal_names_the_problem_but_never_echoes_the_citizen():
    token_route()
    problem = {
        "type": "https://county.example/problems/invalid",
        "title": "Invalid case",
        "detail": "citizen.email 'ann@example.org' is not allowed",
    }
    respx.post(CASES).respond(422, json=problem)
    with pytest.raises(PermanentError) as caught:
        await send(delivery(share=True))
    assert str(caught.value) == "HTTP 422 from bo.test: Invalid case"


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (httpx.Response(201, text="<html>ok</html>"), "not JSON"),
        (httpx.Response(201, json={"status": "new"}), "without a case id"),
        (httpx.Response(201, json=[{"id": "OCC-1"}]), "without a case id"),
        (httpx.Response(200, json={"id": ""}), "without a case id"),
    ],
)
@respx.mock
async def test_a_success_we_cannot_read_is_permanent(answer, complaint):
    token_route()
    respx.post(CASES).mock(return_value=answer)
    with pytest.raises(PermanentError, match=complaint):
        await send(delivery(share=False))


# -- status words ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("new", Status.acknowledged),
        ("assigned", Status.acknowledged),
        ("in_progress", Status.in_progress),
        ("scheduled", Status.action_scheduled),
        ("completed", Status.resolved),
        ("closed", Status.closed),
        ("rejected", Status.not_our_responsibility),
        ("duplicate", Status.duplicate),
        ("withdrawn", Status.withdrawn),
        ("reopened", Status.reopened),
    ],
)
def test_the_countys_status_words(word, status):
    assert canonical(word, RestJsonAdapter.status_words) is status


def test_the_county_pushes_so_the_adapter_does_not_poll():
    assert RestJsonAdapter.can_poll is False
