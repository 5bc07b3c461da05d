"""The http-json adapter: its outbound request field by field, and every error class (respx)."""

import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import respx

from app.adapters.base import Delivery, PermanentError, RetryableError, shareable_citizen
from app.adapters.http_json import HttpJsonAdapter, HttpJsonConfig
from app.catalogue import load_catalogue
from app.settings import SHIPPED_CONFIG_DIR

CATALOGUE = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": "http://bo.test"})
DISPATCH_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
CITIZEN = {
    "name": "Ann Example",
    "email": "ann@example.org",
    "phone": "01865 000000",
    "language": "cy",
    "accessibility_needs": "Large print",
}


def delivery(*, share: bool) -> Delivery:
    organisation = CATALOGUE.organisations["cherwell"]
    enquiry = {
        "service_code": "missed-bin",
        "description": "Bin missed again",
        "channel": "phone",
        "location": {"postcode": "OX16 1AA"},
        "attributes": {"bin_type": "food"},
        "citizen": CITIZEN,
        "consent": {"share_contact_details": share},
        "created_at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
    }
    return Delivery(
        dispatch_id=DISPATCH_ID,
        reference="K7Q-M4X-PB6",
        attempt=1,
        organisation=organisation,
        service_name="Missed bin collection",
        enquiry={k: v for k, v in enquiry.items() if k != "citizen"},
        citizen=shareable_citizen(enquiry, organisation),
    )


async def send(d: Delivery, **config):
    async with httpx.AsyncClient() as client:
        adapter = HttpJsonAdapter(
            config=HttpJsonConfig(type="http-json", base_url="http://bo.test/cherwell", **config),
            client=client,
            timeout=5,
        )
        return await adapter.deliver(d)


@respx.mock
async def test_payload_without_consent_carries_no_contact_details():
    route = respx.post("http://bo.test/cherwell/enquiries").respond(201, json={"id": "CH-1"})
    receipt = await send(delivery(share=False))
    assert receipt.remote_reference == "CH-1"
    request = route.calls.last.request
    assert request.headers["idempotency-key"] == str(DISPATCH_ID)
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {
        "reference": "K7Q-M4X-PB6",
        "dispatch_id": str(DISPATCH_ID),
        "service_code": "missed-bin",
        "service_name": "Missed bin collection",
        "description": "Bin missed again",
        "channel": "phone",
        "location": {"postcode": "OX16 1AA"},
        "attributes": {"bin_type": "food"},
        "submitted_at": "2026-11-25T09:30:00+00:00",
    }


@respx.mock
async def test_payload_with_consent_carries_the_citizen_and_the_api_key():
    route = respx.post("http://bo.test/cherwell/enquiries").respond(200, json={"id": 42})
    receipt = await send(delivery(share=True), api_key="s3cret")
    assert receipt.remote_reference == "42"
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer s3cret"
    assert json.loads(request.content)["citizen"] == CITIZEN


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409, 425, 429])
@respx.mock
async def test_server_side_and_transient_answers_are_retryable(status):
    respx.post("http://bo.test/cherwell/enquiries").respond(status, headers={"Retry-After": "7"})
    with pytest.raises(RetryableError) as caught:
        await send(delivery(share=False))
    assert caught.value.retry_after == 7
    assert str(status) in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
@respx.mock
async def test_other_client_errors_are_permanent(status):
    respx.post("http://bo.test/cherwell/enquiries").respond(status, text="nope")
    with pytest.raises(PermanentError, match=str(status)):
        await send(delivery(share=False))


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
@respx.mock
async def test_transport_failures_are_retryable(error):
    respx.post("http://bo.test/cherwell/enquiries").mock(side_effect=error)
    with pytest.raises(RetryableError, match=type(error).__name__):
        await send(delivery(share=False))


@respx.mock
async def test_retry_after_as_an_http_date():
    respx.post("http://bo.test/cherwell/enquiries").respond(
        503, headers={"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}
    )
    with pytest.raises(RetryableError) as caught:
        await send(delivery(share=False))
    assert caught.value.retry_after > 10_000


@respx.mock
async def test_success_without_json_is_permanent():
    respx.post("http://bo.test/cherwell/enquiries").respond(201, text="<html>ok</html>")
    with pytest.raises(PermanentError, match="not JSON"):
        await send(delivery(share=False))


def test_only_the_fields_an_agreement_lists_are_shared():
    limited = CATALOGUE.organisations["cherwell"].model_copy(update={"shares": ("name", "phone")})
    enquiry = {"citizen": CITIZEN, "consent": {"share_contact_details": True}}
    assert shareable_citizen(enquiry, limited) == {
        "name": "Ann Example",
        "phone": "01865 000000",
    }
    nothing = limited.model_copy(update={"shares": ()})
    assert shareable_citizen(enquiry, nothing) is None
    refused = {"citizen": CITIZEN, "consent": {"share_contact_details": False}}
    assert shareable_citizen(refused, limited) is None
