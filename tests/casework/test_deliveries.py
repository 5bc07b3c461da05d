"""The dead-letter desk: given-up deliveries listed, redriven one or many at once, closed as
handled; given-up webhook deliveries redriven; disabled subscriptions enabled again. On a real
database and the sandbox back-offices."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from app.clients.service import Scope
from app.core.models import audit_table, utcnow
from app.core.settings import DispatchSettings, HttpSettings
from app.main import create_app
from app.sandbox import BackOffice, Behaviour
from tests.conftest import bearer, enquiry_body, make_person, started
from tests.partners.test_webhooks import deliver_all, receiver, receiver_server, subscribe

__all__ = ["receiver", "receiver_server"]  # fixtures, used by name

COUNTY = "oxfordshire-county"
POLICE = "thames-valley-police"
REFUSED = Behaviour(down=True, fail_status=401)  # the county's token endpoint refuses us


async def dead_county_enquiries(
    app: Any, client: Any, back_office: BackOffice, n: int = 1
) -> list[str]:
    """`n` pothole enquiries whose county delivery is dead (a 401 from its token endpoint)."""
    back_office.behaviour[COUNTY] = REFUSED
    references = []
    for number in range(n):
        created = await client.post(
            "/v1/enquiries", json=enquiry_body(description=f"Pothole {number}")
        )
        assert created.status_code == 201, created.text
        references.append(created.json()["reference"])
    await app.state.runtime.dispatcher.run_until_idle()
    back_office.behaviour.clear()
    return references


async def dead_list(client: Any, **params: Any) -> list[dict[str, Any]]:
    answer = await client.get("/v1/dispatches", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


async def test_dead_deliveries_are_listed_with_their_error_and_age(app, client, back_office):
    [reference] = await dead_county_enquiries(app, client, back_office)
    [item] = await dead_list(client, state="dead")
    assert item["reference"] == reference
    assert (item["organisation_id"], item["state"], item["attempts"]) == (COUNTY, "dead", 1)
    assert "401" in item["last_error"]  # in full: the desk is staff
    assert item["organisation_name"] == "Oxfordshire County Council"
    assert item["age_seconds"] >= 0
    assert "citizen" not in item
    assert await dead_list(client, organisation_id="cherwell") == []
    assert await dead_list(client, since=(utcnow() + timedelta(hours=1)).isoformat()) == []
    assert len(await dead_list(client, until=(utcnow() + timedelta(hours=1)).isoformat())) == 1
    assert await dead_list(client, state="delivered") == []


async def test_the_list_pages_with_a_cursor(app, client, back_office):
    references = await dead_county_enquiries(app, client, back_office, n=3)
    first = (await client.get("/v1/dispatches", params={"limit": 2})).json()
    second = (
        await client.get("/v1/dispatches", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    seen = [i["reference"] for i in first["items"] + second["items"]]
    assert sorted(seen) == sorted(references)
    assert second["next_cursor"] is None
    bad = await client.get("/v1/dispatches", params={"cursor": "nonsense"})
    assert bad.status_code == 422


async def test_a_redrive_delivers_it_and_the_timeline_and_audit_name_the_person(
    app, client, back_office, engine
):
    [reference] = await dead_county_enquiries(app, client, back_office)
    [item] = await dead_list(client)
    supervisor = bearer(await make_person(app, "supervisor", name="Sam Supervisor"))
    redriven = await client.post(f"/v1/dispatches/{item['id']}/redrive", headers=supervisor)
    assert redriven.status_code == 200, redriven.text
    body = redriven.json()
    assert (body["state"], body["attempts"], body["last_error"]) == ("pending", 0, None)
    assert body["redriven_at"] is not None
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "routed"  # its part is waiting to be delivered again
    [event] = [e for e in enquiry["timeline"] if e["type"] == "dispatch.redriven"]
    assert event["actor"] == "Sam Supervisor"
    await app.state.runtime.dispatcher.run_until_idle()
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "dispatched"
    assert len(back_office.cases[COUNTY]) == 1
    async with engine.connect() as conn:
        [entry] = (
            await conn.execute(
                select(audit_table).where(audit_table.c.action == "dispatch.redriven")
            )
        ).mappings()
    assert entry["actor"] == "Sam Supervisor"
    assert entry["subject"] == item["id"]
    assert "401" in entry["detail"]["last_error"]  # the error cleared from the row lives on here
    again = await client.post(f"/v1/dispatches/{item['id']}/redrive")
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/state-conflict"
    unknown = await client.post("/v1/dispatches/00000000-0000-4000-8000-000000000000/redrive")
    assert unknown.status_code == 404


async def test_a_redrive_looks_first_so_a_case_that_landed_is_not_made_twice(settings, back_office):
    # Cherwell keeps to the spec and no more: a second create would be a second case. The one
    # attempt allowed lands there, but its answer comes after the adapter stopped waiting; so
    # the delivery is given up while the council holds the case.
    quick = settings.model_copy(
        update={
            "http": HttpSettings(timeout_seconds=0.3),
            "dispatch": DispatchSettings(retry_schedule=[], settle_seconds=0, poll_seconds=0.2),
        }
    )
    application = create_app(quick, run_dispatcher=False)
    body = enquiry_body(
        service_code="missed-bin",
        description="Food waste caddy not emptied",
        location={"postcode": "OX16 5QA"},
        attributes={"bin_type": "food"},
    )
    async with started(application, Scope.admin) as http:
        back_office.behaviour["cherwell"] = Behaviour(plain=True, timeout=True, latency_ms=900)
        reference = (await http.post("/v1/enquiries", json=body)).json()["reference"]
        await application.state.runtime.dispatcher.run_until_idle()
        [item] = await dead_list(http)
        [case_id] = back_office.cases["cherwell"]
        back_office.behaviour["cherwell"] = Behaviour(plain=True)
        assert (await http.post(f"/v1/dispatches/{item['id']}/redrive")).status_code == 200
        await application.state.runtime.dispatcher.run_until_idle()
        enquiry = (await http.get(f"/v1/enquiries/{reference}")).json()
    assert list(back_office.cases["cherwell"]) == [case_id]  # looked up and found
    assert back_office.posts["cherwell"] == 1
    [destination] = enquiry["destinations"]
    assert (destination["state"], destination["remote_reference"]) == ("delivered", case_id)


async def test_a_bulk_redrive_sends_every_dead_one_of_that_organisation_since_then(
    app, client, back_office
):
    before = utcnow()
    references = await dead_county_enquiries(app, client, back_office, n=3)
    answer = await client.post(
        "/v1/dispatches/redrive", json={"organisation": COUNTY, "since": before.isoformat()}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 3
    await app.state.runtime.dispatcher.run_until_idle()
    assert sorted(c["reference"] for c in back_office.cases[COUNTY].values()) == sorted(references)
    assert await dead_list(client) == []
    later = await client.post(
        "/v1/dispatches/redrive", json={"organisation": COUNTY, "since": before.isoformat()}
    )
    assert later.json() == {"count": 0, "ids": []}


async def test_bulk_redrive_refuses_bad_bodies_with_the_field_named(client):
    for body, pointer in (
        ({"organisation": "atlantis", "since": "2026-01-01T00:00:00Z"}, "#/organisation"),
        ({"organisation": COUNTY}, "#/since"),
        ({"organisation": COUNTY, "since": "2026-01-01T00:00:00"}, "#/since"),
        ({"organisation": COUNTY, "since": "2026-01-01T00:00:00Z", "x": 1}, "#/x"),
    ):
        answer = await client.post("/v1/dispatches/redrive", json=body)
        assert answer.status_code == 422, body
        assert answer.headers["content-type"] == "application/problem+json"
        assert pointer in [e.get("pointer") for e in answer.json()["errors"]], answer.json()


async def test_closing_as_handled_keeps_the_note_and_closes_that_part(app, client, back_office):
    [reference] = await dead_county_enquiries(app, client, back_office)
    [item] = await dead_list(client)
    bad = await client.post(f"/v1/dispatches/{item['id']}/close", json={"note": ""})
    assert bad.status_code == 422
    closed = await client.post(
        f"/v1/dispatches/{item['id']}/close", json={"note": "Phoned it through to highways"}
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["state"] == "handled"
    assert closed.json()["closure_note"] == "Phoned it through to highways"
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "closed"
    assert any(e["type"] == "dispatch.handled" for e in enquiry["timeline"])
    again = await client.post(f"/v1/dispatches/{item['id']}/close", json={"note": "again"})
    assert again.status_code == 409
    assert await dead_list(client) == []
    assert [i["id"] for i in await dead_list(client, state="handled")] == [item["id"]]


async def test_partner_staff_see_and_touch_only_their_own_organisations_deliveries(
    app, client, back_office
):
    await dead_county_enquiries(app, client, back_office)
    [item] = await dead_list(client)
    police = bearer(await make_person(app, "supervisor", organisation=POLICE))
    county = bearer(await make_person(app, "supervisor", organisation=COUNTY))
    assert (await client.get("/v1/dispatches", headers=police)).json()["items"] == []
    asked = await client.get("/v1/dispatches", params={"organisation_id": COUNTY}, headers=police)
    assert asked.json()["items"] == []  # another organisation's: an empty page
    assert len((await client.get("/v1/dispatches", headers=county)).json()["items"]) == 1
    for path, body in (("redrive", None), ("close", {"note": "not mine"})):
        answer = await client.post(f"/v1/dispatches/{item['id']}/{path}", json=body, headers=police)
        assert answer.status_code == 404, path
    since = (utcnow() - timedelta(days=1)).isoformat()
    bulk = await client.post(
        "/v1/dispatches/redrive", json={"organisation": COUNTY, "since": since}, headers=police
    )
    assert bulk.status_code == 422
    stuck = (await client.get("/v1/stuck", headers=police)).json()
    assert stuck["items"] == []
    assert (await client.get("/v1/dispatches", params={"state": "dead"})).json()["items"][0][
        "state"
    ] == "dead"  # untouched
    assert (await client.get("/v1/webhook-deliveries", headers=police)).status_code == 200


async def test_a_dead_webhook_delivery_is_redriven_and_a_disabled_subscription_enabled(
    app, client, receiver, engine
):
    subscription = await subscribe(client, receiver, "gone")
    receiver.answers["gone"] = [(410, {})]
    await client.post("/v1/enquiries", json=enquiry_body())
    await deliver_all(app)
    dead = (await client.get("/v1/webhook-deliveries")).json()["items"]
    assert dead
    assert all(d["state"] == "dead" for d in dead)
    first = dead[0]
    assert first["last_status"] == 410
    assert first["subscription_id"] == subscription["id"]
    police = bearer(await make_person(app, "supervisor", organisation=POLICE))
    assert (await client.get("/v1/webhook-deliveries", headers=police)).json()["items"] == []
    hidden = await client.post(f"/v1/webhook-deliveries/{first['id']}/redrive", headers=police)
    assert hidden.status_code == 404
    receiver.answers["gone"] = [(200, {})]
    redriven = await client.post(f"/v1/webhook-deliveries/{first['id']}/redrive")
    assert redriven.status_code == 200, redriven.text
    assert (redriven.json()["state"], redriven.json()["attempts"]) == ("pending", 0)
    assert (await client.post(f"/v1/webhook-deliveries/{first['id']}/redrive")).status_code == 409
    await deliver_all(app)
    sent = len(receiver.to("gone"))
    await deliver_all(app)
    assert len(receiver.to("gone")) == sent  # still disabled: nothing sent yet
    enabled = await client.post(f"/v1/webhooks/{subscription['id']}/enable")
    assert enabled.status_code == 200, enabled.text
    assert (enabled.json()["state"], enabled.json()["disabled_reason"]) == ("active", None)
    await deliver_all(app)
    assert len(receiver.to("gone")) == sent + 1  # the redriven one, with the same webhook-id
    assert receiver.to("gone")[-1]["headers"]["webhook-id"] == (
        f"msg_{first['event_id'].replace('-', '')}"
    )
    assert (await client.post(f"/v1/webhooks/{subscription['id']}/enable")).status_code == 409
    async with engine.connect() as conn:
        actions = set((await conn.execute(select(audit_table.c.action))).scalars())
    assert {"webhook.redriven", "webhook.subscription_enabled"} <= actions
