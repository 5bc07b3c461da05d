"""A citizen's contact details never reach the gateway's logs: a whole flow (intake, delivery to
each kind of back-office, status pushed and polled back, an agent's read, a rejected
submission, subject access and erasure) runs with debug logging, and the log is searched; and
the embedded default (`iap serve` with its sandbox and SMTP sink) at debug too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.sandbox import BackOffice
from tests.conftest import enquiry_body, free_port
from tests.e2e.conftest import IAP, Calls, Launcher, eventually
from tests.e2e.test_status_updates import (  # noqa: F401  (admin and push_to are fixtures)
    FAST_POLLS,
    admin,
    delivered_case,
    move,
    push_to,
    pushed,
    read,
    submit,
    updates_from,
)

pytestmark = pytest.mark.e2e

CITIZEN = {
    "name": "Philippa Wolstencroft",
    "email": "pip.wolstencroft@example.org",
    "phone": "+44 1865 402977",
    "accessibility_needs": "Deafblind; contact through her interpreter",
    "preferred_contact": "email",
}
# Every form in which the citizen's details could leak into a log line.
TRACES = (
    "philippa",
    "wolstencroft",
    "pip.wolstencroft",
    "402977",
    "402 977",
    "interpreter",
)


def with_citizen(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "citizen": CITIZEN, "consent": {"share_contact_details": True}}


ENQUIRIES = {
    "oxfordshire-county": enquiry_body(),  # rest-json, pushes back
    "cherwell": enquiry_body(  # open311, polled; and the police by email
        service_code="anti-social-behaviour",
        description="Stones thrown at parked cars every evening",
        location={"postcode": "OX16 5QA"},
        attributes={"ongoing": "yes"},
    ),
    "nhs-bob-icb": enquiry_body(  # FHIR, polled
        service_code="health-enquiry",
        description="How do I register with a GP surgery?",
        location={"postcode": "OX4 1AA"},
        attributes={},
    ),
}


async def test_a_whole_flow_logs_nothing_that_identifies_the_citizen(
    iap: Launcher,
    back_office: BackOffice,
    calls: Calls,
    admin: httpx.AsyncClient,  # noqa: F811
    push_to: Callable[[str], None],  # noqa: F811
) -> None:
    async with iap.serve(IAP_LOG_LEVEL="DEBUG", **FAST_POLLS) as gateway:
        push_to(str(gateway.http.base_url))
        http = gateway.http
        references = {
            organisation: await submit(gateway, with_citizen(body))
            for organisation, body in ENQUIRIES.items()
        }
        cases = {
            organisation: await delivered_case(gateway, reference, organisation)
            for organisation, reference in references.items()
        }
        await delivered_case(gateway, references["cherwell"], "thames-valley-police")
        pushed_id = await move(admin, "oxfordshire-county", cases["oxfordshire-county"], "assigned")
        assert (await pushed(back_office, pushed_id))["outcome"] == "delivered"
        await move(admin, "cherwell", cases["cherwell"], "in_progress")

        async def polled() -> bool:
            return bool(updates_from(await read(gateway, references["cherwell"]), "cherwell"))

        await eventually(polled, within=10, what="the Cherwell update polled")

        shown = await read(gateway, references["nhs-bob-icb"])  # an agent's read
        assert shown["citizen"]["email"] == CITIZEN["email"]
        refused = await http.post(
            "/v1/enquiries",
            json={**with_citizen(enquiry_body()), "citizen": {**CITIZEN, "email": "pip@@x"}},
        )
        assert refused.status_code == 422
        exported = await http.post("/v1/privacy/subject-access", json={"email": CITIZEN["email"]})
        assert len(exported.json()["enquiries"]) == 3
        erased = await http.post("/v1/privacy/erasure", json={"phone": "01865 402977"})
        assert len(erased.json()["references"]) == 3

    log = gateway.process.log_text()
    for event in ("dispatch.delivered", "status.recorded", "privacy.erased"):
        assert event in log  # the log was captured
    found = [trace for trace in TRACES if trace in log.lower()]
    assert found == [], f"the gateway logged the citizen's details: {found}"


async def test_the_embedded_default_at_debug_logs_nothing_that_identifies_the_citizen(
    tmp_path: Path,
) -> None:
    """`iap serve` as the README runs it (development, SQLite, the sandbox and its SMTP sink in
    the same process), at DEBUG: an enquiry for a district (Open311) and the police (email) is
    delivered, and nothing the process writes names the citizen."""
    port, sandbox_port, smtp_port = free_port(), free_port(), free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("IAP_")}
    env = {
        **inherited,
        "IAP_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
        "IAP_SANDBOX_SMTP_PORT": str(smtp_port),
        "IAP_LOG_LEVEL": "DEBUG",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [IAP, "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:

            async def ready() -> bool:
                assert process.poll() is None, log_path.read_text()
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, within=30, what="iap serve to be ready", every=0.05)
            key = (tmp_path / ".iap-dev-key").read_text().strip()
            http.headers["Authorization"] = f"Bearer {key}"
            created = await http.post("/v1/enquiries", json=with_citizen(ENQUIRIES["cherwell"]))
            assert created.status_code == 201, created.text
            reference = created.json()["reference"]

            async def delivered() -> bool:
                shown = (await http.get(f"/v1/enquiries/{reference}")).json()
                states = {d["organisation_id"]: d["state"] for d in shown["destinations"]}
                return states == {"cherwell": "delivered", "thames-valley-police": "delivered"}

            await eventually(delivered, within=20, what="delivery to Cherwell and the police")
            mail = httpx.get(f"http://127.0.0.1:{sandbox_port}/mail.json").json()["messages"]
            # The police email carried the citizen's details through the SMTP sink.
            assert CITIZEN["phone"] in json.dumps(mail)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    log = log_path.read_text(errors="replace")
    assert "dispatch.delivered" in log  # the log was captured
    assert "debug" in log.lower()
    found = [trace for trace in TRACES if trace in log.lower()]
    assert found == [], f"iap serve logged the citizen's details: {found}"
    noise = [line for line in log.splitlines() if "EOF received" in line or "lost" in line]
    assert noise == []
