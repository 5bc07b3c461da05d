"""The generic `http-json` back-office any organisation id answers at (kept until every shipped
organisation speaks its own protocol).

`POST /{organisation}/enquiries` makes a case from the JSON body (the same Idempotency-Key gives
the same case back, 200); `GET /{organisation}/enquiries` lists them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from app.sandbox import faults
from app.sandbox.core import SandboxDep

router = APIRouter()


@router.post("/{organisation}/enquiries", status_code=201)
async def receive(
    organisation: str,
    request: Request,
    sandbox: SandboxDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Make a case, or give back the one this Idempotency-Key made."""
    # Read first: a caller that gives up during the delay has still sent its request.
    body = await request.json()
    office = sandbox.office
    office.count_create(organisation, idempotency_key)
    fault = await faults.arrive(office, organisation)
    if fault is not None:
        return JSONResponse({"error": "unavailable"}, fault.status, headers=fault.headers)
    if idempotency_key and (organisation, idempotency_key) in office.by_key:
        return JSONResponse({"id": office.by_key[(organisation, idempotency_key)]}, 200)
    case_id = f"{organisation[:3].upper()}-{office.take_number():06d}"
    sandbox.open_case(_case(organisation, case_id, body, idempotency_key))
    await faults.hold(office, organisation)
    return JSONResponse({"id": case_id}, 201)


@router.get("/{organisation}/enquiries")
async def cases(organisation: str, sandbox: SandboxDep) -> dict[str, Any]:
    """Every case this organisation holds."""
    return {"cases": sandbox.office.cases.get(organisation, {})}


def _case(organisation: str, case_id: str, body: Any, key: str | None) -> dict[str, Any]:
    fields = body if isinstance(body, dict) else {}
    case: dict[str, Any] = {
        "id": case_id,
        "organisation": organisation,
        "protocol": "http-json",
        "reference": fields.get("reference"),
        "service_code": fields.get("service_code"),
        "description": fields.get("description"),
        "dedupe_key": key,
        "received": body,
    }
    if fields.get("citizen"):
        case["citizen"] = fields["citizen"]
    return case
