"""Drives the live gateway with the client openapi-python-client generated from
openapi/openapi.json (scripts/api-check): submits an enquiry, reads it back, and gets an unknown
service's refusal as a typed problem. Exits non-zero, saying what differed, if anything does.

    python scripts/api_client_check.py BASE_URL API_KEY
"""

from __future__ import annotations

import sys
import uuid
from http import HTTPStatus

from iap_client import AuthenticatedClient  # type: ignore[import-not-found]
from iap_client.api.enquiries import create_enquiry, read_enquiry  # type: ignore[import-not-found]
from iap_client.models import (  # type: ignore[import-not-found]
    Channel,
    EnquiryCreated,
    EnquiryIn,
    EnquiryInAttributes,
    EnquiryOut,
    Location,
    Problem,
)


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"api_client_check: {what}")


def _pothole(service_code: str) -> EnquiryIn:
    attributes = EnquiryInAttributes()
    attributes["road_or_pavement"] = "road"
    return EnquiryIn(
        service_code=service_code,
        description="Pothole on the Abingdon Road, by the bus stop, about 8 cm deep",
        channel=Channel.WEB,
        location=Location(postcode="OX1 4PQ"),
        attributes=attributes,
    )


def main(base_url: str, key: str) -> None:
    """Submit, read back, and be refused, each answer parsed into the generated types."""
    client = AuthenticatedClient(base_url=base_url, token=key, raise_on_unexpected_status=True)
    with client:
        created = create_enquiry.sync_detailed(
            client=client, body=_pothole("pothole"), idempotency_key=str(uuid.uuid4())
        )
        _expect(created.status_code == HTTPStatus.CREATED, f"submission: {created.status_code}")
        _expect(isinstance(created.parsed, EnquiryCreated), "submission: not EnquiryCreated")
        reference = created.parsed.reference
        _expect(created.headers["location"].endswith(reference), "no Location of the enquiry")

        read = read_enquiry.sync_detailed(reference, client=client)
        _expect(isinstance(read.parsed, EnquiryOut), f"read back: {read.status_code}")
        _expect(read.parsed.reference == reference, "read back another enquiry")
        _expect(read.parsed.service_code == "pothole", "read back another service")

        refused = create_enquiry.sync_detailed(client=client, body=_pothole("no-such-service"))
        problem = refused.parsed
        _expect(refused.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, "unknown service not 422")
        _expect(isinstance(problem, Problem), "the refusal is not a Problem")
        _expect(problem.status == 422 and problem.type_.startswith("/problems/"), "bad problem")
        _expect(
            any(error.pointer == "#/service_code" for error in problem.errors),
            f"the problem does not point at service_code: {problem.to_dict()}",
        )
    print(f"== api-check: the generated client submitted {reference}, read it, got {problem.type_}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
