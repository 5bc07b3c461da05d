"""Places as apps send them (issue 14, item 5), end to end: on the embedded default (no gazetteer
imported) a pin inside one council, or an address naming its postcode, reaches that council's
sandbox back-office; a pin where two councils meet reaches the triage desk with both as
candidates and the reason; so does one between councils with the gazetteer imported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import create_engine
from app.sandbox import BackOffice
from tests.cli.test_cli import iap as cli
from tests.cli.test_gazetteer_import import shared_extract
from tests.conftest import bearer, enquiry_body
from tests.e2e.conftest import Launcher, eventually
from tests.e2e.test_triage_desk import agent_token

pytestmark = pytest.mark.e2e

VALE, OXFORD = "vale-of-white-horse", "oxford-city"
# West Abingdon: every postcode within a kilometre is the Vale's.
ABINGDON = {"lat": 51.6700, "lon": -1.2950}
# Kennington: of the 34 postcodes within 500 m to 1 km, 30 are the Vale's and 4 Oxford's.
KENNINGTON = {"lat": 51.7240, "lon": -1.2540}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def missed_bin(location: dict[str, Any]) -> dict[str, Any]:
    return enquiry_body(
        service_code="missed-bin",
        description="Our garden waste bin was missed on Tuesday",
        location=location,
        attributes={"bin_type": "garden"},
    )


@pytest.mark.parametrize(
    ("location", "how"),
    [
        (ABINGDON, "(from the point, point via table)"),
        ({"address": "1 Ock Street, Abingdon OX14 5AG"}, "(from OX14 5AG, sector via table)"),
    ],
    ids=["pin", "address"],
)
async def test_a_pin_or_an_address_inside_the_vale_reaches_the_vales_back_office(
    iap: Launcher, back_office: BackOffice, location: dict[str, Any], how: str
):
    async with iap.serve() as gateway:
        created = await gateway.http.post("/v1/enquiries", json=missed_bin(location))
        assert created.status_code == 201, created.text
        reference = created.json()["reference"]
        [routed] = created.json()["destinations"]
        assert routed["organisation_id"] == VALE
        assert routed["reason"].endswith(f"covers district E07000180 {how}")

        async def delivered() -> bool:
            enquiry = (await gateway.http.get(f"/v1/enquiries/{reference}")).json()
            return enquiry["destinations"][0]["state"] == "delivered"

        await eventually(delivered, within=15, what="delivery to the Vale")
    [case] = back_office.cases[VALE].values()
    assert case["reference"] == reference


async def test_a_pin_where_oxford_meets_the_vale_reaches_the_desk_with_both_councils(
    iap: Launcher, back_office: BackOffice, engine: AsyncEngine
):
    token = await agent_token(engine, "Jo Agent")
    async with iap.serve() as gateway:
        created = await gateway.http.post("/v1/enquiries", json=missed_bin(KENNINGTON))
        assert created.status_code == 201, created.text
        reference = created.json()["reference"]
        [routed] = created.json()["destinations"]
        assert routed["organisation_id"] == "contact-centre"
        assert routed["reason"] == (
            "the district of 51.724,-1.254 cannot be decided: the 34 postcodes within about "
            "500 m to 1 km of this point lie in more than one district (E07000180: 30, "
            "E07000178: 4)"
        )

        async def queued() -> list[dict[str, Any]] | None:
            answer = await gateway.http.get("/v1/triage", headers=bearer(token))
            items = answer.json()["items"]
            return [i for i in items if i["reference"] == reference] or None

        [item] = await eventually(queued, within=10, what="the enquiry in the triage queue")
    assert [(c["organisation_id"], c["postcodes"]) for c in item["candidates"]] == [
        (VALE, 30),
        (OXFORD, 4),
    ]
    assert item["candidates"][0]["evidence"] == "30 of 34 postcodes near the point"
    assert VALE not in back_office.cases
    assert OXFORD not in back_office.cases


async def test_with_the_gazetteer_imported_a_pin_between_councils_reaches_the_desk(
    iap: Launcher, back_office: BackOffice, engine: AsyncEngine, database_url: str
):
    # Botley, midway between OX2 0JH (Oxford) and OX2 0JN (the Vale), 20 m apart.
    imported = cli("gazetteer", "import", str(shared_extract()), database_url=database_url)
    assert "imported 24405 postcodes" in imported.stdout
    token = await agent_token(engine, "Jo Agent")
    async with iap.serve() as gateway:
        inside = await gateway.http.post("/v1/enquiries", json=missed_bin(ABINGDON))
        assert inside.status_code == 201, inside.text
        [routed] = inside.json()["destinations"]
        assert routed["organisation_id"] == VALE
        assert routed["reason"].endswith("point via gazetteer)")
        created = await gateway.http.post(
            "/v1/enquiries", json=missed_bin({"lat": 51.75313, "lon": -1.29340})
        )
        assert created.status_code == 201, created.text
        reference = created.json()["reference"]
        [routed] = created.json()["destinations"]
        assert routed["organisation_id"] == "contact-centre"
        assert routed["reason"].endswith(
            "the 24 postcodes within about 200 m of this point lie in more than one district "
            "(E07000180: 23, E07000178: 1)"
        )

        async def queued() -> list[dict[str, Any]] | None:
            answer = await gateway.http.get("/v1/triage", headers=bearer(token))
            return [i for i in answer.json()["items"] if i["reference"] == reference] or None

        [item] = await eventually(queued, within=10, what="the enquiry in the triage queue")
    assert [(c["organisation_id"], c["postcodes"]) for c in item["candidates"]] == [
        (VALE, 23),
        (OXFORD, 1),
    ]
