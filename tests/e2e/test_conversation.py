"""After submission, end to end: a real `iap serve` and `iap worker` on loopback with the
sandbox back-offices. The citizen adds a photo by their token and it reaches each of the four
protocols' back-offices once, without its EXIF (the Open311 council fetching it from the
gateway's signed URL); their withdrawal reaches each once; and a follow-up whose worker was
killed mid-call is sent again by another worker once the lease runs out, filed once."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.sandbox import BackOffice, Behaviour
from tests.adapters import factory
from tests.conftest import enquiry_body, free_port
from tests.conversation.helpers import CHERWELL, COUNTY, NHS, POLICE, asb, health, with_citizen
from tests.e2e.conftest import Launcher, Ledger, eventually

pytestmark = pytest.mark.e2e

EVERY_PROTOCOL = {COUNTY: "rest-json", NHS: "fhir", CHERWELL: "open311", POLICE: "email"}


def filed(back_office: BackOffice, organisation: str, kind: str) -> list[dict[str, Any]]:
    return [
        entry
        for case in back_office.cases.get(organisation, {}).values()
        for entry in case.get("follow_ups", [])
        if entry["kind"] == kind
    ]


def posts(back_office: BackOffice, organisation: str) -> list[int]:
    return [n for (org, _), n in back_office.follow_up_posts.items() if org == organisation]


async def submit(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, str]:
    created = await http.post("/v1/enquiries", json=with_citizen(body))
    assert created.status_code == 201, created.text
    return created.json()["reference"], created.json()["access_token"]


def gateway_env(tmp_path: Path, port: int) -> dict[str, str]:
    """Where the gateway is reached (its signed attachment URLs) and keeps its files."""
    return {
        "IAP_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "IAP_ATTACHMENTS__DIRECTORY": str(tmp_path / "gateway-attachments"),
    }


async def test_a_photo_and_a_withdrawal_reach_each_protocol_once(
    iap: Launcher, ledger: Ledger, back_office: BackOffice, tmp_path: Path
) -> None:
    port = free_port()
    async with iap.serve(port=port, **gateway_env(tmp_path, port)) as gateway:
        http = gateway.http
        enquiries = [await submit(http, body) for body in (enquiry_body(), health(), asb())]

        async def all_delivered() -> bool:
            rows = await ledger.dispatches()
            return len(rows) == 4 and all(r["state"] == "delivered" for r in rows)

        await eventually(all_delivered, within=30, what="every enquiry delivered")
        for reference, token in enquiries:
            added = await http.post(
                f"/v1/enquiries/{reference}/information",
                params={"token": token},
                headers={"Authorization": ""},
                data={"text": "Here is a photo of it"},
                files={"files": ("IMG_0001.jpg", factory.photo(exif=True), "image/jpeg")},
            )
            assert added.status_code == 201, added.text
            [photo] = added.json()["attachments"]
            assert (photo["content_type"], photo["filename"]) == ("image/jpeg", "photo-1.jpg")

        async def every_photo_filed() -> bool:
            return all(filed(back_office, org, "information") for org in EVERY_PROTOCOL)

        await eventually(every_photo_filed, within=30, what="the photo at every back-office")
        for organisation in EVERY_PROTOCOL:
            [entry] = filed(back_office, organisation, "information")
            [file] = entry["attachments"]
            assert (file["content_type"], file["exif"]) == ("image/jpeg", False), organisation
            assert posts(back_office, organisation) == [1], organisation

        for reference, token in enquiries:
            withdrawn = await http.post(
                f"/v1/enquiries/{reference}/withdraw",
                params={"token": token},
                headers={"Authorization": ""},
                json={"reason": "Sorted it out myself"},
            )
            assert withdrawn.status_code == 201, withdrawn.text

        async def every_withdrawal_filed() -> bool:
            return all(filed(back_office, org, "withdrawal") for org in EVERY_PROTOCOL)

        await eventually(every_withdrawal_filed, within=30, what="every back-office told")
        for organisation in EVERY_PROTOCOL:
            assert len(filed(back_office, organisation, "withdrawal")) == 1, organisation
            assert posts(back_office, organisation) == [1, 1], organisation
        for reference, _ in enquiries:
            seen = (await http.get(f"/v1/enquiries/{reference}")).json()
            assert seen["status"] == "withdrawn"
            for part in seen["destinations"]:
                assert [f["state"] for f in part["follow_ups"]] == ["delivered", "delivered"]


async def test_a_follow_up_cut_off_by_a_worker_crash_is_sent_again_and_filed_once(
    iap: Launcher, ledger: Ledger, back_office: BackOffice, tmp_path: Path
) -> None:
    port = free_port()
    env = gateway_env(tmp_path, port)
    async with iap.serve("--no-worker", port=port, **env) as gateway:
        http = gateway.http
        reference, token = await submit(http, enquiry_body())
        short_lease = {**env, "IAP_FOLLOW_UPS__LEASE_SECONDS": "3"}
        async with iap.worker(**short_lease) as first:

            async def delivered() -> bool:
                return [r["state"] for r in await ledger.dispatches()] == ["delivered"]

            await eventually(delivered, within=20, what="the enquiry delivered")
            # The county files the follow-up, then holds its answer: the worker dies waiting.
            back_office.behaviour[COUNTY] = Behaviour(timeout=True, latency_ms=20_000)
            added = await http.post(
                f"/v1/enquiries/{reference}/information",
                params={"token": token},
                headers={"Authorization": ""},
                json={"text": "It is by the bus stop, north side"},
            )
            assert added.status_code == 201, added.text

            async def filed_once() -> bool:
                return len(filed(back_office, COUNTY, "information")) == 1

            await eventually(filed_once, within=20, what="the county to file the follow-up")
            first.process.send(signal.SIGKILL)
            assert await first.process.wait_exit(within=5) == -signal.SIGKILL
        back_office.behaviour.clear()
        async with iap.worker(**env):

            async def sent_again() -> bool:
                seen = (await http.get(f"/v1/enquiries/{reference}")).json()
                [part] = seen["destinations"]
                return [f["state"] for f in part["follow_ups"]] == ["delivered"]

            await eventually(sent_again, within=30, what="another worker to send it again")
        assert posts(back_office, COUNTY) == [2]  # asked twice, under one key
        assert len(filed(back_office, COUNTY, "information")) == 1  # filed once
        seen = (await http.get(f"/v1/enquiries/{reference}")).json()
        [part] = seen["destinations"]
        assert part["follow_ups"][0]["attempts"] == 2
