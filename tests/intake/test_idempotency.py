"""Idempotency-Key: a retried submission never makes a second enquiry."""

import asyncio

from sqlalchemy import func, select

from app.clients.service import Scope, create_client
from app.core.models import enquiry_table
from app.intake import idempotency
from app.intake.schemas import EnquiryIn
from tests.conftest import bearer, enquiry_body, make_key


async def enquiries(engine):
    async with engine.connect() as conn:
        return await conn.scalar(select(func.count()).select_from(enquiry_table))


async def test_same_key_and_body_replays_the_first_answer(client, engine):
    headers = {"Idempotency-Key": "call-4471"}
    first = await client.post("/v1/enquiries", json=enquiry_body(), headers=headers)
    # Same content, different spacing and key order: still the same request.
    again = await client.post(
        "/v1/enquiries", json=dict(reversed(enquiry_body().items())), headers=headers
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    assert await enquiries(engine) == 1


async def test_same_key_with_a_different_body_is_refused(client, engine):
    headers = {"Idempotency-Key": "call-4472"}
    await client.post("/v1/enquiries", json=enquiry_body(), headers=headers)
    other = await client.post(
        "/v1/enquiries", json=enquiry_body(description="Another one"), headers=headers
    )
    assert other.status_code == 422
    assert other.json()["type"] == "/problems/idempotency-key-reused"
    assert await enquiries(engine) == 1


async def test_key_in_flight_is_409(anonymous, app):
    state = app.state.iap
    made, api_key = await create_client(state.engine, name="desk", scopes=[Scope.admin])
    body = enquiry_body()
    parsed = EnquiryIn.model_validate(body).model_dump(mode="json")
    key = idempotency.IdempotencyKey(str(made.id), "call-4473", idempotency.fingerprint(parsed))
    assert await idempotency.begin(state.engine, key, state.settings.api) is None
    response = await anonymous.post(
        "/v1/enquiries", json=body, headers={"Idempotency-Key": "call-4473", **bearer(api_key)}
    )
    assert response.status_code == 409
    assert response.json()["type"] == "/problems/idempotency-key-in-flight"


async def test_keys_are_per_client(anonymous, engine):
    """Two clients that happen to pick the same key each get their own enquiry."""
    answers = []
    for _ in range(2):
        api_key = await make_key(engine, Scope.enquiries_submit)
        headers = {"Idempotency-Key": "call-0001", **bearer(api_key)}
        answers.append(await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=headers))
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json()["reference"] != answers[1].json()["reference"]
    assert await enquiries(engine) == 2


async def test_concurrent_retries_make_one_enquiry(client, engine):
    headers = {"Idempotency-Key": "call-4474"}
    answers = await asyncio.gather(
        *(client.post("/v1/enquiries", json=enquiry_body(), headers=headers) for _ in range(5))
    )
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {201, 409}
    assert codes.count(201) >= 1
    assert len({a.json()["reference"] for a in answers if a.status_code == 201}) == 1
    assert await enquiries(engine) == 1


async def test_a_refused_request_frees_its_key_for_the_corrected_one(client, engine):
    headers = {"Idempotency-Key": "call-4475"}
    bad = await client.post(
        "/v1/enquiries", json=enquiry_body(location={"postcode": "SW1A 1AA"}), headers=headers
    )
    assert bad.status_code == 422
    good = await client.post("/v1/enquiries", json=enquiry_body(), headers=headers)
    assert good.status_code == 201
    assert await enquiries(engine) == 1


async def test_no_key_means_no_deduplication(client, engine):
    await client.post("/v1/enquiries", json=enquiry_body())
    await client.post("/v1/enquiries", json=enquiry_body())
    assert await enquiries(engine) == 2
