"""Stuck work: each kind appears after its threshold and not before (a controlled clock), a
partner's staff see their own, and the daily summary is written once and fed to subscribers
by their scope. On a real database and the sandbox back-offices."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from app.api.deps import current_time
from app.casework.stuck import stuck_work, write_daily_summary
from app.clients.service import Scope
from app.core.models import dispatch_table, event_table, utcnow
from app.sandbox import Behaviour
from tests.conftest import bearer, enquiry_body, make_key, make_person
from tests.partners.test_webhooks import deliver_all, receiver, receiver_server, subscribe

__all__ = ["receiver", "receiver_server"]  # fixtures, used by name

POLICE = "thames-valley-police"
CRIME = enquiry_body(
    service_code="non-emergency-crime",
    description="My bicycle was stolen from the station rack",
    attributes={},
)


async def report(app: Any, at: datetime, caller: Any = None) -> dict[str, str]:
    """kind by reference of what is stuck at `at`."""
    state = app.state.iap
    found = await stuck_work(
        engine=state.engine,
        catalogue=state.catalogue,
        settings=state.settings.stuck,
        caller=caller,
        now=at,
    )
    return {item.reference: item.kind for item in found.items}


async def delivered_at(app: Any) -> datetime:
    async with app.state.iap.engine.connect() as conn:
        times = (await conn.execute(select(dispatch_table.c.delivered_at))).scalars().all()
    return max(t for t in times if t is not None)


async def test_an_unacknowledged_police_enquiry_is_stuck_after_its_silence_and_not_before(
    app, client, back_office
):
    reference = (await client.post("/v1/enquiries", json=CRIME)).json()["reference"]
    await app.state.runtime.dispatcher.run_until_idle()
    sent = await delivered_at(app)
    assert await report(app, sent + timedelta(hours=23, minutes=59)) == {}
    assert await report(app, sent + timedelta(hours=24, minutes=1)) == {reference: "unacknowledged"}
    # Past its service's target (48 h, the gateway's default) it is listed under that instead.
    assert await report(app, sent + timedelta(hours=49)) == {reference: "past_acknowledge_target"}
    assert await report(app, sent + timedelta(days=21)) == {reference: "past_resolve_target"}


async def test_waiting_too_long_and_given_up_are_stuck(app, client, back_office):
    waiting = (await client.post("/v1/enquiries", json=enquiry_body())).json()["reference"]
    made = utcnow()
    assert await report(app, made + timedelta(minutes=59)) == {}
    assert await report(app, made + timedelta(minutes=61)) == {waiting: "pending"}
    back_office.behaviour["oxfordshire-county"] = Behaviour(down=True, fail_status=401)
    await app.state.runtime.dispatcher.run_until_idle()
    assert await report(app, utcnow()) == {waiting: "dead"}
    [item] = (await client.get("/v1/dispatches")).json()["items"]
    await client.post(f"/v1/dispatches/{item['id']}/close", json={"note": "rang highways"})
    assert await report(app, utcnow() + timedelta(days=400)) == {}  # handled is not stuck


async def test_the_route_reads_the_clock_and_partner_staff_see_their_own(app, client, back_office):
    crime = (await client.post("/v1/enquiries", json=CRIME)).json()["reference"]
    pothole = (await client.post("/v1/enquiries", json=enquiry_body())).json()["reference"]
    await app.state.runtime.dispatcher.run_until_idle()
    later = await delivered_at(app) + timedelta(days=30)
    app.dependency_overrides[current_time] = lambda: later
    try:
        everything = (await client.get("/v1/stuck")).json()
        police = bearer(await make_person(app, "supervisor", organisation=POLICE))
        theirs = (await client.get("/v1/stuck", headers=police)).json()
    finally:
        app.dependency_overrides.clear()
    assert {i["reference"] for i in everything["items"]} == {crime, pothole}
    assert everything["counts"] == {"past_resolve_target": 2}
    [item] = theirs["items"]
    assert (item["reference"], item["organisation_id"]) == (crime, POLICE)
    assert item["over_seconds"] > 0
    assert item["due"] > item["since"]


async def test_the_daily_summary_is_written_once_and_fed_by_scope(app, client, receiver, engine):
    admin_feed = await subscribe(client, receiver, "admin", events=["work.*"])
    police_feed = await subscribe(
        client, receiver, "police", events=["work.stuck_summary"], organisation_id=POLICE
    )
    partner = bearer(await make_key(engine, Scope.webhooks_manage))
    await subscribe(_Headers(client, partner), receiver, "partner", events=["*"])
    reference = (await client.post("/v1/enquiries", json=CRIME)).json()["reference"]
    await app.state.runtime.dispatcher.run_until_idle()
    state = app.state.iap
    day = await delivered_at(app) + timedelta(hours=30)  # silent past the police's 24 h
    early = state.settings.stuck.model_copy(update={"summary_hour": 23})
    base = {"engine": engine, "catalogue": state.catalogue}
    before = await write_daily_summary(**base, settings=early, now=day.replace(hour=22))
    assert before == 0  # not yet the summary's hour
    args = {**base, "settings": state.settings.stuck.model_copy(update={"summary_hour": 0})}
    written = await write_daily_summary(**args, now=day)
    assert written == 1 + len(state.catalogue.organisations)
    same_day = day.replace(hour=23, minute=59, second=59)
    assert await write_daily_summary(**args, now=same_day) == 0  # once a day
    # Its time is the next day's: the feed reads events from when each subscription was made.
    async with engine.begin() as conn:
        await conn.execute(
            event_table.update()
            .where(event_table.c.enquiry_id.is_(None))
            .values(created_at=utcnow() + timedelta(seconds=1))
        )
    await deliver_all(app)
    [whole] = [json.loads(m["body"]) for m in receiver.to("admin")]
    assert whole["type"] == "work.stuck_summary"
    assert whole["data"]["organisation_id"] is None
    assert whole["data"]["summary"]["by_organisation"] == {POLICE: {"unacknowledged": 1}}
    assert whole["data"]["summary"]["total"] == 1
    [own] = [json.loads(m["body"]) for m in receiver.to("police")]
    assert own["data"]["organisation_id"] == POLICE
    assert own["data"]["summary"]["by_kind"]["unacknowledged"] == 1
    assert "by_organisation" not in own["data"]["summary"]
    assert all("stuck" not in m["body"] for m in receiver.to("partner"))
    for message in receiver.to("admin") + receiver.to("police"):
        assert reference not in message["body"]  # counts only, no enquiry named
    assert admin_feed["id"] != police_feed["id"]


class _Headers:
    """A client calling with another key."""

    def __init__(self, http: Any, headers: dict[str, str]) -> None:
        self.http, self.headers = http, headers

    async def post(self, url: str, json: Any) -> Any:
        return await self.http.post(url, json=json, headers=self.headers)
