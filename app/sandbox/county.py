"""A county council's case API with OAuth2, at /{org}/, for organisations whose adapter type is
"rest-json".

- POST /{org}/oauth/token: client_credentials grant; the client authenticates with client_id
  and client_secret in the form (client_secret_post) or with HTTP Basic, and must match the
  adapter's configured `client_id`/`client_secret` (401 invalid_client otherwise). Tokens live
  `token_seconds` (300 by default); POST /_sandbox/tokens/expire ends them all now. The
  token service stands apart from the case API, as an identity provider does: misbehaviour
  set for the county (slow, failing, down) is the case API's, not the token service's.
- POST /{org}/api/cases (Bearer): JSON with at least `reference` and `description`; the same
  Idempotency-Key gives the same case back with 200, a new one 201 {"id": "OCC-000123",
  "status": "new"}. An unknown or expired token gets 401 with WWW-Authenticate.
- GET /{org}/api/cases/{id} (Bearer): the case, its status and every update.
Errors: {"error", "error_description"} (RFC 6749 style). Words: new → assigned → in_progress →
completed (any word can be set by hand). Updates are pushed to the gateway, signed, when the
organisation has an `inbound.webhook_secret` (see pushes.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from app.catalogue.catalogue import Organisation
from app.sandbox import faults
from app.sandbox.core import Sandbox, SandboxDep

router = APIRouter(prefix="/{organisation}")


class CountyError(faults.SimulatorError):
    """The county's OAuth-style error body."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.code = code

    def response(self) -> JSONResponse:
        """{"error", "error_description"}."""
        body = {"error": self.code, "error_description": self.message}
        return JSONResponse(body, self.status, headers=self.headers)


def _find(sandbox: Sandbox, organisation_id: str) -> Organisation:
    organisation = sandbox.organisation(organisation_id, "rest-json")
    if organisation is None:
        raise CountyError(404, "not_found", f"No case API for '{organisation_id}'")
    return organisation


async def _arrive(sandbox: Sandbox, organisation: Organisation) -> None:
    fault = await faults.arrive(sandbox.office, organisation.id)
    if fault is not None:
        raise CountyError(
            fault.status, "unavailable", "The case system is unavailable", headers=fault.headers
        )


def _setting(organisation: Organisation, name: str) -> str | None:
    value = (organisation.adapter.model_extra or {}).get(name)
    return None if value is None else str(value)


@router.post("/oauth/token")
async def token(organisation: str, request: Request, sandbox: SandboxDep) -> JSONResponse:
    """Issue an access token for the client credentials grant."""
    county = _find(sandbox, organisation)
    form = dict(parse_qsl((await request.body()).decode(errors="replace")))
    if form.get("grant_type") != "client_credentials":
        raise CountyError(400, "unsupported_grant_type", "Only client_credentials is supported")
    client_id, client_secret = _client_credentials(request.headers.get("authorization"), form)
    if not _known_client(county, client_id, client_secret):
        raise CountyError(401, "invalid_client", "Client authentication failed")
    access_token = secrets.token_urlsafe(32)
    expires = time.monotonic() + sandbox.token_seconds
    sandbox.office.access_tokens[access_token] = (county.id, expires)
    answer: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": int(sandbox.token_seconds),
    }
    if form.get("scope"):
        answer["scope"] = form["scope"]
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


def _client_credentials(
    authorization: str | None, form: dict[str, str]
) -> tuple[str | None, str | None]:
    """From HTTP Basic (RFC 6749 2.3.1: each part form-urlencoded) or else from the form."""
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        user, _, password = decoded.partition(":")
        return unquote(user), unquote(password)
    return form.get("client_id"), form.get("client_secret")


def _known_client(county: Organisation, client_id: str | None, secret: str | None) -> bool:
    if not client_id or not secret:
        return False
    expected_id, expected_secret = _setting(county, "client_id"), _setting(county, "client_secret")
    return _same(client_id, expected_id) and _same(secret, expected_secret)


def _same(given: str, expected: str | None) -> bool:
    """Nothing configured accepts any; else equal, compared in constant time."""
    return expected is None or secrets.compare_digest(given.encode(), expected.encode())


def _check_bearer(sandbox: Sandbox, county: Organisation, authorization: str | None) -> None:
    given = (
        authorization[7:].strip()
        if authorization and authorization[:7].lower() == "bearer "
        else ""
    )
    found = sandbox.office.access_tokens.get(given)
    if found is None or found[0] != county.id or time.monotonic() >= found[1]:
        challenge = 'Bearer error="invalid_token"'
        raise CountyError(
            401,
            "invalid_token",
            "The access token is missing, unknown or expired",
            headers={"WWW-Authenticate": challenge},
        )


@router.post("/api/cases")
async def create_case(
    organisation: str,
    request: Request,
    sandbox: SandboxDep,
    idempotency_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Open a case, or give back the one this Idempotency-Key opened."""
    county = _find(sandbox, organisation)
    # Read first: a caller that gives up during the delay has still sent its request.
    raw = await request.body()
    office = sandbox.office
    office.count_create(county.id, idempotency_key)
    await _arrive(sandbox, county)
    _check_bearer(sandbox, county, authorization)
    body = _case_body(raw)
    existing = office.by_key.get((county.id, idempotency_key)) if idempotency_key else None
    if existing is not None:
        case = office.cases[county.id][existing]
        return JSONResponse({"id": existing, "status": case["status"]}, 200)
    case_id = f"{_prefix(county)}-{office.take_number():06d}"
    case = sandbox.open_case(_case(county, case_id, body, idempotency_key))
    await faults.hold(office, county.id)
    location = f"/{county.id}/api/cases/{case_id}"
    return JSONResponse({"id": case_id, "status": case["status"]}, 201, {"Location": location})


def _case_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise CountyError(400, "invalid_request", "The body is not JSON") from exc
    if not isinstance(body, dict):
        raise CountyError(400, "invalid_request", "The body must be a JSON object")
    missing = [k for k in ("reference", "description") if not isinstance(body.get(k), str)]
    if missing:
        raise CountyError(422, "invalid_case", f"Missing or not text: {', '.join(missing)}")
    return body


def _prefix(county: Organisation) -> str:
    """Case numbers start with the council's initials, e.g. OCC for Oxfordshire County Council."""
    initials = "".join(w[0] for w in re.findall(r"[A-Za-z]+", county.name) if w[0].isupper())
    return initials[:4] or "CASE"


def _case(
    county: Organisation, case_id: str, body: dict[str, Any], key: str | None
) -> dict[str, Any]:
    case: dict[str, Any] = {
        "id": case_id,
        "organisation": county.id,
        "protocol": "rest-json",
        "reference": body["reference"],
        "service_code": body.get("service_code"),
        "description": body["description"],
        "dedupe_key": key,
        "received": body,
    }
    if body.get("citizen"):
        case["citizen"] = body["citizen"]
    return case


@router.get("/api/cases/{case_id}")
async def read_case(
    organisation: str,
    case_id: str,
    sandbox: SandboxDep,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """One case with its updates."""
    county = _find(sandbox, organisation)
    await _arrive(sandbox, county)
    _check_bearer(sandbox, county, authorization)
    case = sandbox.office.case(county.id, case_id)
    if case is None:
        raise CountyError(404, "not_found", f"No case {case_id}")
    return JSONResponse(case_json(case))


def case_json(case: dict[str, Any]) -> dict[str, Any]:
    """A case as the county's API shows it."""
    return {
        "id": case["id"],
        "reference": case["reference"],
        "status": case["status"],
        "created_at": case["created_at"].isoformat(),
        "updated_at": case["updated_at"].isoformat(),
        "updates": [
            {**update, "updated_at": update["updated_at"].isoformat()} for update in case["updates"]
        ],
    }
