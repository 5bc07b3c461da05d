"""The ICB's FHIR R4 ServiceRequest endpoint, as the fhir adapter and a person see it."""

from __future__ import annotations

from typing import Any

import pytest

from app.sandbox import create_sandbox_app
from tests.sandbox.conftest import client_for, rebind

FHIR = "/nhs-bob-icb/fhir"
SYSTEM = "urn:iap:enquiry-reference"
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def service_request(reference: str = "K7Q-M4X-PB6", **changes: Any) -> dict[str, Any]:
    """A ServiceRequest as the fhir adapter builds it, with a contained Patient."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": SYSTEM, "value": reference}],
        "status": "active",
        "intent": "order",
        "code": {"text": "GP registration"},
        "note": [{"text": "I cannot register with a GP"}],
        "authoredOn": "2025-01-06T09:30:00+00:00",
        "contained": [
            {
                "resourceType": "Patient",
                "id": "citizen",
                "name": [{"text": "Ann Example"}],
                "telecom": [{"system": "email", "value": "ann@example.org"}],
                "communication": [{"language": {"coding": [{"code": "pl"}]}}],
            }
        ],
        "subject": {"reference": "#citizen"},
    }
    resource.update(changes)
    return resource


def conditional(reference: str = "K7Q-M4X-PB6") -> dict[str, str]:
    return {**HEADERS, "If-None-Exist": f"identifier={SYSTEM}|{reference}"}


async def test_a_conditional_create_makes_one_resource_however_often_it_is_sent(http, office):
    first = await http.post(f"{FHIR}/ServiceRequest", json=service_request(), headers=conditional())
    assert first.status_code == 201
    assert first.headers["content-type"].startswith("application/fhir+json")
    created = first.json()
    assert created["meta"]["versionId"] == "1"
    assert created["meta"]["lastUpdated"]
    assert first.headers["location"].endswith(f"{FHIR}/ServiceRequest/{created['id']}/_history/1")
    again = await http.post(f"{FHIR}/ServiceRequest", json=service_request(), headers=conditional())
    assert (again.status_code, again.json()["id"]) == (200, created["id"])
    assert len(office.cases["nhs-bob-icb"]) == 1
    assert office.posts_by_key[("nhs-bob-icb", "K7Q-M4X-PB6")] == 2
    case = office.cases["nhs-bob-icb"][created["id"]]
    assert case["citizen"] == {"name": "Ann Example", "email": "ann@example.org", "language": "pl"}
    assert case["description"] == "I cannot register with a GP"


async def test_several_matches_make_a_conditional_create_fail(http):
    for _ in range(2):
        await http.post(f"{FHIR}/ServiceRequest", json=service_request(), headers=HEADERS)
    answer = await http.post(
        f"{FHIR}/ServiceRequest", json=service_request(), headers=conditional()
    )
    assert answer.status_code == 412
    assert answer.json()["resourceType"] == "OperationOutcome"


async def test_an_invalid_resource_is_refused_without_echoing_its_content(http, office):
    bad = service_request(authoredOn="Ann Example's birthday", bogus=1)
    answer = await http.post(f"{FHIR}/ServiceRequest", json=bad, headers=conditional())
    assert answer.status_code == 400
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    diagnostics = outcome["issue"][0]["diagnostics"]
    assert "authoredOn" in diagnostics
    assert "bogus" in diagnostics
    assert "Ann" not in diagnostics
    assert "nhs-bob-icb" not in office.cases
    wrong_type = await http.post(
        f"{FHIR}/ServiceRequest", json=service_request(resourceType="Patient"), headers=HEADERS
    )
    assert wrong_type.status_code == 400


async def test_a_status_change_is_a_new_version_and_the_old_one_stays_readable(http):
    created = (
        await http.post(f"{FHIR}/ServiceRequest", json=service_request(), headers=HEADERS)
    ).json()
    resource_id = created["id"]
    move = {"status": "completed", "description": "Registered with Banbury Cross surgery"}
    update = (
        await http.post(f"/_sandbox/nhs-bob-icb/cases/{resource_id}/status", json=move)
    ).json()
    assert update["update_id"] == f"{resource_id}/_history/2"
    current = await http.get(f"{FHIR}/ServiceRequest/{resource_id}")
    assert current.json()["status"] == "completed"
    assert current.json()["meta"]["versionId"] == "2"
    assert current.json()["note"][-1]["text"] == "Registered with Banbury Cross surgery"
    assert current.headers["etag"] == 'W/"2"'
    first = (await http.get(f"{FHIR}/ServiceRequest/{resource_id}/_history/1")).json()
    assert first["status"] == "active"
    assert (await http.get(f"{FHIR}/ServiceRequest/{resource_id}/_history/3")).status_code == 404
    assert (await http.get(f"{FHIR}/ServiceRequest/sr-nope")).status_code == 404


async def test_search_by_id_and_by_identifier_gives_a_searchset(http):
    ids = []
    for reference in ("REF-1", "REF-2", "REF-3"):
        made = await http.post(
            f"{FHIR}/ServiceRequest", json=service_request(reference), headers=HEADERS
        )
        ids.append(made.json()["id"])
    by_id = (await http.get(f"{FHIR}/ServiceRequest", params={"_id": f"{ids[0]},{ids[2]}"})).json()
    assert (by_id["resourceType"], by_id["type"], by_id["total"]) == ("Bundle", "searchset", 2)
    assert sorted(e["resource"]["id"] for e in by_id["entry"]) == sorted([ids[0], ids[2]])
    by_identifier = await http.get(
        f"{FHIR}/ServiceRequest", params={"identifier": f"{SYSTEM}|REF-2"}
    )
    [entry] = by_identifier.json()["entry"]
    assert entry["resource"]["id"] == ids[1]
    assert entry["fullUrl"].endswith(f"/ServiceRequest/{ids[1]}")
    other_system = await http.get(f"{FHIR}/ServiceRequest", params={"identifier": "urn:x|REF-2"})
    assert other_system.json()["total"] == 0


@pytest.mark.parametrize("authorization", [None, "Bearer wrong"])
async def test_a_configured_bearer_token_is_required(catalogue, authorization):
    app = create_sandbox_app(rebind(catalogue, "nhs-bob-icb", bearer_token="icb-token"))
    async with client_for(app) as http:
        headers = HEADERS if authorization is None else {**HEADERS, "Authorization": authorization}
        refused = await http.post(f"{FHIR}/ServiceRequest", json=service_request(), headers=headers)
        assert refused.status_code == 401
        allowed = {**HEADERS, "Authorization": "Bearer icb-token"}
        made = await http.post(f"{FHIR}/ServiceRequest", json=service_request(), headers=allowed)
        assert made.status_code == 201
