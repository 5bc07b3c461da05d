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
- POST /{org}/api/cases/{id}/attachments (Bearer, multipart, one `file`): a file kept on the
  case, 201 {"id": "ATT-000124", "content_type", "size"}; the same Idempotency-Key gives the same
  upload back with 200.
- POST /{org}/api/cases/{id}/comments (Bearer): {"text", "attachments": [upload ids], "author",
  "created_at"}, 201 {"id": "CMT-000125"}, filed as an "information" follow-up with the files it
  names; the same Idempotency-Key adds nothing and answers 200 as before.
- POST /{org}/api/cases/{id}/status (Bearer): {"status": "withdrawn" | "reopened", "reason"}: the
  case moves (an update, pushed like any other), filed as a "withdrawal" or "reopening"
  follow-up; 201 {"id", "status", "update_id"}; the same Idempotency-Key adds nothing (200).
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
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from app.catalogue.catalogue import Organisation
from app.sandbox import faults
from app.sandbox.core import Sandbox, SandboxDep
from app.sandbox.files import file_record
from app.sandbox.office import utc_now

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


# The follow-up kind each status change a caller may ask for is filed as.
FOLLOW_UP_KINDS = {"withdrawn": "withdrawal", "reopened": "reopening"}


async def _held_case(
    sandbox: Sandbox, organisation: str, case_id: str, authorization: str | None
) -> tuple[Organisation, dict[str, Any]]:
    """The county and its case, once the call has arrived and its token is good."""
    county = _find(sandbox, organisation)
    await _arrive(sandbox, county)
    _check_bearer(sandbox, county, authorization)
    case = sandbox.office.case(county.id, case_id)
    if case is None:
        raise CountyError(404, "not_found", f"No case {case_id}")
    return county, case


def _key(idempotency_key: str | None) -> str:
    if not idempotency_key:
        raise CountyError(400, "invalid_request", "An Idempotency-Key header is required")
    return idempotency_key


@router.post("/api/cases/{case_id}/attachments")
async def upload(
    organisation: str,
    case_id: str,
    request: Request,
    sandbox: SandboxDep,
    idempotency_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Keep one file on the case, or give back the upload this Idempotency-Key made."""
    content, content_type, filename = await _one_file(request)
    county, case = await _held_case(sandbox, organisation, case_id, authorization)
    key = _key(idempotency_key)
    uploads: list[dict[str, Any]] = case.setdefault("uploads", [])
    earlier = next((u for u in uploads if u["key"] == key), None)
    if earlier is not None:
        return JSONResponse(_upload_json(earlier), 200)
    upload_id = f"ATT-{sandbox.office.take_number():06d}"
    kept = file_record(content, content_type, id=upload_id, key=key, filename=filename)
    uploads.append(kept)
    await faults.hold(sandbox.office, county.id)
    return JSONResponse(_upload_json(kept), 201)


async def _one_file(request: Request) -> tuple[bytes, str, str]:
    """The `file` part of a multipart body: its content, type and name."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise CountyError(415, "invalid_request", "Send multipart/form-data with a `file` part")
    try:
        form = await request.form()
    except (HTTPException, MultiPartException) as exc:  # a body the parser cannot read
        raise CountyError(400, "invalid_request", "The multipart body cannot be read") from exc
    part = form.get("file")
    if not isinstance(part, UploadFile):
        raise CountyError(422, "invalid_attachment", "No `file` part")
    content = await part.read()
    if not content:
        raise CountyError(422, "invalid_attachment", "The file is empty")
    return content, part.content_type or "application/octet-stream", part.filename or ""


def _upload_json(kept: dict[str, Any]) -> dict[str, Any]:
    return {"id": kept["id"], "content_type": kept["content_type"], "size": kept["size"]}


@router.post("/api/cases/{case_id}/comments")
async def comment(
    organisation: str,
    case_id: str,
    request: Request,
    sandbox: SandboxDep,
    idempotency_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """File a comment and the uploads it names, once per Idempotency-Key."""
    raw = await request.body()
    county, case = await _held_case(sandbox, organisation, case_id, authorization)
    key = _key(idempotency_key)
    body = _json_object(raw)
    text = body.get("text")
    if not isinstance(text, str):
        raise CountyError(422, "invalid_comment", "Missing or not text: text")
    files = _named_uploads(case, body.get("attachments", []))
    earlier = _earlier(sandbox, case, key)
    if earlier is not None:
        return JSONResponse({"id": earlier["id"]}, 200)
    comment_id = f"CMT-{sandbox.office.take_number():06d}"
    entry = {
        "key": key,
        "id": comment_id,
        "kind": "information",
        "text": text,
        "status": None,
        "attachments": files,
        "received": body,
    }
    sandbox.office.record_follow_up(case, entry)
    case["updated_at"] = utc_now()
    await faults.hold(sandbox.office, county.id)
    return JSONResponse({"id": comment_id}, 201)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise CountyError(400, "invalid_request", "The body is not JSON") from exc
    if not isinstance(body, dict):
        raise CountyError(400, "invalid_request", "The body must be a JSON object")
    return body


def _named_uploads(case: dict[str, Any], named: Any) -> list[dict[str, Any]]:
    """The file records of the uploads a comment names, in its order."""
    if not isinstance(named, list) or not all(isinstance(n, str) for n in named):
        raise CountyError(422, "invalid_comment", "attachments must be a list of upload ids")
    uploads = {u["id"]: u for u in case.get("uploads", [])}
    unknown = [n for n in named if n not in uploads]
    if unknown:
        raise CountyError(422, "invalid_comment", f"No upload {unknown[0][:40]} on this case")
    return [{k: v for k, v in uploads[n].items() if k != "key"} for n in dict.fromkeys(named)]


def _earlier(sandbox: Sandbox, case: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The follow-up this key filed before, the repeat counted as a call all the same."""
    for taken in case.get("follow_ups", []):
        if taken["key"] == key:
            sandbox.office.record_follow_up(case, taken)  # counts it; adds nothing
            return dict(taken)
    return None


@router.post("/api/cases/{case_id}/status")
async def change_status(
    organisation: str,
    case_id: str,
    request: Request,
    sandbox: SandboxDep,
    idempotency_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Withdraw or reopen the case at the caller's word, once per Idempotency-Key."""
    raw = await request.body()
    county, case = await _held_case(sandbox, organisation, case_id, authorization)
    key = _key(idempotency_key)
    body = _json_object(raw)
    status, reason = body.get("status"), body.get("reason", "")
    if status not in FOLLOW_UP_KINDS:
        raise CountyError(422, "invalid_status", "status must be withdrawn or reopened")
    if not isinstance(reason, str):
        raise CountyError(422, "invalid_status", "reason must be text")
    earlier = _earlier(sandbox, case, key)
    if earlier is not None:
        return JSONResponse(_change_json(case, earlier), 200)
    update = sandbox.move(case, status, reason or f"The caller asked for {status}.")
    entry = {
        "key": key,
        "id": update["update_id"],
        "kind": FOLLOW_UP_KINDS[status],
        "text": reason,
        "status": status,
        "attachments": [],
        "received": body,
    }
    sandbox.office.record_follow_up(case, entry)
    await faults.hold(sandbox.office, county.id)
    return JSONResponse(_change_json(case, entry), 201)


def _change_json(case: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    return {"id": case["id"], "status": entry["status"], "update_id": entry["id"]}
