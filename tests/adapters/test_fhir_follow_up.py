"""The fhir adapter's follow-ups, field by field and valid R4: a Communication created once, a
version-aware revoke, a ServiceRequest that replaces the completed one; every error class."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace

import httpx
import pytest
import respx
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.servicerequest import ServiceRequest

from app.adapters.base import FollowUp, PermanentError, RetryableError
from app.adapters.fhir import NOTE_AUTHOR, FhirAdapter, FhirConfig
from app.core.vocabulary import MessageKind
from tests.adapters import factory
from tests.adapters.factory import FOLLOW_UP_ID

BASE = "http://bo.test/nhs-bob-icb/fhir"
SR = f"{BASE}/ServiceRequest/sr-7"
CONDITION = f"identifier=urn:iap:follow-up|{FOLLOW_UP_ID}"
WHEN = "2026-11-25T09:30:00+00:00"
CURRENT = {
    "resourceType": "ServiceRequest",
    "id": "sr-7",
    "meta": {"versionId": "2", "lastUpdated": "2026-11-26T10:00:00.000+00:00"},
    "identifier": [{"system": "urn:iap:enquiry-reference", "value": "K7Q-M4X-PB6"}],
    "status": "active",
    "intent": "order",
    "subject": {"display": "Citizen (details withheld)"},
    "note": [{"authorString": NOTE_AUTHOR, "text": "Cannot register with a GP"}],
}


def follow_up(**fields) -> FollowUp:
    return factory.follow_up(
        "nhs-bob-icb",
        remote_reference="sr-7",
        service_name="GP registration problem",
        description="Cannot register with a GP in Banbury",
        **fields,
    )


async def send(item: FollowUp, **config):
    settings = FhirConfig(**{"type": "fhir", "base_url": BASE, "bearer_token": "t0k", **config})
    async with httpx.AsyncClient() as client:
        return await FhirAdapter(config=settings, client=client, timeout=5).follow_up(item)


def sent(route, index=-1) -> dict:
    return json.loads(route.calls[index].request.content)


@respx.mock
async def test_information_is_a_communication_based_on_the_service_request():
    made = respx.post(f"{BASE}/Communication").respond(
        201, json={"resourceType": "Communication", "id": "comm-3"}
    )
    files = (
        factory.attachment_file(factory.photo(size=(40, 30)), number=1),
        factory.attachment_file(factory.photo(size=(20, 10)), number=2),
    )
    receipt = await send(follow_up(attachments=files))
    assert (receipt.remote_reference, receipt.case_reference) == ("comm-3", None)
    request = made.calls.last.request
    assert request.headers["if-none-exist"] == CONDITION
    assert request.headers["content-type"] == "application/fhir+json"
    assert request.headers["authorization"] == "Bearer t0k"
    body = sent(made)
    Communication.model_validate(body)
    assert body["identifier"] == [{"system": "urn:iap:follow-up", "value": str(FOLLOW_UP_ID)}]
    assert body["status"] == "completed"
    assert body["basedOn"] == [{"reference": "ServiceRequest/sr-7"}]
    assert body["sent"].startswith("2026-11-25T09:30:00")
    [text, *attachments] = body["payload"]
    assert text == {"contentString": "The pothole is on the north side, by the bus stop"}
    for part, file in zip(attachments, files, strict=True):
        attachment = part["contentAttachment"]
        assert attachment == {
            "contentType": "image/jpeg",
            "data": base64.b64encode(file.content).decode(),
            "title": file.filename,
            "size": len(file.content),
            "hash": base64.b64encode(hashlib.sha1(file.content).digest()).decode(),
        }


@respx.mock
async def test_the_communications_subject_is_the_deliverys():
    made = respx.post(f"{BASE}/Communication").respond(
        201, json={"resourceType": "Communication", "id": "comm-3"}
    )
    await send(follow_up(citizen={"name": "Ann Example", "email": "ann@example.org"}))
    body = sent(made)
    assert body["subject"] == {"reference": "#citizen"}
    [patient] = body["contained"]
    assert patient["resourceType"] == "Patient"
    assert patient["name"] == [{"text": "Ann Example"}]


@respx.mock
async def test_a_repeated_communication_finds_the_first_by_its_condition():
    made = respx.post(f"{BASE}/Communication").respond(
        200,
        json={"resourceType": "Communication", "id": "comm-3"},
        headers={"Location": f"{BASE}/Communication/comm-3/_history/1"},
    )
    receipt = await send(follow_up(attempt=2))
    assert receipt.remote_reference == "comm-3"
    assert made.calls.last.request.headers["if-none-exist"] == CONDITION


@respx.mock
async def test_the_communications_id_may_come_from_its_location():
    respx.post(f"{BASE}/Communication").respond(
        201, headers={"Location": f"{BASE}/Communication/comm-9/_history/1"}
    )
    assert (await send(follow_up())).remote_reference == "comm-9"


@respx.mock
async def test_a_withdrawal_revokes_the_version_just_read():
    read = respx.get(SR).respond(200, json=CURRENT, headers={"ETag": 'W/"2"'})
    put = respx.put(SR).respond(
        200, json={**CURRENT, "status": "revoked", "meta": {"versionId": "3"}}
    )
    receipt = await send(follow_up(kind=MessageKind.withdrawal, text="Sorted it myself"))
    assert receipt.remote_reference == "sr-7/_history/3"
    assert read.call_count == 1
    request = put.calls.last.request
    assert request.headers["if-match"] == 'W/"2"'
    assert request.headers["content-type"] == "application/fhir+json"
    body = sent(put)
    ServiceRequest.model_validate(body)
    assert body["status"] == "revoked"
    assert (body["id"], body["identifier"], body["intent"]) == (
        "sr-7",
        CURRENT["identifier"],
        "order",
    )
    assert body["note"][0] == CURRENT["note"][0]
    assert body["note"][-1]["authorString"] == NOTE_AUTHOR
    assert body["note"][-1]["text"] == "Sorted it myself"
    assert body["note"][-1]["time"].startswith("2026-11-25T09:30:00")


@respx.mock
async def test_without_an_etag_the_version_comes_from_meta():
    respx.get(SR).respond(200, json=CURRENT)
    put = respx.put(SR).respond(200, json={**CURRENT, "status": "revoked"})
    await send(follow_up(kind=MessageKind.withdrawal))
    assert put.calls.last.request.headers["if-match"] == 'W/"2"'


@respx.mock
async def test_a_repeated_withdrawal_that_finds_it_revoked_puts_nothing():
    respx.get(SR).respond(200, json={**CURRENT, "status": "revoked", "meta": {"versionId": "3"}})
    put = respx.put(SR).respond(200, json=CURRENT)
    receipt = await send(follow_up(kind=MessageKind.withdrawal, attempt=2))
    assert receipt.remote_reference == "sr-7/_history/3"
    assert put.call_count == 0


@respx.mock
async def test_a_stale_version_is_read_again_on_the_next_attempt():
    respx.get(SR).respond(200, json=CURRENT, headers={"ETag": 'W/"2"'})
    respx.put(SR).respond(
        412,
        json={
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "conflict"}],
        },
    )
    with pytest.raises(RetryableError) as raised:
        await send(follow_up(kind=MessageKind.withdrawal))
    assert "changed since it was read" in str(raised.value)


@pytest.mark.parametrize("status", ["completed", "entered-in-error"])
@respx.mock
async def test_a_request_that_is_over_cannot_be_revoked(status):
    respx.get(SR).respond(200, json={**CURRENT, "status": status})
    with pytest.raises(PermanentError):
        await send(follow_up(kind=MessageKind.withdrawal))


@respx.mock
async def test_a_reopening_is_a_new_request_that_replaces_the_completed_one():
    made = respx.post(f"{BASE}/ServiceRequest").respond(
        201, json={"resourceType": "ServiceRequest", "id": "sr-8"}
    )
    receipt = await send(follow_up(kind=MessageKind.reopening, text="Still not registered"))
    assert (receipt.remote_reference, receipt.case_reference) == ("sr-8", "sr-8")
    request = made.calls.last.request
    assert request.headers["if-none-exist"] == CONDITION
    body = sent(made)
    ServiceRequest.model_validate(body)
    assert body["replaces"] == [{"reference": "ServiceRequest/sr-7"}]
    assert body["identifier"] == [{"system": "urn:iap:follow-up", "value": str(FOLLOW_UP_ID)}]
    assert (body["status"], body["intent"]) == ("active", "order")
    assert body["code"] == {"text": "GP registration problem"}
    assert body["authoredOn"].startswith("2026-11-25T09:30:00")
    assert body["note"][0]["text"] == "Cannot register with a GP in Banbury"
    assert body["note"][-1] == {
        "authorString": NOTE_AUTHOR,
        "time": body["note"][-1]["time"],
        "text": "Still not registered",
    }


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, RetryableError), (429, RetryableError), (400, PermanentError), (404, PermanentError)],
)
@respx.mock
async def test_answers_are_classified_as_for_a_delivery(status, error):
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "diagnostics": "payload: bad"}],
    }
    respx.post(f"{BASE}/Communication").respond(status, json=outcome)
    with pytest.raises(error) as raised:
        await send(follow_up(text="Ann Example rang"))
    assert "Ann Example" not in str(raised.value)


@respx.mock
async def test_several_communications_with_our_identifier_are_refused():
    respx.post(f"{BASE}/Communication").respond(412)
    with pytest.raises(PermanentError):
        await send(follow_up())


@respx.mock
async def test_a_timeout_is_retryable_and_ambiguous():
    respx.post(f"{BASE}/Communication").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RetryableError) as raised:
        await send(follow_up())
    assert raised.value.ambiguous


async def test_an_invalid_resource_never_leaves():
    # A content type is a FHIR code, which cannot start with a space: refused before sending.
    odd = replace(factory.attachment_file(), content_type=" image/jpeg")
    with respx.mock(assert_all_called=False) as router:
        made = router.post(f"{BASE}/Communication").respond(201)
        with pytest.raises(PermanentError) as raised:
            await send(follow_up(attachments=(odd,)))
    assert made.call_count == 0
    assert "not valid FHIR R4: payload.1.contentAttachment.contentType" in str(raised.value)
