"""The county's case API with OAuth2, as the rest-json adapter and a person see it."""

from __future__ import annotations

import asyncio

import httpx

from tests.sandbox.conftest import client_for

COUNTY = "/oxfordshire-county"
CREDENTIALS = {"client_id": "iap-gateway", "client_secret": "county-secret"}


def a_case(reference: str = "K7Q-M4X-PB6") -> dict:
    """The JSON the rest-json adapter sends."""
    return {
        "reference": reference,
        "dispatch_id": "5b0c0f1e-8c1b-4c55-9d4e-0d5a8f6c1a11",
        "service_code": "pothole",
        "service_name": "Pothole",
        "description": "A deep pothole by the bus stop",
        "channel": "web",
        "location": {"postcode": "OX4 1AA"},
        "attributes": {"road_or_pavement": "road"},
        "submitted_at": "2025-01-06T09:30:00+00:00",
        "citizen": {"name": "Ann Example", "email": "ann@example.org"},
    }


async def access_token(http: httpx.AsyncClient, **form: str) -> str:
    answer = await http.post(
        f"{COUNTY}/oauth/token", data={"grant_type": "client_credentials", **CREDENTIALS, **form}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "Bearer"
    return str(answer.json()["access_token"])


def bearer(token: str, key: str = "dispatch-1") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Idempotency-Key": key}


async def test_a_case_is_opened_once_per_idempotency_key(http, office):
    token = await access_token(http)
    first = await http.post(f"{COUNTY}/api/cases", json=a_case(), headers=bearer(token))
    assert first.status_code == 201
    assert first.json()["status"] == "new"
    case_id = first.json()["id"]
    assert case_id.startswith("OCC-")
    again = await http.post(f"{COUNTY}/api/cases", json=a_case(), headers=bearer(token))
    assert (again.status_code, again.json()["id"]) == (200, case_id)
    other = await http.post(f"{COUNTY}/api/cases", json=a_case(), headers=bearer(token, "d-2"))
    assert other.json()["id"] != case_id
    assert office.posts_by_key[("oxfordshire-county", "dispatch-1")] == 2
    assert office.cases["oxfordshire-county"][case_id]["citizen"]["name"] == "Ann Example"
    shown = (await http.get(f"{COUNTY}/api/cases/{case_id}", headers=bearer(token))).json()
    assert (shown["reference"], shown["status"], shown["updates"]) == ("K7Q-M4X-PB6", "new", [])


async def test_http_basic_client_authentication_works_too(http):
    answer = await http.post(
        f"{COUNTY}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "cases"},
        auth=("iap-gateway", "county-secret"),
    )
    assert answer.status_code == 200
    assert answer.json()["scope"] == "cases"
    assert answer.json()["expires_in"] == 300


async def test_wrong_client_credentials_are_refused(http):
    wrong = {"grant_type": "client_credentials", "client_id": "iap-gateway", "client_secret": "x"}
    answer = await http.post(f"{COUNTY}/oauth/token", data=wrong)
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    grant = await http.post(f"{COUNTY}/oauth/token", data={"grant_type": "password"})
    assert grant.json()["error"] == "unsupported_grant_type"


async def test_calls_without_a_valid_token_get_401_and_make_nothing(http, office):
    for headers in ({}, bearer("made-up")):
        answer = await http.post(f"{COUNTY}/api/cases", json=a_case(), headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "oxfordshire-county" not in office.cases


async def test_expiring_tokens_by_hand_forces_a_new_token(http):
    token = await access_token(http)
    expired = await http.post("/_sandbox/tokens/expire")
    assert expired.json() == {"expired": 1}
    answer = await http.post(f"{COUNTY}/api/cases", json=a_case(), headers=bearer(token))
    assert answer.status_code == 401
    fresh = await access_token(http)
    assert (
        await http.post(f"{COUNTY}/api/cases", json=a_case(), headers=bearer(fresh))
    ).status_code == 201


async def test_tokens_expire_after_their_lifetime(make_sandbox):
    app = make_sandbox(token_seconds=0.2)
    async with client_for(app) as http:
        token = await access_token(http)
        assert (
            await http.post(f"{COUNTY}/api/cases", json=a_case(), headers=bearer(token))
        ).status_code == 201
        await asyncio.sleep(0.25)
        late = await http.post(
            f"{COUNTY}/api/cases", json=a_case("R2"), headers=bearer(token, "k2")
        )
        assert late.status_code == 401


async def test_a_case_without_reference_or_description_is_refused(http):
    token = await access_token(http)
    body = {k: v for k, v in a_case().items() if k != "description"}
    answer = await http.post(f"{COUNTY}/api/cases", json=body, headers=bearer(token))
    assert answer.status_code == 422
    assert "description" in answer.json()["error_description"]
    junk = await http.post(f"{COUNTY}/api/cases", content=b"{", headers=bearer(token, "k3"))
    assert junk.status_code == 400
