"""A citizen's contact details never reach the gateway's logs: a whole flow (intake, delivery to
each kind of back-office, status pushed and polled back, an agent's read, a rejected
submission, subject access and erasure) runs with debug logging, and the log is searched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.sandbox import BackOffice
from tests.conftest import enquiry_body
from tests.e2e.conftest import Calls, Launcher, eventually
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
