"""The follow-up sender against the real sandbox back-offices: information, a withdrawal and a
reopening each reach the case the organisation holds once, through its own protocol; a part
that ended meanwhile is not sent anything; a repeat after a lost lease sends nothing twice."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.conversation.sender import FollowUpSender
from app.core.models import dispatch_table, event_table
from app.sandbox import BackOffice, Behaviour
from tests.adapters import factory
from tests.conftest import enquiry_body
from tests.conversation.helpers import (
    CHERWELL,
    COUNTY,
    NHS,
    POLICE,
    asb,
    delivered,
    follow_ups,
    health,
    report,
    submitted,
)


def sender(app: FastAPI, worker_id: str | None = None, **settings: Any) -> FollowUpSender:
    """The app's follow-up sender, or another worker's on the same database."""
    running = app.state.runtime
    if worker_id is None and not settings:
        found: FollowUpSender = running.follow_ups
        return found
    state = app.state.iap
    changed = state.settings.model_copy(
        update={"follow_ups": state.settings.follow_ups.model_copy(update=settings)}
    )
    return FollowUpSender(
        engine=state.engine,
        catalogue=state.catalogue,
        adapters=running.adapters,
        sealer=state.sealer,
        store=running.attachments,
        settings=changed,
        worker_id=worker_id,
    )


def taken(back_office: BackOffice, organisation: str) -> list[dict[str, Any]]:
    """Every follow-up the organisation's back-office filed, on any of its cases."""
    return [
        entry
        for case in back_office.cases.get(organisation, {}).values()
        for entry in case.get("follow_ups", [])
    ]


def calls(back_office: BackOffice, organisation: str) -> int:
    return sum(n for (org, _), n in back_office.follow_up_posts.items() if org == organisation)


async def information(
    anonymous: httpx.AsyncClient, reference: str, token: str, *, photo: bool
) -> None:
    text = "It is by the bus stop, north side"
    address = f"/v1/enquiries/{reference}/information"
    if photo:
        files = {"files": ("IMG_0001.jpg", factory.photo(exif=True), "image/jpeg")}
        added = await anonymous.post(
            address, params={"token": token}, data={"text": text}, files=files
        )
    else:
        added = await anonymous.post(address, params={"token": token}, json={"text": text})
    assert added.status_code == 201, added.text


# Each protocol: the enquiry one organisation of that kind receives. Open311's photos are
# fetched from the gateway's signed URL, so they are carried end to end (tests/e2e).
PROTOCOLS = [
    pytest.param(enquiry_body(), COUNTY, True, id="case-api"),
    pytest.param(health(), NHS, True, id="fhir"),
    pytest.param(asb(), CHERWELL, False, id="open311"),
    pytest.param(asb(), POLICE, True, id="email"),
]


@pytest.mark.parametrize(("body", "organisation", "photo"), PROTOCOLS)
async def test_information_reaches_the_case_once(
    app: FastAPI,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    back_office: BackOffice,
    body: dict[str, Any],
    organisation: str,
    photo: bool,
) -> None:
    reference, token = await delivered(client, app, body)
    await information(anonymous, reference, token, photo=photo)
    await sender(app).run_until_idle()
    [entry] = taken(back_office, organisation)
    assert entry["kind"] == "information"
    assert "north side" in (entry["text"] or "")
    if photo:
        [file] = entry["attachments"]
        assert (file["content_type"], file["exif"]) == ("image/jpeg", False)
    queued = [f for f in await follow_ups(app) if f["organisation_id"] == organisation]
    assert [f["state"] for f in queued] == ["delivered"]
    seen = (await client.get(f"/v1/enquiries/{reference}")).json()
    [part] = [p for p in seen["destinations"] if p["organisation_id"] == organisation]
    assert [(f["kind"], f["state"]) for f in part["follow_ups"]] == [("information", "delivered")]
    assert part["follow_ups"][0]["delivered_at"] is not None
    assert "follow_up.delivered" in [event["type"] for event in seen["timeline"]]


@pytest.mark.parametrize(("body", "organisation", "photo"), PROTOCOLS)
async def test_a_withdrawal_reaches_each_back_office_once(
    app: FastAPI,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    back_office: BackOffice,
    body: dict[str, Any],
    organisation: str,
    photo: bool,
) -> None:
    reference, token = await delivered(client, app, body)
    withdrawn = await anonymous.post(
        f"/v1/enquiries/{reference}/withdraw",
        params={"token": token},
        json={"reason": "Sorted it out myself"},
    )
    assert withdrawn.status_code == 201, withdrawn.text
    await sender(app).run_until_idle()
    await sender(app).run_until_idle()  # nothing left to send
    [entry] = taken(back_office, organisation)
    assert entry["kind"] == "withdrawal"
    assert calls(back_office, organisation) == 1


@pytest.mark.parametrize(
    ("body", "organisation"),
    [
        pytest.param(enquiry_body(), COUNTY, id="case-api"),
        pytest.param(health(), NHS, id="fhir"),
    ],
)
async def test_a_reopening_reaches_the_part_that_finished(
    app: FastAPI,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    back_office: BackOffice,
    body: dict[str, Any],
    organisation: str,
) -> None:
    reference, token = await delivered(client, app, body)
    await report(app, reference, organisation, "resolved")
    reopened = await anonymous.post(
        f"/v1/enquiries/{reference}/reopen", params={"token": token}, json={"reason": "Not fixed"}
    )
    assert reopened.status_code == 201, reopened.text
    await sender(app).run_until_idle()
    [entry] = taken(back_office, organisation)
    assert entry["kind"] == "reopening"
    [queued] = await follow_ups(app)
    assert queued["state"] == "delivered"
    seen = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert seen["status"] == "reopened"
    [part] = seen["destinations"]
    # Where the protocol makes a reopening a new case (FHIR), the part follows it there.
    assert part["remote_reference"] in back_office.cases[organisation]


async def test_a_part_that_ended_before_its_follow_up_went_is_not_sent_it(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await delivered(client, app)
    await information(anonymous, reference, token, photo=False)
    await report(app, reference, COUNTY, "closed")
    await sender(app).run_until_idle()
    assert taken(back_office, COUNTY) == []
    [queued] = await follow_ups(app)
    assert queued["state"] == "cancelled"
    async with app.state.iap.engine.connect() as conn:
        types = (await conn.scalars(select(event_table.c.type))).all()
    assert "follow_up.cancelled" in types


async def test_a_repeat_after_a_lost_lease_sends_nothing_twice(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await delivered(client, app)
    await information(anonymous, reference, token, photo=False)
    crashed = sender(app, "crashed-worker", lease_seconds=0.2)
    [claim] = await crashed._claim(1)
    # Its call reaches the back-office, and the worker dies before writing the result.
    assert (await crashed._attempt(claim, 1)).kind == "delivered"
    await asyncio.sleep(0.3)  # the lease runs out
    await sender(app, "another-worker").run_until_idle()
    [entry] = taken(back_office, COUNTY)
    assert entry["kind"] == "information"
    assert calls(back_office, COUNTY) == 2  # asked twice, filed once
    [queued] = await follow_ups(app)
    assert (queued["state"], queued["attempts"]) == ("delivered", 2)
    async with app.state.iap.engine.connect() as conn:
        remote = await conn.scalar(select(dispatch_table.c.remote_reference))
    assert remote in back_office.cases[COUNTY]


async def test_information_given_before_delivery_follows_the_delivery_once(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    # The citizen sends their photo a moment after submitting, before the county has the case.
    reference, token = await submitted(client)
    await information(anonymous, reference, token, photo=True)
    for _ in range(2):  # a second turn of each finds nothing more to do
        await app.state.runtime.dispatcher.run_until_idle()
        await sender(app).run_until_idle()
    [entry] = taken(back_office, COUNTY)
    assert entry["kind"] == "information"
    assert [(f["content_type"], f["exif"]) for f in entry["attachments"]] == [("image/jpeg", False)]


async def test_a_withdrawal_made_while_the_delivery_was_in_flight_follows_it(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await submitted(client)
    back_office.behaviour[COUNTY] = Behaviour(latency_ms=1500)  # the county is slow to answer
    delivering = asyncio.create_task(app.state.runtime.dispatcher.run_until_idle())
    await asyncio.sleep(0.5)  # the call is on its way
    withdrawn = await anonymous.post(
        f"/v1/enquiries/{reference}/withdraw", params={"token": token}, json={"reason": "Fixed"}
    )
    assert withdrawn.status_code == 201, withdrawn.text
    await delivering
    back_office.behaviour.clear()
    await sender(app).run_until_idle()
    [case] = back_office.cases[COUNTY].values()  # the county made the case after all...
    assert [f["kind"] for f in case["follow_ups"]] == ["withdrawal"]  # ...and is told, once
    seen = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert seen["status"] == "withdrawn"
