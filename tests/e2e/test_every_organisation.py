"""One `iap serve` reaches every shipped organisation through its own kind of back-office, each
gets exactly one case per dispatch and answers with its own reference, and a citizen's contact
details reach an organisation only when the citizen agreed to share them."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from app.sandbox import BackOffice
from tests.conftest import enquiry_body
from tests.e2e.conftest import Calls, Launcher, Ledger, eventually

pytestmark = pytest.mark.e2e

COUNTY = "oxfordshire-county"
POLICE = "thames-valley-police"
NHS = "nhs-bob-icb"
TRIAGE = "contact-centre"
# Sectors the postcode table places wholly in one district (OX1 5 straddles two: see below).
DISTRICT_POSTCODES = {
    "cherwell": "OX5 1AA",
    "oxford-city": "OX1 1AA",
    "south-oxfordshire": "OX11 1AA",
    "vale-of-white-horse": "OX14 1AA",
    "west-oxfordshire": "OX18 1AA",
}
CITIZEN = {
    "name": "Zebedee Quartermaine",
    "email": "zebedee.q@example.org",
    "phone": "01865 700931",
    "preferred_contact": "email",
}
TORN = "every destination delivered, yet the same read shows an older enquiry status"
# What would give the citizen away if it reached a back-office.
CITIZEN_TRACES = ("zebedee", "quartermaine", "zebedee.q@example.org", "700931", "700 931")


def submission(body: dict[str, Any], *, consent: bool) -> dict[str, Any]:
    """The enquiry as the citizen gave it, contact details and all, with or without consent."""
    return {**body, "citizen": CITIZEN, "consent": {"share_contact_details": consent}}


def missed_bin(postcode: str, number: int) -> dict[str, Any]:
    return enquiry_body(
        service_code="missed-bin",
        description=f"Recycling bin not emptied on our street ({number})",
        location={"postcode": postcode},
        attributes={"bin_type": "recycling"},
    )


def anti_social_behaviour(postcode: str) -> dict[str, Any]:
    return enquiry_body(
        service_code="anti-social-behaviour",
        description="Youths throwing stones at parked cars every evening",
        location={"postcode": postcode},
        attributes={"ongoing": "yes"},
    )


def health(description: str) -> dict[str, Any]:
    return enquiry_body(
        service_code="health-enquiry",
        description=description,
        location={"postcode": "OX4 1AA"},
        attributes={},
    )


# (what, the enquiry, whether the citizen consented, the organisations it must reach)
ENQUIRIES: list[tuple[str, dict[str, Any], bool, set[str]]] = [
    ("pothole", enquiry_body(), True, {COUNTY}),
    *(
        (f"missed bin in {district}", missed_bin(postcode, n), True, {district})
        for n, (district, postcode) in enumerate(DISTRICT_POSTCODES.items())
    ),
    ("health", health("How do I register with a GP surgery near me?"), True, {NHS}),
    ("anti-social behaviour", anti_social_behaviour("OX16 5QA"), True, {"cherwell", POLICE}),
    # Kennington: the table cannot say whether Oxford or the Vale empties its bins.
    ("missed bin in a shared sector", missed_bin("OX1 5AA", 9), True, {TRIAGE}),
    # Without consent: the county's case API, an Open311 district, email and FHIR get nothing.
    ("pothole, no consent", enquiry_body(description="A pothole, no consent"), False, {COUNTY}),
    (
        "anti-social behaviour, no consent",
        anti_social_behaviour("OX14 1AA"),
        False,
        {"vale-of-white-horse", POLICE},
    ),
    ("health, no consent", health("Is the walk-in centre open at weekends?"), False, {NHS}),
]


def without_timestamps(case: dict[str, Any]) -> str:
    """The case as the back-office holds it, lower-cased, its clock readings left out (their
    digits could look like a phone number)."""
    kept = {k: v for k, v in case.items() if k not in ("created_at", "updated_at", "updates")}
    resource = kept.pop("resource", None)
    kept.pop("versions", None)
    if isinstance(resource, dict):
        kept["resource"] = {k: v for k, v in resource.items() if k != "meta"}
    return json.dumps(kept, default=str).lower()


async def test_enquiries_reach_every_organisation_once_with_contact_details_only_by_consent(
    iap: Launcher, ledger: Ledger, back_office: BackOffice, calls: Calls
) -> None:
    async with iap.serve() as gateway:
        submitted: dict[str, tuple[str, bool, set[str]]] = {}
        for what, body, consent, organisations in ENQUIRIES:
            created = await gateway.http.post(
                "/v1/enquiries", json=submission(body, consent=consent)
            )
            assert created.status_code == 201, f"{what}: {created.text}"
            answer = created.json()
            assert {d["organisation_id"] for d in answer["destinations"]} == organisations, what
            submitted[answer["reference"]] = (what, consent, organisations)

        async def all_delivered() -> list[dict[str, Any]] | None:
            enquiries = [(await gateway.http.get(f"/v1/enquiries/{r}")).json() for r in submitted]
            states = {d["state"] for e in enquiries for d in e["destinations"]}
            return enquiries if states == {"delivered"} else None

        enquiries = await eventually(
            all_delivered, within=15, what="every destination delivered", every=0.1
        )
        organisations = (await gateway.http.get("/v1/organisations")).json()

    shipped = {o["id"] for o in organisations}
    reached = {d["organisation_id"] for e in enquiries for d in e["destinations"]}
    assert reached == shipped  # every shipped organisation, none left out

    for enquiry in enquiries:
        # The ICB's status is polled: its first poll may already say the request is active.
        polled = "in_progress" if enquiry["service_code"] == "health-enquiry" else "dispatched"
        # Read together with its destinations: a status older than them is a torn read.
        assert enquiry["status"] in ("dispatched", polled), (enquiry["reference"], TORN)

    dispatches = await ledger.dispatches()
    by_reference = {e["reference"]: e for e in enquiries}
    for dispatch in dispatches:
        what, consent, _ = submitted[dispatch["reference"]]
        organisation = dispatch["organisation_id"]
        [destination] = [
            d
            for d in by_reference[dispatch["reference"]]["destinations"]
            if d["organisation_id"] == organisation
        ]
        assert destination["state"] == "delivered", (what, organisation)
        assert destination["attempts"] == 1, (what, organisation)
        if organisation == TRIAGE:  # the desk is inside the gateway: nothing is sent
            assert destination["remote_reference"] == f"triage:{dispatch['reference']}"
            continue
        # One create call, one case carrying our reference, and its id is what the gateway shows.
        assert calls.creates_for(dispatch) == 1, (what, organisation)
        case_id = calls.case_for(dispatch)
        assert case_id is not None, (what, organisation)
        case = back_office.cases[organisation][case_id]
        assert case["reference"] == dispatch["reference"], (what, organisation)
        assert destination["remote_reference"] == case_id, (what, organisation)
        if consent:
            assert case["citizen"]["email"] == CITIZEN["email"], (what, organisation)
            assert case["citizen"]["phone"] == CITIZEN["phone"], (what, organisation)
        else:
            assert "citizen" not in case, (what, organisation)
            seen = without_timestamps(case)
            leaked = [trace for trace in CITIZEN_TRACES if trace in seen]
            assert not leaked, (what, organisation, leaked)

    expected = Counter(d["organisation_id"] for d in dispatches if d["organisation_id"] != TRIAGE)
    held = Counter({o: len(cases) for o, cases in back_office.cases.items()})
    assert held == expected  # no back-office holds a case nobody sent, nor a second one
    assert TRIAGE not in back_office.cases

    police = [d for d in dispatches if d["organisation_id"] == POLICE]
    assert len(back_office.mail) == len(police)
    for dispatch in police:
        [mail] = [m for m in back_office.mail if m["reference"] == dispatch["reference"]]
        assert mail["to"] == "police-enquiries@example.org"
        assert mail["message_id"] == f"{dispatch['id']}@iap.invalid"
        assert not mail["duplicate"]
        [attachment] = mail["attachments"]
        assert attachment["content_type"] == "application/json"
        assert attachment["filename"] == f"enquiry-{dispatch['reference']}.json"
        record = attachment["json"]
        assert record["reference"] == dispatch["reference"]
        assert record["service_code"] == "anti-social-behaviour"
        _, consent, _ = submitted[dispatch["reference"]]
        if consent:
            assert record["citizen"]["name"] == CITIZEN["name"]
        else:
            assert "citizen" not in record
            assert "not shared with this organisation" in mail["text"]
            shown = {k: v for k, v in mail.items() if k != "received_at"}
            leaked = [t for t in CITIZEN_TRACES if t in json.dumps(shown, default=str).lower()]
            assert not leaked, leaked
