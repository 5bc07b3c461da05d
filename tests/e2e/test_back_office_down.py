"""A back-office that is down does not slow intake; its dispatch is retried, then dead, and the
enquiry says why."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.core.settings import SHIPPED_CONFIG_DIR
from app.sandbox import BackOffice, Behaviour
from tests.conftest import free_port
from tests.e2e.conftest import Calls, Launcher, eventually, mixed_enquiry

pytestmark = pytest.mark.e2e

FAST_RETRIES = {
    "IAP_DISPATCH__RETRY_SCHEDULE": "[0.1, 0.1]",
    "IAP_DISPATCH__JITTER": "0",
    # Every attempt should reach the back-office here; the circuit breaker has its own tests.
    "IAP_DISPATCH__CIRCUIT_FAILURES": "1000",
}
POLICE = "thames-valley-police"


@dataclass(frozen=True)
class Outage:
    env: dict[str, str]
    reason: str  # what the enquiry's last_error must name
    calls_arrive: bool  # the back-office sees the calls (and is slow to refuse them)


@pytest.fixture(params=["421", "refused"])
def police_outage(
    request: pytest.FixtureRequest, back_office: BackOffice, tmp_path: Path
) -> Outage:
    """The police mail server answering 421 after 1.5 s, or nothing listening at all."""
    if request.param == "421":
        back_office.behaviour[POLICE] = Behaviour(down=True, latency_ms=1500)
        return Outage({}, "SMTP 421", calls_arrive=True)
    config_dir = tmp_path / "config"
    shutil.copytree(SHIPPED_CONFIG_DIR, config_dir)
    organisations = config_dir / "organisations.yaml"
    closed = f'port: "{free_port()}"'
    text = organisations.read_text().replace('port: "${IAP_SANDBOX_SMTP_PORT}"', closed)
    organisations.write_text(text)
    return Outage({"IAP_CONFIG_DIR": str(config_dir)}, "SMTPConnectError", calls_arrive=False)


async def test_a_down_back_office_leaves_intake_alone_and_ends_dead_with_its_reason(
    iap: Launcher, back_office: BackOffice, calls: Calls, police_outage: Outage
) -> None:
    reason = police_outage.reason
    async with iap.serve(**FAST_RETRIES, **police_outage.env) as gateway:

        async def submit(number: int) -> str:
            created = await gateway.http.post("/v1/enquiries", json=mixed_enquiry(number))
            assert created.status_code == 201, created.text
            return str(created.json()["reference"])

        references = [await submit(0)]  # anti-social behaviour: the district and the police
        if police_outage.calls_arrive:

            async def police_call_in_flight() -> bool:
                return back_office.posts.get(POLICE, 0) > 0

            await eventually(police_call_in_flight, within=5, what="a call to the police")
        for number in (3, 6):
            started = time.monotonic()
            references.append(await submit(number))
            # Well under the police's 1.5 s: intake never waits for a back-office.
            assert time.monotonic() - started < 1.0

        async def all_settled() -> list[dict[str, Any]] | None:
            enquiries = [(await gateway.http.get(f"/v1/enquiries/{r}")).json() for r in references]
            done = all(e["status"] == "failed" for e in enquiries) and all(
                d["state"] in ("delivered", "dead") for e in enquiries for d in e["destinations"]
            )
            return enquiries if done else None

        enquiries = await eventually(all_settled, within=30, what="every enquiry failed", every=0.1)

    for enquiry in enquiries:
        destinations = {d["organisation_id"]: d for d in enquiry["destinations"]}
        police = destinations.pop(POLICE)
        assert police["state"] == "dead"
        assert police["attempts"] == 3
        assert police["last_error"].startswith("gave up after 3 attempts: ")
        assert reason in police["last_error"]
        [district] = destinations.values()
        assert district["state"] == "delivered"
        assert district["remote_reference"]
        timeline = [(e["type"], e["organisation_id"]) for e in enquiry["timeline"]]
        police_events = [kind for kind, organisation in timeline if organisation == POLICE]
        assert police_events[:3] == ["dispatch.retry", "dispatch.retry", "dispatch.dead"]
        assert police_events[3:] == []
        # The enquiry as a whole failed: that event names no organisation (nor its dispatch).
        assert ("enquiry.failed", None) in timeline
        dead = next(e for e in enquiry["timeline"] if e["type"] == "dispatch.dead")
        assert reason in dead["detail"]
    assert back_office.posts.get(POLICE, 0) == (9 if police_outage.calls_arrive else 0)
    assert POLICE not in back_office.cases
