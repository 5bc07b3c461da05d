"""The fhir adapter: its ServiceRequest field by field (valid R4), every error class, polling."""

import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import respx
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest

from app.adapters.base import Delivery, PermanentError, RetryableError, Tracked
from app.adapters.fhir import NOTE_AUTHOR, FhirAdapter, FhirConfig
from app.catalogue.status import FHIR_WORDS
from tests.adapters import factory

BASE = "http://bo.test/nhs-bob-icb/fhir"
SERVICE_REQUEST = f"{BASE}/ServiceRequest"
DISPATCH_ID = uuid.UUID("00000000-0000-4000-8000-000000000002")
CITIZEN = {
    **factory.CITIZEN,
    "preferred_contact": "phone",
    "accessibility_needs": "Needs a BSL interpreter",
}
CREATED = {
    "resourceType": "ServiceRequest",
    "id": "sr-1",
    "meta": {"versionId": "1", "lastUpdated": "2026-11-25T09:30:01Z"},
    "status": "active",
    "intent": "order",
    "subject": {"display": "Citizen (details withheld)"},
}


def delivery(*, share: bool, shares=None, attempt=1, citizen=None, attributes=None) -> Delivery:
    return factory.delivery(
        "nhs-bob-icb",
        citizen=citizen or CITIZEN,
        share=share,
        shares=shares,
        attempt=attempt,
        dispatch_id=DISPATCH_ID,
        service_name="GP registration problem",
        service_code="gp-registration",
        description="Cannot register with a GP in Banbury",
        channel="phone",
        location={"postcode": "OX16 1AA", "address": "1 High Street"},
        attributes=attributes if attributes is not None else {"practice": "Horsefair"},
    )


def adapter(client, **overrides) -> FhirAdapter:
    config = FhirConfig(**{"type": "fhir", "base_url": BASE, **overrides})
    return FhirAdapter(config=config, client=client, timeout=5)


async def send(d: Delivery, **overrides):
    async with httpx.AsyncClient() as client:
        return await adapter(client, **overrides).deliver(d)


async def poll(tracked, **overrides):
    async with httpx.AsyncClient() as client:
        return await adapter(client, **overrides).poll(tracked, cursor=None)


def created(status=201, body=CREATED, **headers):
    location = {"Location": f"{SERVICE_REQUEST}/sr-1/_history/1"}
    return respx.post(SERVICE_REQUEST).respond(status, json=body, headers={**location, **headers})


def sent(route) -> dict:
    return json.loads(route.calls.last.request.content)


def our_note(text):
    return {"authorString": NOTE_AUTHOR, "text": text}


# -- the outbound ServiceRequest -----------------------------------------------------------


@respx.mock
async def test_without_consent_the_request_names_no_one_and_contains_no_patient():
    route = created()
    receipt = await send(delivery(share=False))
    assert receipt.remote_reference == "sr-1"
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/fhir+json"
    assert request.headers["accept"] == "application/fhir+json"
    assert request.headers["if-none-exist"] == "identifier=urn:iap:enquiry-reference|K7Q-M4X-PB6"
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "urn:iap:enquiry-reference", "value": "K7Q-M4X-PB6"}],
        "status": "active",
        "intent": "order",
        "code": {"text": "GP registration problem"},
        "subject": {"display": "Citizen (details withheld)"},
        "authoredOn": "2026-11-25T09:30:00Z",
        "note": [
            our_note("Cannot register with a GP in Banbury"),
            our_note("practice: Horsefair"),
        ],
    }
    for value in (*CITIZEN.values(), "OX16 1AA", "1 High Street"):
        assert value.encode() not in request.content


@respx.mock
async def test_the_body_sent_validates_as_an_r4_service_request():
    route = created()
    await send(delivery(share=True))
    resource = ServiceRequest.model_validate_json(route.calls.last.request.content)
    assert resource.intent == "order"
    assert resource.subject.reference == "#citizen"
    patient = resource.contained[0]
    assert isinstance(patient, Patient)
    assert patient.id == "citizen"


@respx.mock
async def test_with_consent_a_contained_patient_holds_name_telecom_and_language_only():
    route = created()
    await send(delivery(share=True))
    body = sent(route)
    assert body["subject"] == {"reference": "#citizen"}
    assert body["contained"] == [
        {
            "resourceType": "Patient",
            "id": "citizen",
            "name": [{"text": "Ann Example"}],
            "telecom": [
                {"system": "email", "value": "ann@example.org"},
                {"system": "phone", "value": "01865 000000"},
            ],
            "communication": [
                {
                    "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "cy"}]},
                    "preferred": True,
                }
            ],
        }
    ]
    assert b"BSL" not in route.calls.last.request.content


@respx.mock
async def test_a_narrow_agreement_puts_only_its_fields_in_the_patient():
    route = created()
    await send(delivery(share=True, shares=("email",)))
    body = sent(route)
    assert body["contained"] == [
        {
            "resourceType": "Patient",
            "id": "citizen",
            "telecom": [{"system": "email", "value": "ann@example.org"}],
        }
    ]
    ServiceRequest.model_validate_json(route.calls.last.request.content)


@pytest.mark.parametrize("shares", [(), ("accessibility_needs", "preferred_contact")])
@respx.mock
async def test_nothing_a_patient_could_hold_means_no_patient(shares):
    route = created()
    await send(delivery(share=True, shares=shares))
    body = sent(route)
    assert "contained" not in body
    assert body["subject"] == {"display": "Citizen (details withheld)"}
    assert b"BSL" not in route.calls.last.request.content


@respx.mock
async def test_attributes_become_note_lines_and_none_makes_no_second_note():
    route = created()
    attributes = {"practice": "Horsefair", "urgent": True, "weeks": 3, "tried": ["phone", "web"]}
    await send(delivery(share=False, attributes=attributes))
    assert sent(route)["note"][1] == our_note(
        "practice: Horsefair\nurgent: yes\nweeks: 3\ntried: phone, web"
    )
    await send(delivery(share=False, attributes={}))
    assert sent(route)["note"] == [our_note("Cannot register with a GP in Banbury")]


@respx.mock
async def test_the_bearer_token_and_identifier_system_come_from_config():
    route = created()
    await send(
        delivery(share=False), bearer_token="t0ken", identifier_system="https://iap.test/ref"
    )
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer t0ken"
    assert request.headers["if-none-exist"] == "identifier=https://iap.test/ref|K7Q-M4X-PB6"
    assert sent(route)["identifier"] == [{"system": "https://iap.test/ref", "value": "K7Q-M4X-PB6"}]


@respx.mock
async def test_a_request_that_would_not_validate_is_not_sent_and_names_no_value():
    route = created()
    citizen = {**CITIZEN, "language": "cy  gb"}
    with pytest.raises(PermanentError, match="not valid FHIR R4") as caught:
        await send(delivery(share=True, citizen=citizen))
    assert "cy  gb" not in str(caught.value)
    assert "contained.0.communication" in str(caught.value)
    assert route.call_count == 0


# -- 200 and 201, and the repeat after an ambiguous failure ------------------------------


@pytest.mark.parametrize("status", [200, 201])
@respx.mock
async def test_created_and_already_existing_are_both_success(status):
    created(status)
    receipt = await send(delivery(share=False))
    assert receipt.remote_reference == "sr-1"


@respx.mock
async def test_without_a_body_the_id_comes_from_the_location_header():
    respx.post(SERVICE_REQUEST).respond(
        201, headers={"Location": f"{SERVICE_REQUEST}/sr-42/_history/1"}
    )
    assert (await send(delivery(share=False))).remote_reference == "sr-42"


# -- the server's answers ------------------------------------------------------------------


@respx.mock
async def test_several_matches_for_the_condition_is_permanent():
    respx.post(SERVICE_REQUEST).respond(412)
    with pytest.raises(PermanentError, match=r"412.*several ServiceRequests"):
        await send(delivery(share=False))


@pytest.mark.parametrize(
    ("status", "error"), [(422, PermanentError), (503, RetryableError), (412, PermanentError)]
)
@respx.mock
async def test_an_operation_outcome_is_summarised_by_its_first_issue(status, error):
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "ServiceRequest.code: required",
            },
            {"severity": "error", "code": "invalid", "diagnostics": "second issue"},
        ],
    }
    respx.post(SERVICE_REQUEST).respond(status, json=outcome)
    with pytest.raises(error) as caught:
        await send(delivery(share=False))
    assert str(caught.value).startswith(
        f"HTTP {status} from bo.test: ServiceRequest.code: required"
    )
    assert "second issue" not in str(caught.value)


@respx.mock
async def test_an_operation_outcome_without_diagnostics_gives_its_code():
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "forbidden"}],
    }
    respx.post(SERVICE_REQUEST).respond(403, json=outcome)
    with pytest.raises(PermanentError) as caught:
        await send(delivery(share=False))
    assert str(caught.value) == "HTTP 403 from bo.test: forbidden"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(201, text="<html>ok</html>"),
        httpx.Response(201, json={"resourceType": "OperationOutcome", "issue": []}),
        httpx.Response(201, json={"resourceType": "ServiceRequest"}),
        httpx.Response(201, json=[CREATED]),
        httpx.Response(201, json={}, headers={"Location": f"{BASE}/Patient/p1"}),
    ],
)
@respx.mock
async def test_a_success_without_an_id_we_can_read_is_permanent(answer):
    respx.post(SERVICE_REQUEST).mock(return_value=answer)
    with pytest.raises(PermanentError, match="without a ServiceRequest id"):
        await send(delivery(share=False))


# -- polling -------------------------------------------------------------------------------


def tracked(*ids):
    at = datetime(2026, 11, 25, 10, tzinfo=UTC)
    return [Tracked(uuid.uuid4(), "K7Q-M4X-PB6", remote_reference=i, delivered_at=at) for i in ids]


def version(resource_id, v="2", status="active", updated="2026-11-26T10:00:00+01:00", notes=()):
    resource = {
        "resourceType": "ServiceRequest",
        "id": resource_id,
        "meta": {"versionId": v, "lastUpdated": updated},
        "status": status,
        "intent": "order",
        "subject": {"display": "Citizen (details withheld)"},
    }
    if notes:
        resource["note"] = list(notes)
    return resource


def searchset(*resources, link=()):
    entries = [{"fullUrl": f"{SERVICE_REQUEST}/{r['id']}", "resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries, "link": list(link)}


def echo_search(request):
    """A server holding every ServiceRequest asked for, each at version 3, completed."""
    ids = request.url.params["_id"].split(",")
    return httpx.Response(200, json=searchset(*(version(i, "3", "completed") for i in ids)))


@respx.mock
async def test_poll_asks_in_chunks_of_50_and_reports_every_tracked_request():
    route = respx.get(SERVICE_REQUEST).mock(side_effect=echo_search)
    ids = [f"sr-{n}" for n in range(120)]
    result = await poll(tracked(*ids, "sr-0"), bearer_token="t0ken")
    asked = [call.request.url.params["_id"].split(",") for call in route.calls]
    assert [len(chunk) for chunk in asked] == [50, 50, 20]
    assert [i for chunk in asked for i in chunk] == ids
    request = route.calls.last.request
    assert request.headers["accept"] == "application/fhir+json"
    assert request.headers["authorization"] == "Bearer t0ken"
    assert [u.remote_reference for u in result.updates] == ids
    assert {u.status for u in result.updates} == {"completed"}
    assert result.cursor is None
    assert result.references == {}


@respx.mock
async def test_an_update_is_the_version_verbatim_with_the_icbs_last_note():
    notes = [
        our_note("Cannot register with a GP in Banbury"),
        {"text": "Passed to primary care team"},
        {"authorString": "Dr Who", "text": "Practice will call back"},
    ]
    respx.get(SERVICE_REQUEST).respond(
        200, json=searchset(version("sr-1", "4", "on-hold", notes=notes))
    )
    (update,) = (await poll(tracked("sr-1"))).updates
    assert update.remote_reference == "sr-1"
    assert update.update_id == "sr-1/_history/4"
    assert update.status == "on-hold"
    assert update.description == "Practice will call back"
    assert update.updated_at == datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert update.updated_at.tzinfo is UTC


@respx.mock
async def test_our_own_notes_are_not_reported_back_as_news():
    notes = [our_note("Cannot register with a GP in Banbury"), our_note("practice: Horsefair")]
    respx.get(SERVICE_REQUEST).respond(200, json=searchset(version("sr-1", notes=notes)))
    (update,) = (await poll(tracked("sr-1"))).updates
    assert update.description is None


@respx.mock
async def test_the_same_version_seen_twice_has_the_same_update_id_and_a_new_one_does_not():
    respx.get(SERVICE_REQUEST).mock(
        side_effect=[
            httpx.Response(200, json=searchset(version("sr-1", "2"))),
            httpx.Response(200, json=searchset(version("sr-1", "2"))),
            httpx.Response(200, json=searchset(version("sr-1", "3", "completed"))),
        ]
    )
    async with httpx.AsyncClient() as client:
        fhir = adapter(client)
        ids = [
            (await fhir.poll(tracked("sr-1"), cursor=None)).updates[0].update_id for _ in range(3)
        ]
    assert ids == ["sr-1/_history/2", "sr-1/_history/2", "sr-1/_history/3"]


@respx.mock
async def test_outcome_entries_and_untracked_requests_are_left_out():
    bundle = searchset(version("sr-1"), version("sr-stranger"))
    bundle["entry"].append(
        {
            "resource": {"resourceType": "OperationOutcome", "issue": []},
            "search": {"mode": "outcome"},
        }
    )
    respx.get(SERVICE_REQUEST).respond(200, json=bundle)
    result = await poll(tracked("sr-1"))
    assert [u.remote_reference for u in result.updates] == ["sr-1"]


@respx.mock
async def test_an_empty_searchset_and_nothing_tracked_are_no_updates():
    route = respx.get(SERVICE_REQUEST).respond(200, json={"resourceType": "Bundle", "total": 0})
    assert (await poll(tracked("sr-1"))).updates == []
    assert (await poll([])).updates == []
    assert route.call_count == 1


@respx.mock
async def test_paging_is_followed_on_the_same_server_only():
    page_2 = f"{BASE}?_getpages=abc&_page=2"
    first = searchset(version("sr-1"), link=[{"relation": "next", "url": page_2}])
    respx.get(SERVICE_REQUEST).respond(200, json=first)
    second = respx.get(BASE).respond(
        200,
        json=searchset(
            version("sr-2"), link=[{"relation": "next", "url": "http://elsewhere.test/fhir?p=3"}]
        ),
    )
    elsewhere = respx.get("http://elsewhere.test/fhir").respond(200, json=searchset())
    result = await poll(tracked("sr-1", "sr-2"), bearer_token="t0ken")
    assert [u.remote_reference for u in result.updates] == ["sr-1", "sr-2"]
    assert second.calls.last.request.url.params["_getpages"] == "abc"
    assert elsewhere.call_count == 0


@respx.mock
async def test_a_next_link_back_to_a_page_already_read_ends_the_search():
    again = f"{BASE}?_getpages=abc&_page=2"
    loop = respx.get(BASE).respond(
        200, json=searchset(version("sr-2"), link=[{"relation": "next", "url": again}])
    )
    first = searchset(version("sr-1"), link=[{"relation": "next", "url": again}])
    respx.get(SERVICE_REQUEST).respond(200, json=first)
    result = await poll(tracked("sr-1", "sr-2"))
    assert [u.remote_reference for u in result.updates] == ["sr-1", "sr-2"]
    assert loop.call_count == 1


@pytest.mark.parametrize("status", [500, 503, 429, 408])
@respx.mock
async def test_poll_failures_at_the_server_are_retryable(status):
    respx.get(SERVICE_REQUEST).respond(status, headers={"Retry-After": "30"})
    with pytest.raises(RetryableError) as caught:
        await poll(tracked("sr-1"))
    assert caught.value.retry_after == 30


@respx.mock
async def test_poll_transport_failure_is_retryable():
    respx.get(SERVICE_REQUEST).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RetryableError, match="ReadTimeout"):
        await poll(tracked("sr-1"))


@pytest.mark.parametrize(
    ("answer", "complaint"),
    [
        (httpx.Response(401, text="no"), "HTTP 401"),
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json=[]), "not a JSON object"),
        (httpx.Response(200, json={"resourceType": "ServiceRequest"}), "not a Bundle"),
        (
            httpx.Response(200, json=searchset({**version("sr-1"), "meta": {}})),
            "lacks versionId",
        ),
        (
            httpx.Response(200, json=searchset(version("sr-1", updated="yesterday"))),
            "not an instant",
        ),
        (
            httpx.Response(200, json=searchset(version("sr-1", updated="2026-11-26T10:00:00"))),
            "no time zone",
        ),
    ],
)
@respx.mock
async def test_poll_answers_we_cannot_read_are_permanent(answer, complaint):
    respx.get(SERVICE_REQUEST).mock(return_value=answer)
    with pytest.raises(PermanentError, match=complaint):
        await poll(tracked("sr-1"))


def test_the_adapter_polls_and_knows_fhir_status_words():
    assert FhirAdapter.can_poll is True
    assert FhirAdapter.status_words is FHIR_WORDS
    assert FhirConfig(type="fhir", base_url=BASE, poll_seconds=300).poll_seconds == 300
