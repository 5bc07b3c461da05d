"""A caller's history: their earlier enquiries found by the phone number or email they gave,
however it is written; for staff who work every enquiry; each search audited without the phone
or email itself."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text

from app.clients.service import Scope
from app.core.models import audit_table
from tests.conftest import bearer, enquiry_body, make_key, make_person

PHONE = "07700 900123"
EMAIL = "Ann.Example@Example.org"


def caller(**change: Any) -> dict[str, Any]:
    return {"name": "Ann Example", "phone": PHONE, "email": EMAIL, **change}


async def submitted(client: Any, **change: Any) -> str:
    created = await client.post("/v1/enquiries", json=enquiry_body(**change))
    assert created.status_code == 201, created.text
    return str(created.json()["reference"])


async def history(anonymous: Any, token: str, **params: Any) -> Any:
    return await anonymous.get("/v1/enquiries", params=params, headers=bearer(token))


async def searches(engine: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(audit_table.c.actor, audit_table.c.subject, audit_table.c.detail)
                    .where(audit_table.c.action == "enquiry.caller_history")
                    .order_by(audit_table.c.at)
                )
            ).all()
        )


@pytest.mark.parametrize(
    "phone", ["07700 900123", "+44 7700 900123", "07700900123", "+44 (0)7700 900-123"]
)
async def test_a_caller_is_found_by_phone_however_it_is_written(
    client, app, anonymous, engine, phone
):
    bin_day = await submitted(
        client,
        citizen=caller(),
        service_code="missed-bin",
        location={"postcode": "OX1 1BX", "address": "12 Sample Street"},
        attributes={"bin_type": "refuse"},
    )
    pothole = await submitted(client, citizen=caller(phone="+447700900123"))
    await submitted(client, citizen=caller(phone="07700 900999", email="someone@example.org"))
    await submitted(client)  # no citizen at all
    agent = await make_person(app, "agent", name="Priya Patel")

    found = await history(anonymous, agent, phone=phone)
    assert found.status_code == 200, found.text
    items = found.json()["items"]
    assert [i["reference"] for i in items] == [pothole, bin_day]
    assert items[1]["service_code"] == "missed-bin"
    assert items[1]["postcode"] == "OX1 1BX"
    assert items[1]["status"] == "routed"
    assert {"created_at", "closed_at"} <= set(items[1])
    assert "Sample Street" not in found.text
    [search] = await searches(engine)
    assert search.actor == "Priya Patel"
    assert search.detail == {"by": "phone", "found": 2}
    assert search.subject.startswith("phone:")
    async with engine.connect() as conn:
        audit = str((await conn.execute(text("SELECT * FROM audit_log"))).all())
    for trace in ("900123", "900 123", "7700"):
        assert trace not in audit


async def test_a_caller_is_found_by_email_whatever_its_case(client, app, anonymous, engine):
    first = await submitted(client, citizen=caller())
    second = await submitted(client, citizen=caller(email="ann.example@example.org", phone=None))
    agent = await make_person(app, "agent")
    for spelling in ("ann.example@example.org", "ANN.EXAMPLE@EXAMPLE.ORG", EMAIL):
        found = await history(anonymous, agent, email=spelling)
        assert found.status_code == 200, found.text
        assert [i["reference"] for i in found.json()["items"]] == [second, first]
    assert [s.detail for s in await searches(engine)] == [{"by": "email", "found": 2}] * 3
    async with engine.connect() as conn:
        audit = str((await conn.execute(text("SELECT * FROM audit_log"))).all()).lower()
    assert "ann.example" not in audit


async def test_history_pages_like_any_list_and_keeps_the_other_filters(client, app, anonymous):
    made = [await submitted(client, citizen=caller()) for _ in range(3)]
    crime = await submitted(
        client, citizen=caller(), service_code="non-emergency-crime", attributes={}
    )
    agent = await make_person(app, "agent")
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"phone": PHONE, "limit": 2, "service_code": "pothole"}
        if cursor:
            params["cursor"] = cursor
        page = (await history(anonymous, agent, **params)).json()
        seen += [i["reference"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    assert crime not in seen


async def test_a_partners_staff_find_only_enquiries_with_their_part(client, app, anonymous):
    await submitted(client, citizen=caller())  # a pothole: the county's alone
    theft = await submitted(
        client, citizen=caller(), service_code="non-emergency-crime", attributes={}
    )
    officer = await make_person(app, "agent", organisation="thames-valley-police")
    found = await history(anonymous, officer, phone=PHONE)
    assert [i["reference"] for i in found.json()["items"]] == [theft]
    other = await history(anonymous, officer, phone=PHONE, organisation_id="oxfordshire-county")
    assert other.json()["items"] == []


async def test_history_needs_read_all_and_is_not_an_export(client, app, anonymous, engine):
    await submitted(client, citizen=caller())
    own_only = await make_key(engine, Scope.enquiries_read)
    refused = await history(anonymous, own_only, phone=PHONE)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert "enquiries:read-all" in refused.json()["detail"]
    # Without phone or email the same key still lists its own enquiries.
    assert (await history(anonymous, own_only)).status_code == 200
    assert await searches(engine) == []


@pytest.mark.parametrize(
    ("params", "parameters"),
    [
        ({"phone": PHONE, "email": EMAIL}, ["phone", "email"]),
        ({"phone": "call me"}, ["phone"]),
        ({"phone": "123"}, ["phone"]),
        ({"phone": "() - ()  -- "}, ["phone"]),
        ({"email": "not-an-email"}, ["email"]),
        ({"email": ""}, ["email"]),
        ({"email": "a@" + "b" * 300 + ".org"}, ["email"]),
    ],
)
async def test_a_bad_search_is_a_validation_problem(app, anonymous, engine, params, parameters):
    agent = await make_person(app, "agent")
    refused = await history(anonymous, agent, **params)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["type"] == "/problems/validation"
    assert [e.get("parameter") for e in problem["errors"]] == parameters
    assert await searches(engine) == []
