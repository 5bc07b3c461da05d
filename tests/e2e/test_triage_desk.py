"""The triage desk end to end (issue 11): a missed bin at a postcode whose sector the Vale of
White Horse and South Oxfordshire share reaches the queue with both councils as candidates; an
agent hands it on to the Vale; the gateway's dispatcher delivers it to the Vale's Open311
back-office exactly once, with only the citizen's details the Vale's data-sharing agreement and
the citizen's consent allow; the timeline and the audit log name the agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.catalogue.catalogue import load_catalogue
from app.clients.staff import StaffRole, create_staff
from app.core.audit import Actor
from app.core.db import create_engine
from app.core.settings import SHIPPED_CONFIG_DIR
from app.sandbox import BackOffice
from tests.conftest import bearer, enquiry_body
from tests.e2e.conftest import Calls, Launcher, eventually

pytestmark = pytest.mark.e2e

VALE = "vale-of-white-horse"
SOUTH = "south-oxfordshire"
# A real postcode in Sutton Courtenay (Vale of White Horse, ONSPD `oslaua` E07000180) in sector
# OX14 3, whose 277 postcodes the built-in table splits 231 Vale / 46 South Oxfordshire.
POSTCODE = "OX14 3AB"
CITIZEN = {
    "name": "Robin Example",
    "email": "robin@example.org",
    "phone": "07700 900123",
    "accessibility_needs": "Large print letters",
}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def agent_token(engine: AsyncEngine, name: str) -> str:
    catalogue = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": "http://x"})
    _, token = await create_staff(
        engine,
        catalogue,
        name=name,
        email="jo.agent@contact-centre.example.org",
        role=StaffRole.agent,
        organisation_id=None,
        by=Actor("tests"),
    )
    return token


def missed_bin(consent: bool) -> dict[str, Any]:
    return enquiry_body(
        service_code="missed-bin",
        description="Our garden waste bin was missed on Tuesday",
        channel="phone",
        location={"postcode": POSTCODE},
        attributes={"bin_type": "garden"},
        citizen=CITIZEN,
        consent={"share_contact_details": consent},
    )


@pytest.mark.parametrize("consent", [True, False], ids=["consent", "no-consent"])
async def test_an_agent_hands_a_straddling_enquiry_on_to_the_vale(
    iap: Launcher, back_office: BackOffice, calls: Calls, engine: AsyncEngine, consent: bool
):
    token = await agent_token(engine, "Jo Agent")
    async with iap.serve() as gateway:
        created = await gateway.http.post("/v1/enquiries", json=missed_bin(consent))
        assert created.status_code == 201, created.text
        reference = created.json()["reference"]
        [routed] = created.json()["destinations"]
        assert routed["organisation_id"] == "contact-centre"

        # The queue has it, with both councils and their share of the sector.
        agent = bearer(token)

        async def queued() -> list[dict[str, Any]] | None:
            items = (await gateway.http.get("/v1/triage", headers=agent)).json()["items"]
            return [i for i in items if i["reference"] == reference] or None

        [item] = await eventually(queued, within=10, what="the enquiry in the triage queue")
        assert [(c["organisation_id"], c["postcodes"]) for c in item["candidates"]] == [
            (VALE, 231),
            (SOUTH, 46),
        ]
        assert item["candidates"][0]["evidence"] == "231 of 277 postcodes in sector OX14 3"

        claimed = await gateway.http.post(f"/v1/triage/{reference}/claim", headers=agent)
        assert claimed.status_code == 200, claimed.text
        assert claimed.json()["claimed_by"] == "Jo Agent"
        handed = await gateway.http.post(
            f"/v1/enquiries/{reference}/hand-on",
            json={"organisations": [VALE], "reason": "Caller confirms Sutton Courtenay: Vale"},
            headers=agent,
        )
        assert handed.status_code == 200, handed.text
        assert handed.json()["still_at_triage"] is False

        async def delivered() -> dict[str, Any] | None:
            enquiry: dict[str, Any] = (await gateway.http.get(f"/v1/enquiries/{reference}")).json()
            vale = [d for d in enquiry["destinations"] if d["organisation_id"] == VALE]
            return enquiry if vale and vale[0]["state"] == "delivered" else None

        enquiry = await eventually(delivered, within=15, what="delivery to the Vale")
        assert (await gateway.http.get("/v1/triage", headers=agent)).json()["items"] == []
        audit = (await gateway.http.get("/v1/audit", params={"subject": reference})).json()

    # Exactly one case at the Vale, none at South Oxfordshire.
    vale_cases = list(back_office.cases.get(VALE, {}).values())
    assert len(vale_cases) == 1
    assert calls.creates[(VALE, reference)] == 1
    assert SOUTH not in back_office.cases
    [case] = vale_cases
    assert case["reference"] == reference
    assert case["service_code"] == "missed-bin"
    # The Vale's agreement shares them all (accessibility needs as the attribute agreed with
    # it); the citizen's consent decides whether it gets them.
    if consent:
        assert case["citizen"] == {
            "name": "Robin Example",
            "email": "robin@example.org",
            "phone": "07700 900123",
            "accessibility_needs": "Large print letters",
        }
    else:
        assert "citizen" not in case
        received = case["received"]
        assert not {"first_name", "last_name", "email", "phone"} & set(received)

    assert enquiry["status"] == "dispatched"
    [handed_on] = [e for e in enquiry["timeline"] if e["type"] == "enquiry.handed_on"]
    assert handed_on["actor"] == "Jo Agent"
    assert "Vale of White Horse District Council" in handed_on["detail"]
    entries = {e["action"]: e for e in audit["items"]}
    assert entries["triage.handed_on"]["actor"] == "Jo Agent"
    assert entries["triage.handed_on"]["actor_id"].startswith("staff:")
    assert entries["triage.handed_on"]["detail"]["organisations"] == [VALE]
    assert entries["triage.claimed"]["actor"] == "Jo Agent"
