"""An integrated care board's FHIR R4 server for ServiceRequest, at /{org}/fhir/, for
organisations whose adapter type is "fhir".

- POST ServiceRequest (application/fhir+json): the body is validated with
  fhir.resources.R4B (400 OperationOutcome naming the fields at fault, never their values).
  If-None-Exist: identifier=<system>|<value> makes it a conditional create: one match → 200
  with that resource, several → 412, none → 201 Created. Every answer carries the resource
  with meta.versionId/lastUpdated, Location .../ServiceRequest/<id>/_history/<v> and an ETag.
- GET ServiceRequest/{id} (read), ServiceRequest/{id}/_history/{v} (vread), and
  GET ServiceRequest?_id=a,b&identifier=system|value (a Bundle searchset).
- PUT ServiceRequest/{id}: a version-aware update; If-Match must name the current version
  (W/"<v>"), else 412. The body is validated as on create and becomes the next version; a move
  to `revoked` is filed on the case as a "withdrawal" follow-up (its new notes the reason).
- A created ServiceRequest that `replaces` one held here is a reopening of that one: filed on
  the replaced case as a "reopening" follow-up (its last note the reason), keyed on its
  identifier; the new one is a case of its own (`replaces` naming the old one).
- POST Communication: validated, `basedOn` a ServiceRequest held here (422 otherwise), each
  contentAttachment's data checked against its size and SHA-1 hash (400 on a mismatch);
  If-None-Exist as for ServiceRequest. Filed on the case as an "information" follow-up keyed on
  its identifier, with its contentString text and its files.
- When the adapter config has `bearer_token`, every call must carry it (401 otherwise).
Each status move (active → completed; any word by hand) is a new version with the move's
description appended as a note; its update id is "<id>/_history/<version>".
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import BaseModel, ValidationError

from app.catalogue.catalogue import Organisation
from app.sandbox import faults
from app.sandbox.core import Sandbox, SandboxDep
from app.sandbox.files import file_record
from app.sandbox.office import utc_now

router = APIRouter(prefix="/{organisation}/fhir")
FHIR_JSON = "application/fhir+json"
DEFAULT_SYSTEM = "urn:iap:enquiry-reference"
DEFAULT_FOLLOW_UP_SYSTEM = "urn:iap:follow-up"


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


class FhirError(faults.SimulatorError):
    """An OperationOutcome."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = "processing",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.code = code

    def response(self) -> JSONResponse:
        """OperationOutcome with one issue."""
        issue = {"severity": "error", "code": self.code, "diagnostics": self.message}
        body = {"resourceType": "OperationOutcome", "issue": [issue]}
        return FhirResponse(body, self.status, headers=self.headers)


def _find(sandbox: Sandbox, organisation_id: str) -> Organisation:
    organisation = sandbox.organisation(organisation_id, "fhir")
    if organisation is None:
        raise FhirError(404, f"No FHIR endpoint for '{organisation_id}'", code="not-found")
    return organisation


async def _arrive(sandbox: Sandbox, organisation: Organisation, authorization: str | None) -> None:
    fault = await faults.arrive(sandbox.office, organisation.id)
    if fault is not None:
        raise FhirError(
            fault.status, "Service unavailable", code="transient", headers=fault.headers
        )
    expected = (organisation.adapter.model_extra or {}).get("bearer_token")
    if expected and authorization != f"Bearer {expected}":
        challenge = {"WWW-Authenticate": "Bearer"}
        raise FhirError(401, "Not authorised", code="login", headers=challenge)


def _system(organisation: Organisation) -> str:
    return str((organisation.adapter.model_extra or {}).get("identifier_system", DEFAULT_SYSTEM))


@router.post("/ServiceRequest")
async def create(
    organisation: str,
    request: Request,
    sandbox: SandboxDep,
    if_none_exist: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Create a ServiceRequest, or (conditionally) give back the one already made."""
    icb = _find(sandbox, organisation)
    # Read first: a caller that gives up during the delay has still sent its request.
    body = _json_object(await request.body())
    key = _identifier_value(body or {}, _system(icb))
    sandbox.office.count_create(icb.id, key)
    await _arrive(sandbox, icb, authorization)
    resource = _validated(body, request.headers.get("content-type", ""))
    replaced = _replaced(sandbox, icb, resource)
    if if_none_exist:
        matches = _search(sandbox, icb, dict(parse_qsl(if_none_exist)))
        if len(matches) > 1:
            raise FhirError(412, f"{len(matches)} resources match If-None-Exist", code="duplicate")
        if matches:
            if replaced is not None:
                _count_repeat(sandbox, replaced, key or matches[0]["id"])
            return _resource_response(request, matches[0]["resource"], 200)
    case_id = f"sr-{sandbox.office.take_number():06d}"
    case = sandbox.open_case(_case(icb, case_id, resource, key))
    _first_version(case)
    if replaced is not None:
        _file_reopening(sandbox, replaced, case, key or case_id)
    await faults.hold(sandbox.office, icb.id)
    return _resource_response(request, case["resource"], 201)


def _replaced(
    sandbox: Sandbox, icb: Organisation, resource: dict[str, Any]
) -> dict[str, Any] | None:
    """The case a new ServiceRequest `replaces`, if it names one (422 if not one held here)."""
    named = [r.get("reference") for r in resource.get("replaces") or [] if isinstance(r, dict)]
    if not named:
        return None
    replaced_id = str(named[0]).removeprefix("ServiceRequest/")
    case = sandbox.office.case(icb.id, replaced_id)
    if case is None:
        raise FhirError(422, f"replaces {str(named[0])[:60]}: no such ServiceRequest here")
    return case


def _file_reopening(
    sandbox: Sandbox, replaced: dict[str, Any], case: dict[str, Any], key: str
) -> None:
    """The replacing request is a reopening of the one it replaces."""
    case["replaces"], case["reference"] = replaced["id"], None
    replaced["replaced_by"] = case["id"]
    notes = [n.get("text") for n in case["received"].get("note") or [] if isinstance(n, dict)]
    entry = {
        "key": key,
        "id": case["id"],
        "kind": "reopening",
        "text": notes[-1] if notes else None,
        "status": case["status"],
        "attachments": [],
        "received": case["received"],
    }
    sandbox.office.record_follow_up(replaced, entry)


def _count_repeat(sandbox: Sandbox, case: dict[str, Any], key: str) -> None:
    """A repeated follow-up call: counted, and nothing added."""
    for taken in case.get("follow_ups", []):
        if taken["key"] == key:
            sandbox.office.record_follow_up(case, taken)
            return


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _validated(
    body: dict[str, Any] | None, content_type: str, model: type[BaseModel] = ServiceRequest
) -> dict[str, Any]:
    if content_type.split(";")[0].strip() not in (FHIR_JSON, "application/json"):
        raise FhirError(415, f"Send {FHIR_JSON}", code="not-supported")
    if body is None:
        raise FhirError(400, "The body is not a JSON object", code="structure")
    try:
        model.model_validate(body)
    except ValidationError as exc:
        # Where and what, never the values: they may be the citizen's.
        name = model.__name__
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or name}: {e['msg'].splitlines()[0]}"
            for e in exc.errors()
        ]
        raise FhirError(400, "; ".join(problems[:5]), code="invalid") from exc
    return body


def _identifier_value(resource: dict[str, Any], system: str) -> str | None:
    identifiers = [i for i in resource.get("identifier") or [] if isinstance(i, dict)]
    chosen = next((i for i in identifiers if i.get("system") == system), None)
    chosen = chosen or (identifiers[0] if identifiers else None)
    value = chosen.get("value") if chosen else None
    return str(value) if value else None


def _case(
    icb: Organisation, case_id: str, resource: dict[str, Any], key: str | None
) -> dict[str, Any]:
    notes = [n.get("text") for n in resource.get("note") or [] if isinstance(n, dict)]
    case: dict[str, Any] = {
        "id": case_id,
        "organisation": icb.id,
        "protocol": "fhir",
        "reference": key,
        "service_name": (resource.get("code") or {}).get("text"),
        "description": notes[0] if notes else None,
        "dedupe_key": key,
        "received": resource,
        "status": resource.get("status", "active"),
    }
    citizen = _citizen(resource)
    if citizen:
        case["citizen"] = citizen
    return case


def _citizen(resource: dict[str, Any]) -> dict[str, str]:
    """Personal data in the contained Patient the subject points at, in our field names."""
    reference = str((resource.get("subject") or {}).get("reference") or "")
    patients = [
        c
        for c in resource.get("contained") or []
        if c.get("resourceType") == "Patient" and f"#{c.get('id')}" == reference
    ]
    if not patients:
        return {}
    patient = patients[0]
    found: dict[str, str] = {}
    for name in patient.get("name") or []:
        found["name"] = name.get("text") or " ".join(
            [*name.get("given", []), name.get("family", "")]
        )
    for telecom in patient.get("telecom") or []:
        if telecom.get("system") in ("email", "phone"):
            found[telecom["system"]] = telecom.get("value", "")
    for communication in patient.get("communication") or []:
        language = communication.get("language") or {}
        codes = [c.get("code") for c in language.get("coding") or []]
        found["language"] = codes[0] if codes else language.get("text", "")
    return {k: v.strip() for k, v in found.items() if v and v.strip()}


def _first_version(case: dict[str, Any]) -> None:
    resource = {**case["received"], "id": case["id"]}
    resource["meta"] = {
        **(resource.get("meta") or {}),
        "versionId": "1",
        "lastUpdated": _instant(case["created_at"]),
    }
    case["resource"] = resource
    case["versions"] = [resource]


def record_version(case: dict[str, Any], update: dict[str, Any]) -> None:
    """A status move makes a new version, the move's description appended as a note."""
    resource = copy.deepcopy(case["resource"])
    version = len(case["versions"]) + 1
    moment = _instant(update["updated_at"])
    resource["status"] = update["status"]
    resource["meta"] = {**resource["meta"], "versionId": str(version), "lastUpdated": moment}
    resource.setdefault("note", []).append({"text": update["description"], "time": moment})
    case["resource"] = resource
    case["versions"].append(resource)
    update["update_id"] = f"{case['id']}/_history/{version}"


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _resource_response(request: Request, resource: dict[str, Any], status: int) -> JSONResponse:
    version = resource["meta"]["versionId"]
    base = str(request.base_url).rstrip("/")
    organisation = request.path_params["organisation"]
    kind = resource["resourceType"]
    location = f"{base}/{organisation}/fhir/{kind}/{resource['id']}/_history/{version}"
    headers = {"Location": location, "ETag": f'W/"{version}"'}
    return FhirResponse(resource, status, headers=headers)


def _search(sandbox: Sandbox, icb: Organisation, params: dict[str, str]) -> list[dict[str, Any]]:
    """Cases matching _id (comma list) and identifier (system|value, comma list)."""
    ids = {v for v in params.get("_id", "").split(",") if v} or None
    wanted = [_token(v) for v in params.get("identifier", "").split(",") if v] or None
    return [
        case
        for case in sandbox.office.cases.get(icb.id, {}).values()
        if (ids is None or case["id"] in ids)
        and (wanted is None or any(_has_identifier(case["resource"], t) for t in wanted))
    ]


def _token(value: str) -> tuple[str | None, str]:
    system, bar, code = value.partition("|")
    return (system, code) if bar else (None, value)


def _has_identifier(resource: dict[str, Any], token: tuple[str | None, str]) -> bool:
    system, value = token
    return any(
        (system is None or i.get("system") == system) and (not value or i.get("value") == value)
        for i in resource.get("identifier") or []
    )


@router.get("/ServiceRequest")
async def search(
    organisation: str,
    request: Request,
    sandbox: SandboxDep,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """A Bundle searchset of the matching ServiceRequests."""
    icb = _find(sandbox, organisation)
    await _arrive(sandbox, icb, authorization)
    matches = _search(sandbox, icb, dict(request.query_params))
    base = f"{str(request.base_url).rstrip('/')}/{icb.id}/fhir/ServiceRequest"
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [
            {
                "fullUrl": f"{base}/{case['id']}",
                "resource": case["resource"],
                "search": {"mode": "match"},
            }
            for case in matches
        ],
    }
    return FhirResponse(bundle)


@router.get("/ServiceRequest/{resource_id}")
async def read(
    organisation: str,
    resource_id: str,
    request: Request,
    sandbox: SandboxDep,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """The current version."""
    case = await _case_for(sandbox, organisation, resource_id, authorization)
    return _resource_response(request, case["resource"], 200)


@router.get("/ServiceRequest/{resource_id}/_history/{version}")
async def vread(
    organisation: str,
    resource_id: str,
    version: str,
    request: Request,
    sandbox: SandboxDep,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """One version."""
    case = await _case_for(sandbox, organisation, resource_id, authorization)
    versions = case["versions"]
    if not version.isdigit() or not 1 <= int(version) <= len(versions):
        raise FhirError(
            404, f"ServiceRequest/{resource_id} has no version {version}", code="not-found"
        )
    return _resource_response(request, versions[int(version) - 1], 200)


async def _case_for(
    sandbox: Sandbox, organisation: str, resource_id: str, authorization: str | None
) -> dict[str, Any]:
    icb = _find(sandbox, organisation)
    await _arrive(sandbox, icb, authorization)
    case = sandbox.office.case(icb.id, resource_id)
    if case is None:
        raise FhirError(404, f"ServiceRequest/{resource_id} not found", code="not-found")
    return case


@router.put("/ServiceRequest/{resource_id}")
async def update_request(
    organisation: str,
    resource_id: str,
    request: Request,
    sandbox: SandboxDep,
    if_match: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """A version-aware update: the body becomes the next version if If-Match is current."""
    body = _json_object(await request.body())
    case = await _case_for(sandbox, organisation, resource_id, authorization)
    resource = _validated(body, request.headers.get("content-type", ""))
    if resource.get("id") != resource_id:
        raise FhirError(400, f"The body's id is not {resource_id[:40]}", code="invalid")
    current = case["resource"]["meta"]["versionId"]
    if _etag_version(if_match) != current:
        raise FhirError(412, f"If-Match must name the current version, {current}", code="conflict")
    before = case["resource"]
    update = _next_version(case, resource)
    if before.get("status") != "revoked" and resource.get("status") == "revoked":
        entry = {
            "key": update["update_id"],
            "id": update["update_id"],
            "kind": "withdrawal",
            "text": update["description"],
            "status": "revoked",
            "attachments": [],
            "received": resource,
        }
        sandbox.office.record_follow_up(case, entry)
    await faults.hold(sandbox.office, case["organisation"])
    return _resource_response(request, case["resource"], 200)


def _etag_version(etag: str | None) -> str | None:
    """`1` from W/"1" (or "1")."""
    if not etag:
        return None
    return etag.strip().removeprefix("W/").strip('"')


def _next_version(case: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    """The caller's resource as the next version; its new notes are the update's description."""
    now = utc_now()
    version = len(case["versions"]) + 1
    earlier_notes = len(case["resource"].get("note") or [])
    added = [n.get("text") or "" for n in (resource.get("note") or [])[earlier_notes:]]
    stored = {
        **resource,
        "meta": {
            **(resource.get("meta") or {}),
            "versionId": str(version),
            "lastUpdated": _instant(now),
        },
    }
    update = {
        "update_id": f"{case['id']}/_history/{version}",
        "status": stored.get("status", case["status"]),
        "description": "\n".join(added) or None,
        "updated_at": now,
    }
    case.update(resource=stored, status=update["status"], updated_at=now)
    case["versions"].append(stored)
    case["updates"].append(update)
    return update


@router.post("/Communication")
async def communicate(
    organisation: str,
    request: Request,
    sandbox: SandboxDep,
    if_none_exist: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Create a Communication about a ServiceRequest held here, or give back the one made."""
    icb = _find(sandbox, organisation)
    body = _json_object(await request.body())
    await _arrive(sandbox, icb, authorization)
    resource = _validated(body, request.headers.get("content-type", ""), Communication)
    case = _based_on(sandbox, icb, resource)
    files = _contained_files(resource)
    key = _identifier_value(resource, _follow_up_system(icb))
    if if_none_exist:
        matches = _matching_communications(sandbox, icb, dict(parse_qsl(if_none_exist)))
        if len(matches) > 1:
            raise FhirError(412, f"{len(matches)} resources match If-None-Exist", code="duplicate")
        if matches:
            _count_repeat(sandbox, case, key or matches[0]["id"])
            return _resource_response(request, matches[0], 200)
    stored = {
        **resource,
        "id": f"comm-{sandbox.office.take_number():06d}",
        "meta": {"versionId": "1", "lastUpdated": _instant(utc_now())},
    }
    case.setdefault("communications", []).append(stored)
    texts = [p["contentString"] for p in resource.get("payload") or [] if "contentString" in p]
    entry = {
        "key": key or stored["id"],
        "id": stored["id"],
        "kind": "information",
        "text": "\n".join(texts) or None,
        "status": None,
        "attachments": files,
        "received": _without_data(resource),
    }
    sandbox.office.record_follow_up(case, entry)
    await faults.hold(sandbox.office, icb.id)
    return _resource_response(request, stored, 201)


def _follow_up_system(organisation: Organisation) -> str:
    extra = organisation.adapter.model_extra or {}
    return str(extra.get("follow_up_system", DEFAULT_FOLLOW_UP_SYSTEM))


def _based_on(sandbox: Sandbox, icb: Organisation, resource: dict[str, Any]) -> dict[str, Any]:
    """The case the Communication is about (422 unless basedOn names one held here)."""
    for based in resource.get("basedOn") or []:
        reference = str(based.get("reference") or "") if isinstance(based, dict) else ""
        if reference.startswith("ServiceRequest/"):
            case = sandbox.office.case(icb.id, reference.removeprefix("ServiceRequest/"))
            if case is not None:
                return case
    raise FhirError(422, "basedOn names no ServiceRequest held here", code="processing")


def _contained_files(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Each contentAttachment as received, its data checked against its size and hash."""
    files = []
    for number, part in enumerate(resource.get("payload") or []):
        attachment = part.get("contentAttachment")
        if not isinstance(attachment, dict):
            continue
        where = f"Communication.payload[{number}].contentAttachment"
        try:
            content = base64.b64decode(str(attachment.get("data") or ""), validate=True)
        except binascii.Error as exc:
            raise FhirError(400, f"{where}.data is not base64", code="invalid") from exc
        if attachment.get("size") is not None and attachment["size"] != len(content):
            raise FhirError(400, f"{where}.size is not the data's size", code="invalid")
        sha1 = base64.b64encode(hashlib.sha1(content).digest()).decode()  # noqa: S324
        if attachment.get("hash") is not None and attachment["hash"] != sha1:
            raise FhirError(400, f"{where}.hash is not the data's SHA-1", code="invalid")
        content_type = str(attachment.get("contentType") or "application/octet-stream")
        files.append(file_record(content, content_type, title=attachment.get("title"), sha1=sha1))
    return files


def _without_data(resource: dict[str, Any]) -> dict[str, Any]:
    """The Communication as received, each file's data replaced by its length (kept readable)."""
    shown = copy.deepcopy(resource)
    for part in shown.get("payload") or []:
        attachment = part.get("contentAttachment")
        if isinstance(attachment, dict) and "data" in attachment:
            attachment["data"] = f"<{len(str(attachment['data']))} base64 characters>"
    return shown


def _matching_communications(
    sandbox: Sandbox, icb: Organisation, params: dict[str, str]
) -> list[dict[str, Any]]:
    wanted = [_token(v) for v in params.get("identifier", "").split(",") if v]
    if not wanted:
        return []
    return [
        communication
        for case in sandbox.office.cases.get(icb.id, {}).values()
        for communication in case.get("communications", [])
        if any(_has_identifier(communication, token) for token in wanted)
    ]
