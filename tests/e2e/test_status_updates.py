"""Status comes back from the back-offices into the enquiry's timeline, each update once:
pushed (the county's signed webhooks, Oxford City's mySociety form) or polled (the districts'
Open311 servers, the ICB's FHIR endpoint); an organisation that says "not ours" sends the
enquiry to the triage desk."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from app.sandbox import BackOffice
from app.sandbox.pushes import open311_form, signed_headers, webhook_body
from tests.conftest import ThreadedServer, enquiry_body
from tests.e2e.conftest import Calls, Gateway, Launcher, eventually

pytestmark = pytest.mark.e2e

COUNTY = "oxfordshire-county"
OXFORD = "oxford-city"
CHERWELL = "cherwell"
VALE = "vale-of-white-horse"
NHS = "nhs-bob-icb"
TRIAGE = "contact-centre"
FAST_POLLS = {"IAP_STATUS_POLL_SECONDS": "0.5"}


def missed_bin(postcode: str) -> dict[str, Any]:
    return enquiry_body(
        service_code="missed-bin",
        description="Garden waste bin missed again",
        location={"postcode": postcode},
        attributes={"bin_type": "garden"},
    )


HEALTH = enquiry_body(
    service_code="health-enquiry",
    description="Can I get a repeat prescription without seeing my GP?",
    attributes={},
)


@pytest.fixture
async def admin(sandbox: ThreadedServer) -> AsyncIterator[httpx.AsyncClient]:
    """The sandbox's own controls, where a back-office officer moves a case on."""
    async with httpx.AsyncClient(base_url=f"{sandbox.url}/_sandbox", timeout=5) as client:
        yield client


@pytest.fixture
def push_to(sandbox: ThreadedServer) -> Iterator[Callable[[str], None]]:
    """Make the session sandbox push its updates to a gateway; restored afterwards, so other
    tests' back-offices stay silent."""
    state = sandbox.app.state.sandbox  # type: ignore[attr-defined]
    before = state.gateway_url

    def point(url: str) -> None:
        state.gateway_url = url

    yield point
    state.gateway_url = before


async def submit(gateway: Gateway, body: dict[str, Any]) -> str:
    created = await gateway.http.post("/v1/enquiries", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["reference"])


async def read(gateway: Gateway, reference: str) -> dict[str, Any]:
    enquiry: dict[str, Any] = (await gateway.http.get(f"/v1/enquiries/{reference}")).json()
    return enquiry


async def delivered_case(gateway: Gateway, reference: str, organisation: str) -> str:
    """The back-office's case number for this enquiry, once the gateway has delivered it."""

    async def remote_reference() -> str | None:
        for destination in (await read(gateway, reference))["destinations"]:
            if destination["organisation_id"] == organisation and destination["state"] == (
                "delivered"
            ):
                return str(destination["remote_reference"])
        return None

    return await eventually(remote_reference, within=10, what=f"{reference} at {organisation}")


def updates_from(enquiry: dict[str, Any], organisation: str) -> list[str | None]:
    """The canonical status of each status.updated event from this organisation, in order."""
    return [
        e["status"]
        for e in enquiry["timeline"]
        if e["type"] == "status.updated" and e["organisation_id"] == organisation
    ]


async def move(admin: httpx.AsyncClient, organisation: str, case_id: str, status: str) -> str:
    """The back-office moves its case now; the id of the update it made."""
    moved = await admin.post(
        f"/{organisation}/cases/{case_id}/status",
        json={"status": status, "description": f"Now {status.replace('_', ' ')}."},
    )
    assert moved.status_code == 200, moved.text
    return str(moved.json()["update_id"])


async def pushed(back_office: BackOffice, update_id: str) -> dict[str, Any]:
    """The sandbox's record of pushing this update, once the gateway has answered it."""

    async def answered() -> dict[str, Any] | None:
        for push in back_office.pushes:
            if push["update_id"] == update_id and push["outcome"] != "pending":
                return push
        return None

    return await eventually(answered, within=10, what=f"the push of update {update_id}")


async def moved_and_pushed(
    admin: httpx.AsyncClient,
    back_office: BackOffice,
    gateway: Gateway,
    reference: str,
    organisation: str,
    case_id: str,
    their_word: str,
    ours: str,
) -> dict[str, Any]:
    """Move the case in the back-office, see the push delivered, and read the enquiry: its last
    update from `organisation` and its status are `ours`."""
    update_id = await move(admin, organisation, case_id, their_word)
    push = await pushed(back_office, update_id)
    assert (push["outcome"], push["status_code"]) == ("delivered", 200)
    enquiry = await read(gateway, reference)
    assert updates_from(enquiry, organisation)[-1] == ours
    assert enquiry["status"] == ours
    return enquiry


async def polls_of(gateway: Gateway, organisation: str, count: int) -> None:
    """Wait until the gateway has polled this organisation `count` more times."""

    async def next_poll_at() -> str:
        listed = (await gateway.http.get("/v1/organisations")).json()
        [found] = [o for o in listed if o["id"] == organisation]
        return str(found["status_updates"]["next_poll_at"])

    seen = [await next_poll_at()]

    async def polled_again() -> bool:
        now = await next_poll_at()
        if now != seen[-1]:
            seen.append(now)
        return len(seen) > count

    await eventually(polled_again, within=count * 2 + 3, what=f"{count} polls of {organisation}")


def resigned(secret: str, message_id: str, body: str) -> dict[str, str]:
    """Standard Webhooks headers for the same body under another webhook-id."""
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


async def test_pushed_updates_land_once_each(
    iap: Launcher,
    back_office: BackOffice,
    calls: Calls,
    sandbox: ThreadedServer,
    admin: httpx.AsyncClient,
    push_to: Callable[[str], None],
) -> None:
    catalogue = sandbox.app.state.sandbox.catalogue  # type: ignore[attr-defined]
    async with iap.serve() as gateway:
        push_to(str(gateway.http.base_url))
        pothole = await submit(gateway, enquiry_body())
        bin_in_oxford = await submit(gateway, missed_bin("OX1 1AA"))
        county_case = await delivered_case(gateway, pothole, COUNTY)
        oxford_case = await delivered_case(gateway, bin_in_oxford, OXFORD)

        # The county's case API pushes signed webhooks; each move is one update in our words.
        for their_word, ours in (("assigned", "acknowledged"), ("completed", "resolved")):
            step = (COUNTY, county_case, their_word, ours)
            enquiry = await moved_and_pushed(admin, back_office, gateway, pothole, *step)
            [destination] = enquiry["destinations"]
            assert destination["remote_status"] == ours

        # Sent again: the same message (same webhook-id), and the same update under a new id.
        case = back_office.cases[COUNTY][county_case]
        secret = catalogue.organisations[COUNTY].inbound.webhook_secret.get_secret_value()
        for update in case["updates"]:
            body = json.dumps(webhook_body(case, update), separators=(",", ":"))
            headers = signed_headers(secret, update["update_id"], body)
            again = await gateway.http.post(f"/v1/inbound/{COUNTY}", content=body, headers=headers)
            assert again.json()["outcome"] == "replayed", again.text
            headers = resigned(secret, f"msg_resent_{update['update_id']}", body)
            again = await gateway.http.post(f"/v1/inbound/{COUNTY}", content=body, headers=headers)
            assert again.json()["outcome"] == "duplicate", again.text

        # Oxford City pushes FixMyStreet's servicerequestupdates form.
        for their_word, ours in (("in_progress", "in_progress"), ("fixed", "resolved")):
            step = (OXFORD, oxford_case, their_word, ours)
            await moved_and_pushed(admin, back_office, gateway, bin_in_oxford, *step)
        case = back_office.cases[OXFORD][oxford_case]
        api_key = catalogue.organisations[OXFORD].inbound.api_key.get_secret_value()
        for update in case["updates"]:
            form = open311_form(catalogue.organisations[OXFORD], case, update, api_key)
            again = await gateway.http.post(
                f"/v1/inbound/{OXFORD}/servicerequestupdates", data=form
            )
            assert again.json()["outcome"] == "duplicate", again.text

        county_enquiry = await read(gateway, pothole)
        oxford_enquiry = await read(gateway, bin_in_oxford)

    assert updates_from(county_enquiry, COUNTY) == ["acknowledged", "resolved"]
    assert county_enquiry["status"] == "resolved"
    assert updates_from(oxford_enquiry, OXFORD) == ["in_progress", "resolved"]
    assert oxford_enquiry["status"] == "resolved"
    for enquiry in (county_enquiry, oxford_enquiry):
        changes = [e["type"] for e in enquiry["timeline"] if e["type"].startswith("enquiry.")]
        assert len(changes) == len(set(changes)), changes  # each status change shown once
    assert {p["outcome"] for p in back_office.pushes} == {"delivered"}
    assert len(back_office.pushes) == 4


async def test_polled_updates_land_once_however_often_they_are_seen(
    iap: Launcher, back_office: BackOffice, calls: Calls, admin: httpx.AsyncClient
) -> None:
    async with iap.serve(**FAST_POLLS) as gateway:
        bin_in_cherwell = await submit(gateway, missed_bin("OX16 5QA"))
        health = await submit(gateway, HEALTH)
        cherwell_case = await delivered_case(gateway, bin_in_cherwell, CHERWELL)
        service_request = await delivered_case(gateway, health, NHS)

        # The ICB's ServiceRequest is active from the start: the first poll reports it, once.
        async def first_version_seen() -> bool:
            return updates_from(await read(gateway, health), NHS) == ["in_progress"]

        await eventually(first_version_seen, within=5, what="the ServiceRequest's first version")
        await polls_of(gateway, NHS, 2)
        assert updates_from(await read(gateway, health), NHS) == ["in_progress"]

        await move(admin, CHERWELL, cherwell_case, "in_progress")
        await move(admin, NHS, service_request, "completed")

        async def both_heard() -> bool:
            cherwell = updates_from(await read(gateway, bin_in_cherwell), CHERWELL)
            nhs = updates_from(await read(gateway, health), NHS)
            return bool(cherwell) and len(nhs) > 1

        await eventually(both_heard, within=5, what="both moves polled")
        await polls_of(gateway, CHERWELL, 2)
        await polls_of(gateway, NHS, 2)
        cherwell_enquiry = await read(gateway, bin_in_cherwell)
        nhs_enquiry = await read(gateway, health)
        organisations = (await gateway.http.get("/v1/organisations")).json()

    assert updates_from(cherwell_enquiry, CHERWELL) == ["in_progress"]
    assert cherwell_enquiry["status"] == "in_progress"
    assert updates_from(nhs_enquiry, NHS) == ["in_progress", "resolved"]
    assert nhs_enquiry["status"] == "resolved"
    polled = {o["id"]: o["status_updates"] for o in organisations}
    assert polled[CHERWELL]["poll_seconds"] == 0.5
    assert polled[CHERWELL]["last_poll_error"] is None
    assert polled[NHS]["last_poll_error"] is None
    assert back_office.pushes == []  # neither pushes: everything above came by polling


async def test_not_our_responsibility_sends_the_enquiry_to_the_triage_desk(
    iap: Launcher, back_office: BackOffice, calls: Calls, admin: httpx.AsyncClient
) -> None:
    async with iap.serve(**FAST_POLLS) as gateway:
        reference = await submit(gateway, missed_bin("OX14 1AA"))
        vale_case = await delivered_case(gateway, reference, VALE)
        await move(admin, VALE, vale_case, "not_councils_responsibility")

        triage_reference = await delivered_case(gateway, reference, TRIAGE)
        await polls_of(gateway, VALE, 2)
        enquiry = await read(gateway, reference)

    assert triage_reference == f"triage:{reference}"
    destinations = {d["organisation_id"]: d for d in enquiry["destinations"]}
    assert set(destinations) == {VALE, TRIAGE}
    assert destinations[VALE]["remote_status"] == "not_our_responsibility"
    assert destinations[TRIAGE]["state"] == "delivered"
    assert (
        "Vale of White Horse District Council says it is not theirs"
        in (destinations[TRIAGE]["reason"])
    )
    assert updates_from(enquiry, VALE) == ["not_our_responsibility"]
    rerouted = [e for e in enquiry["timeline"] if e["type"] == "enquiry.rerouted"]
    assert len(rerouted) == 1
    assert rerouted[0]["organisation_id"] == TRIAGE
    # The triage desk now carries the enquiry: it is with an organisation, not finished.
    assert enquiry["status"] == "dispatched"
    assert TRIAGE not in back_office.cases
