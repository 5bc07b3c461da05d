"""The police's inbox never reports back, so their staff move their part through the API: a
non-emergency crime reaches the police by email (the sandbox's SMTP sink), an officer's own
account (made with `iap staff create`) acknowledges and closes it, the enquiry closes, and the
timeline and the audit log name the officer."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from app.sandbox import BackOffice
from tests.conftest import bearer, enquiry_body
from tests.e2e.conftest import IAP, Gateway, Launcher, eventually

pytestmark = pytest.mark.e2e

POLICE = "thames-valley-police"
OFFICER = "PC Morgan Reid"


def staff_token(iap: Launcher, *args: str) -> str:
    """`iap staff create ...` against the test's database; the token is its last line."""
    made = subprocess.run(
        [IAP, "staff", "create", *args],
        env=iap.base_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


async def delivered_by_email(gateway: Gateway, back_office: BackOffice, reference: str) -> None:
    async def delivered() -> bool:
        enquiry = (await gateway.http.get(f"/v1/enquiries/{reference}")).json()
        return enquiry["status"] == "dispatched"

    await eventually(delivered, within=15, what=f"{reference} delivered to the police")
    [mail] = [m for m in back_office.mail if m["reference"] == reference]
    assert mail["to"] == "police-enquiries@example.org"


async def move(gateway: Gateway, token: str, reference: str, **body: Any) -> Any:
    return await gateway.http.post(
        f"/v1/enquiries/{reference}/parts/{POLICE}/updates", json=body, headers=bearer(token)
    )


async def test_an_officer_acknowledges_and_closes_the_polices_part(
    iap: Launcher, back_office: BackOffice
) -> None:
    officer = staff_token(
        iap,
        OFFICER,
        "--email",
        "morgan.reid@police.example.org",
        "--role",
        "agent",
        "--organisation",
        POLICE,
    )
    async with iap.serve() as gateway:
        theft = enquiry_body(
            service_code="non-emergency-crime",
            description="Catalytic converter stolen from my car overnight",
            attributes={},
        )
        created = await gateway.http.post("/v1/enquiries", json=theft)
        assert created.status_code == 201, created.text
        reference = created.json()["reference"]
        pothole = (await gateway.http.post("/v1/enquiries", json=enquiry_body())).json()
        await delivered_by_email(gateway, back_office, reference)

        # The officer sees the police's enquiry, not the county's pothole.
        mine = await gateway.http.get("/v1/enquiries", headers=bearer(officer))
        assert [i["reference"] for i in mine.json()["items"]] == [reference]
        hidden = await gateway.http.get(
            f"/v1/enquiries/{pothole['reference']}", headers=bearer(officer)
        )
        assert hidden.status_code == 404
        refused = await gateway.http.post(
            f"/v1/enquiries/{pothole['reference']}/parts/oxfordshire-county/updates",
            json={"status": "closed"},
            headers=bearer(officer),
        )
        assert refused.status_code == 404

        acknowledged = await move(gateway, officer, reference, status="acknowledged")
        assert acknowledged.status_code == 200, acknowledged.text
        assert acknowledged.json()["enquiry_status"] == "acknowledged"
        closed = await move(
            gateway,
            officer,
            reference,
            status="closed",
            description="Crime reference given to the reporter by phone",
        )
        assert closed.status_code == 200, closed.text
        assert closed.json()["enquiry_status"] == "closed"

        enquiry = (await gateway.http.get(f"/v1/enquiries/{reference}")).json()
        assert enquiry["status"] == "closed"
        assert enquiry["closed_at"] is not None
        [police] = enquiry["destinations"]
        assert (police["state"], police["remote_status"]) == ("delivered", "closed")
        assert [a["outcome"] for a in police["attempt_log"]] == ["delivered"]
        moved = [
            (e["status"], e["actor"]) for e in enquiry["timeline"] if e["type"] == "status.updated"
        ]
        assert moved == [("acknowledged", OFFICER), ("closed", OFFICER)]
        assert enquiry["timeline"][-1]["type"] == "enquiry.closed"

        audit = await gateway.http.get(
            "/v1/audit", params={"action": "part.updated", "subject": reference}
        )
        entries = audit.json()["items"]
        assert [(e["actor"], e["detail"]["status"]) for e in entries] == [
            (OFFICER, "closed"),
            (OFFICER, "acknowledged"),
        ]
        assert all(e["actor_id"].startswith("staff:") for e in entries)
