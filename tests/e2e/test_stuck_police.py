"""Stuck work end to end: a crime reported to Thames Valley Police goes by email to the
sandbox's mail sink, which never reports back; after the police's 24 silent hours (a
controlled clock: the route's `current_time`, never a sleep) it is in GET /v1/stuck, and not
before."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from app.api.deps import current_time
from app.core.models import dispatch_table
from app.sandbox import BackOffice
from tests.conftest import bearer, enquiry_body, make_person

pytestmark = pytest.mark.e2e

POLICE = "thames-valley-police"


async def test_a_police_enquiry_never_acknowledged_is_stuck_after_its_silence(
    app, client, back_office: BackOffice
) -> None:
    body = enquiry_body(
        service_code="non-emergency-crime",
        description="My bicycle was stolen from the station rack",
        attributes={},
    )
    reference = (await client.post("/v1/enquiries", json=body)).json()["reference"]
    await app.state.runtime.dispatcher.run_until_idle()
    [mail] = back_office.mail  # it reached the police's mailbox
    async with app.state.iap.engine.connect() as conn:
        [delivered_at] = (await conn.execute(select(dispatch_table.c.delivered_at))).scalars()
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "dispatched"
    supervisor = bearer(await make_person(app, "supervisor", organisation=POLICE))

    async def stuck_at(hours: float) -> list[dict[str, object]]:
        app.dependency_overrides[current_time] = lambda: delivered_at + timedelta(hours=hours)
        try:
            answer = await client.get("/v1/stuck", headers=supervisor)
        finally:
            app.dependency_overrides.clear()
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])

    assert await stuck_at(0) == []
    assert await stuck_at(23.9) == []
    [item] = await stuck_at(24.1)
    assert (item["reference"], item["organisation_id"]) == (reference, POLICE)
    assert item["kind"] == "unacknowledged"
    assert item["remote_status"] is None
    assert 0 < item["over_seconds"] <= 0.1 * 3600 + 1
    assert mail["message_id"] in str(enquiry["destinations"][0]["remote_reference"])
