"""A back-office that makes the case but answers after the adapter gave up: the dispatcher tries
again, the repeat finds the case already made, and the enquiry shows that one case's number.
One that makes the case only after the adapter gave up is found too: the retry waits for it to
settle before it looks."""

from __future__ import annotations

from typing import Any

import pytest

from app.sandbox import BackOffice, Behaviour
from tests.conftest import enquiry_body
from tests.e2e.conftest import ADAPTER_TYPE, Calls, Launcher, Ledger, eventually

pytestmark = pytest.mark.e2e

TIMEOUT_SECONDS = 1.0
# The case is made at once; the answer comes well after the adapter stopped waiting.
ANSWER_LATE = Behaviour(timeout=True, latency_ms=int(TIMEOUT_SECONDS * 2500))
ENV = {
    "IAP_HTTP__TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),  # the SMTP conversation's limit too
    "IAP_DISPATCH__LEASE_SECONDS": str(TIMEOUT_SECONDS * 5),  # more than twice the call
    "IAP_DISPATCH__RETRY_SCHEDULE": "[0.3, 0.3, 0.3, 0.3, 0.3, 0.3]",
    "IAP_DISPATCH__JITTER": "0",
    "IAP_DISPATCH__SETTLE_SECONDS": "0.5",  # this back-office has the case before it is late
}

# One organisation per way of reaching a back-office, with an enquiry that goes only there.
CASES = {
    "oxfordshire-county": enquiry_body(),
    "cherwell": enquiry_body(
        service_code="missed-bin",
        description="Food waste caddy not emptied",
        location={"postcode": "OX16 5QA"},
        attributes={"bin_type": "food"},
    ),
    "nhs-bob-icb": enquiry_body(
        service_code="health-enquiry",
        description="Which pharmacies open late on Sundays?",
        attributes={},
    ),
    "thames-valley-police": enquiry_body(
        service_code="non-emergency-crime",
        description="My bicycle was stolen from the station rack",
        attributes={},
    ),
}


@pytest.mark.parametrize("organisation", list(CASES), ids=lambda o: f"{ADAPTER_TYPE[o]}-{o}")
async def test_a_case_made_but_answered_too_late_is_not_made_twice(
    organisation: str, iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
) -> None:
    back_office.behaviour[organisation] = ANSWER_LATE
    async with iap.serve(**ENV) as gateway:
        created = await gateway.http.post("/v1/enquiries", json=CASES[organisation])
        assert created.status_code == 201, created.text
        reference = created.json()["reference"]
        [dispatch] = await ledger.dispatches()
        assert dispatch["organisation_id"] == organisation

        async def first_attempt_timed_out() -> list[dict[str, Any]]:
            return await ledger.attempts()

        [first] = await eventually(
            first_attempt_timed_out, within=5, what="the first attempt to time out"
        )
        assert first["outcome"] == "retry"
        # The back-office has the case, although the adapter never heard so.
        assert calls.case_for(dispatch) is not None
        back_office.behaviour.clear()

        async def delivered() -> dict[str, Any] | None:
            enquiry = (await gateway.http.get(f"/v1/enquiries/{reference}")).json()
            [destination] = enquiry["destinations"]
            return enquiry if destination["state"] == "delivered" else None

        enquiry = await eventually(delivered, within=10, what="the dispatch delivered")

    # The same read that shows the destination delivered must not show an older status.
    assert enquiry["status"] == "dispatched", "torn read: delivered, yet still routed"
    [destination] = enquiry["destinations"]
    assert destination["attempts"] >= 2
    assert "no answer within" in first["error"] or "Timeout" in first["error"]
    # One case at the back-office, and the enquiry shows its number.
    [case_id] = back_office.cases[organisation]
    assert calls.case_for(dispatch) == case_id
    assert destination["remote_reference"] == case_id
    assert back_office.cases[organisation][case_id]["reference"] == reference
    assert back_office.duplicates(organisation) == {}
    if ADAPTER_TYPE[organisation] == "email":
        # The repeat reached the mailbox under the same Message-ID, so it is recognised as one.
        assert {m["message_id"] for m in back_office.mail} == {case_id}
        assert [m["duplicate"] for m in back_office.mail][:1] == [False]
        assert all(m["duplicate"] for m in back_office.mail[1:])


async def test_a_case_made_after_the_caller_gave_up_is_found_once_it_settles(
    iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
) -> None:
    organisation, settle = "cherwell", 4.0
    # The request is queued, and the case made 2.5 s later: after the adapter's 1 s timeout.
    # The council follows the spec and no more, so a second create would be a second case.
    back_office.behaviour[organisation] = Behaviour(plain=True, latency_ms=2500)
    env = {**ENV, "IAP_DISPATCH__SETTLE_SECONDS": str(settle)}
    async with iap.serve(**env) as gateway:
        created = await gateway.http.post("/v1/enquiries", json=CASES[organisation])
        assert created.status_code == 201, created.text
        [dispatch] = await ledger.dispatches()

        async def first_attempt_timed_out() -> list[dict[str, Any]]:
            return await ledger.attempts()

        [first] = await eventually(
            first_attempt_timed_out, within=10, what="the first attempt to time out"
        )
        assert first["outcome"] == "retry"
        assert calls.case_for(dispatch) is None, "made before the caller gave up"
        back_office.behaviour[organisation] = Behaviour(plain=True)
        [waiting] = await ledger.dispatches()
        # The schedule says 0.3 s; the settling time is longer.
        waited = waiting["next_attempt_at"] - first["finished_at"]
        assert waited.total_seconds() >= settle

        async def delivered() -> dict[str, Any] | None:
            [row] = await ledger.dispatches()
            return row if row["state"] == "delivered" else None

        row = await eventually(delivered, within=30, what="the dispatch delivered")

    [case_id] = back_office.cases[organisation]
    assert row["remote_reference"] == case_id
    assert calls.creates_for(dispatch) == 1  # looked up and found, not posted again
    assert back_office.duplicates(organisation) == {}
