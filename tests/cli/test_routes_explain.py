"""`iap routes explain` answers what POST /v1/enquiries answers for the same service and place,
table-first: the organisations it would go to, or the refusal."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient

from tests.cli.test_cli import iap
from tests.conftest import enquiry_body

ATTRIBUTES = {"pothole": {"road_or_pavement": "road"}, "missed-bin": {"bin_type": "food"}}

CASES = [
    # service, postcode as typed, what both must say
    ("missed-bin", "ox16 5qa", {"cherwell"}),
    ("missed-bin", "OX14", {"contact-centre"}),  # a district split between two councils
    ("missed-bin", "OX14 1", {"vale-of-white-horse"}),  # a sector all in the Vale
    ("pothole", "OX4", {"oxfordshire-county"}),
    ("pothole", "SW1A 1AA", "out-of-area"),
    ("pothole", None, "needs a location"),
    ("missed-bin", "OX14 3DBX", "is not a UK postcode"),
    ("missed-bin", "12345", "is not a UK postcode"),
]


def api_says(answer: Any) -> set[str] | str:
    if answer.status_code == 201:
        return {d["organisation_id"] for d in answer.json()["destinations"]}
    assert answer.status_code == 422, answer.text
    return answer.text


def cli_says(result: Any) -> set[str] | str:
    decisions = [line for line in result.stdout.splitlines() if line.startswith("decision: ")]
    if result.returncode == 0:
        return {line.removeprefix("decision: ").split(":")[0] for line in decisions}
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize(("service", "postcode", "expected"), CASES)
async def test_routes_explain_answers_as_the_api_does(
    service, postcode, expected, client: AsyncClient, database_url
):
    location = {"postcode": postcode} if postcode else None
    body = enquiry_body(service_code=service, location=location, attributes=ATTRIBUTES[service])
    api = api_says(await client.post("/v1/enquiries", json=body))
    args = ["routes", "explain", "--service", service]
    cli = cli_says(
        iap(
            *args,
            *(["--postcode", postcode] if postcode else []),
            database_url=database_url,
            check=False,
        )
    )
    if isinstance(expected, set):
        assert api == expected
        assert cli == expected
    else:
        assert isinstance(api, str), api
        assert isinstance(cli, str), cli
        assert expected in api
        assert expected in cli
