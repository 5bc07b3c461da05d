"""A district council's Open311 GeoReport v2 server, at /{org}/open311/v2/, for organisations
whose adapter type is "open311".

- services.json lists the services of the catalogue handled by districts, under the codes the
  organisation's adapter maps ours to (`service_codes`, ours → theirs; unmapped ones as ours);
  services/{code}.json gives their attributes, plus the hidden `iap_reference` one.
- POST requests.json (form): api_key must equal the adapter's configured `api_key` (403
  otherwise); dedupes on attribute[iap_reference] (or the adapter's `reference_attribute`): a
  repeat gets 400 "Request already exists: service_request_id <id>", as FixMyStreet's
  integrations answer. With the behaviour `answer_with_token` it answers [{"token"}] and the id
  shows at tokens/{token}.json after `token_delay_seconds` ([{"token"}] until then).
- GET requests.json (filters service_request_id, service_code, status: comma lists; start_date,
  end_date on requested_datetime), requests/{id}.json; every request carries `iap_reference`
  and its attributes.
- With the behaviour `plain`, a council that follows the spec and no more: no dedupe (a repeat
  makes a second case, which `duplicates()` shows), and requests without `iap_reference` or
  attributes. `list_limit` caps every list answer at that many requests, the oldest first.
- GET servicerequestupdates.json?start_date&end_date (mySociety's extension): every status move.
- POST servicerequestupdates.json (form, mySociety's extension as open311-adapter takes it):
  api_key as for a create; service_request_id, update_id, status (OPEN, CLOSED, REOPEN, ...),
  updated_datetime and description required. It is filed on the case as a follow-up (office.py),
  keyed on update_id: CLOSED is a withdrawal, REOPEN (or OPEN on a case at a final word) a
  reopening, anything else information. Each media_url (repeated for several) is fetched and
  recorded as the file it served; a URL that answers 4xx gets 400, one that fails otherwise
  503, and nothing is filed. The answer is {"service_request_updates": [{"update_id"}]}, the
  council's own id; a repeated update_id gets the same answer and adds nothing. Follow-ups are
  not status moves: they change no status, and GET servicerequestupdates never lists them.
- `citizen_attributes` in the adapter's config ({language: iap_language, ...}): the citizen's
  details a create carries as those attributes, recorded on the case's citizen like the spec's
  contact fields, and listed as hidden attributes in every service definition.
Errors are Open311's JSON array [{"code", "description"}]. Words: open → in_progress →
action_scheduled → fixed (any word can be set by hand).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from app.catalogue.catalogue import Organisation, Service, Tier
from app.sandbox import faults
from app.sandbox.core import Sandbox, SandboxDep
from app.sandbox.files import file_record
from app.sandbox.office import BackOffice
from app.sandbox.pushes import external_status_code

router = APIRouter(prefix="/{organisation}/open311/v2")
NOTICE = "Thank you for your report. We aim to respond within 10 working days."
CITIZEN_FIELDS = ("email", "first_name", "last_name", "phone")
# The statuses an update may ask for (open311-adapter's status_extended_upper).
UPDATE_STATUSES = frozenset(
    {
        "OPEN",
        "CLOSED",
        "FIXED",
        "IN_PROGRESS",
        "ACTION_SCHEDULED",
        "INVESTIGATING",
        "DUPLICATE",
        "NOT_COUNCILS_RESPONSIBILITY",
        "NO_FURTHER_ACTION",
        "INTERNAL_REFERRAL",
        "REOPEN",
        "FOR_TRIAGE",
    }
)
UPDATE_FIELDS = ("service_request_id", "update_id", "status", "updated_datetime", "description")
# A case at one of these words is done with: OPEN on it asks for it to be reopened.
FINAL_WORDS = frozenset(
    {"fixed", "closed", "duplicate", "not_councils_responsibility", "no_further_action"}
)
MEDIA_TIMEOUT_SECONDS = 10.0


class Open311Error(faults.SimulatorError):
    """Open311's error array."""

    def response(self) -> JSONResponse:
        """[{"code", "description"}], as GeoReport v2 answers errors."""
        body = [{"code": self.status, "description": self.message}]
        return JSONResponse(body, self.status, headers=self.headers)


def _find(sandbox: Sandbox, organisation_id: str) -> Organisation:
    organisation = sandbox.organisation(organisation_id, "open311")
    if organisation is None:
        raise Open311Error(404, f"No Open311 endpoint for '{organisation_id}'")
    return organisation


async def _arrive(sandbox: Sandbox, organisation: Organisation) -> None:
    fault = await faults.arrive(sandbox.office, organisation.id)
    if fault is not None:
        raise Open311Error(fault.status, "Service unavailable", headers=fault.headers)


async def _district(sandbox: Sandbox, organisation_id: str) -> Organisation:
    """The district answering at this path, once its behaviour lets the call through."""
    organisation = _find(sandbox, organisation_id)
    await _arrive(sandbox, organisation)
    return organisation


def _setting(organisation: Organisation, name: str, default: Any = None) -> Any:
    return (organisation.adapter.model_extra or {}).get(name, default)


def _check_api_key(organisation: Organisation, given: str | None, *, required: bool) -> None:
    if given is None and not required:
        return
    expected = _setting(organisation, "api_key")
    if not given or (expected is not None and given != str(expected)):
        raise Open311Error(403, "Invalid api_key")


def _their_code(organisation: Organisation, ours: str) -> str:
    return str(_setting(organisation, "service_codes", {}).get(ours, ours))


def _services(sandbox: Sandbox, organisation: Organisation) -> dict[str, Service]:
    """The district-tier services, by the organisation's own code."""
    assert sandbox.catalogue is not None  # an organisation was found in it
    return {
        _their_code(organisation, s.code): s
        for s in sandbox.catalogue.services.values()
        if Tier.district in s.tiers
    }


@router.get("/services.json")
async def services(organisation: str, sandbox: SandboxDep) -> JSONResponse:
    """The service list."""
    district = await _district(sandbox, organisation)
    listed = [
        {
            "service_code": code,
            "service_name": service.name,
            "description": service.description or service.name,
            "metadata": True,
            "type": "realtime",
            "keywords": ",".join(service.keywords),
            "group": service.group,
        }
        for code, service in _services(sandbox, district).items()
    ]
    return JSONResponse(listed)


@router.get("/services/{service_code}.json")
async def service_definition(
    organisation: str, service_code: str, sandbox: SandboxDep
) -> JSONResponse:
    """One service's attributes."""
    district = await _district(sandbox, organisation)
    service = _services(sandbox, district).get(service_code)
    if service is None:
        raise Open311Error(404, f"Service '{service_code}' not found")
    attributes = [
        {
            "variable": True,
            "code": a.code,
            "datatype": a.datatype,
            "required": a.required,
            "datatype_description": None,
            "order": order,
            "description": a.description,
            "values": [{"key": v.key, "name": v.name} for v in a.values],
        }
        for order, a in enumerate(service.attributes, start=1)
    ]
    attributes.append(_hidden_reference(district, len(attributes) + 1))
    for field, code in _citizen_attributes(district).items():
        attributes.append(_hidden_citizen_attribute(field, code, len(attributes) + 1))
    return JSONResponse({"service_code": service_code, "attributes": attributes})


def _hidden_reference(organisation: Organisation, order: int) -> dict[str, Any]:
    return {
        "variable": False,
        "code": _setting(organisation, "reference_attribute", "iap_reference"),
        "datatype": "string",
        "required": False,
        "datatype_description": None,
        "order": order,
        "description": "Reference of the enquiry at the integrated access point",
        "values": [],
    }


def _citizen_attributes(organisation: Organisation) -> dict[str, str]:
    """Our citizen field → the attribute code agreed for it (the adapter's citizen_attributes)."""
    return {str(k): str(v) for k, v in (_setting(organisation, "citizen_attributes") or {}).items()}


def _hidden_citizen_attribute(field: str, code: str, order: int) -> dict[str, Any]:
    return {
        "variable": False,
        "code": code,
        "datatype": "string",
        "required": False,
        "datatype_description": None,
        "order": order,
        "description": f"The citizen's {field.replace('_', ' ')}, where they may be shared",
        "values": [],
    }


@router.post("/requests.json")
async def create_request(organisation: str, request: Request, sandbox: SandboxDep) -> JSONResponse:
    """Create a service request from the form."""
    district = _find(sandbox, organisation)
    # Read first: a caller that gives up during the delay has still sent its request.
    pairs = parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True)
    fields, attributes = _split_form(pairs)
    reference = attributes.get(_setting(district, "reference_attribute", "iap_reference"))
    sandbox.office.count_create(district.id, str(reference) if reference else None)
    await _arrive(sandbox, district)
    _check_api_key(district, fields.get("api_key"), required=True)
    _check_jurisdiction(district, fields.get("jurisdiction_id"))
    their_code = fields.get("service_code", "")
    service = _services(sandbox, district).get(their_code)
    if service is None:
        raise Open311Error(400, f"service_code '{their_code}' is not a service of ours")
    existing = sandbox.office.by_key.get((district.id, str(reference))) if reference else None
    if existing is not None and not sandbox.office.behaviour_for(district.id).plain:
        raise Open311Error(400, f"Request already exists: service_request_id {existing}")
    case_id = str(1000 + sandbox.office.take_number())
    case = _case(district, case_id, service, their_code, fields, attributes, reference)
    sandbox.open_case(case)
    answer = _answer(sandbox, district.id, case_id)
    await faults.hold(sandbox.office, district.id)
    return JSONResponse([answer])


def _split_form(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, Any]]:
    """Plain fields, and attribute[code] (one value) / attribute[code][] (a list) by code."""
    fields: dict[str, str] = {}
    attributes: dict[str, Any] = {}
    for name, value in pairs:
        if name.startswith("attribute[") and name.endswith("[]"):
            attributes.setdefault(name[10:-3], []).append(value)
        elif name.startswith("attribute[") and name.endswith("]"):
            attributes[name[10:-1]] = value
        else:
            fields[name] = value
    return fields, attributes


def _check_jurisdiction(organisation: Organisation, given: str | None) -> None:
    expected = _setting(organisation, "jurisdiction_id")
    if given and expected and given != str(expected):
        raise Open311Error(404, f"jurisdiction_id '{given}' not found")


def _case(
    organisation: Organisation,
    case_id: str,
    service: Service,
    their_code: str,
    fields: dict[str, str],
    attributes: dict[str, Any],
    reference: Any,
) -> dict[str, Any]:
    received: dict[str, Any] = {k: v for k, v in fields.items() if k != "api_key"}
    case: dict[str, Any] = {
        "id": case_id,
        "organisation": organisation.id,
        "protocol": "open311",
        "reference": str(reference) if reference else None,
        "service_code": service.code,
        "their_service_code": their_code,
        "service_name": service.name,
        "description": fields.get("description", ""),
        "dedupe_key": str(reference) if reference else None,
        "received": {**received, "attributes": attributes},
        "attributes": attributes,
        "lat": _number(fields.get("lat")),
        "long": _number(fields.get("long")),
        "address_string": fields.get("address_string"),
    }
    citizen = _citizen(fields, attributes, _citizen_attributes(organisation))
    if citizen:
        case["citizen"] = citizen
    return case


def _citizen(
    fields: dict[str, str], attributes: dict[str, Any], agreed: dict[str, str]
) -> dict[str, str]:
    """The personal data the form carried, in our field names: the spec's contact fields and
    the attributes agreed for the citizen's other details."""
    name = " ".join(fields[k] for k in ("first_name", "last_name") if fields.get(k))
    found = {"name": name, "email": fields.get("email", ""), "phone": fields.get("phone", "")}
    found |= {field: str(attributes.get(code) or "") for field, code in agreed.items()}
    return {k: v for k, v in found.items() if v}


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _answer(sandbox: Sandbox, organisation_id: str, case_id: str) -> dict[str, Any]:
    behaviour = sandbox.office.behaviour_for(organisation_id)
    if not behaviour.answer_with_token:
        return {"service_request_id": case_id, "service_notice": NOTICE}
    token = secrets.token_hex(8)
    known_from = time.monotonic() + behaviour.token_delay_seconds
    sandbox.office.open311_tokens[token] = (organisation_id, case_id, known_from)
    return {"token": token, "service_notice": NOTICE}


@router.get("/tokens/{token}.json")
async def token_status(organisation: str, token: str, sandbox: SandboxDep) -> JSONResponse:
    """The id a token stands for, once the district's system has made the request."""
    district = await _district(sandbox, organisation)
    found = sandbox.office.open311_tokens.get(token)
    if found is None or found[0] != district.id:
        raise Open311Error(404, f"Token '{token}' not found")
    _, case_id, known_from = found
    if time.monotonic() < known_from:
        return JSONResponse([{"token": token}])
    return JSONResponse([{"service_request_id": case_id, "token": token}])


@router.get("/requests.json")
async def list_requests(
    organisation: str,
    sandbox: SandboxDep,
    api_key: str | None = None,
    service_request_id: str | None = None,
    service_code: str | None = None,
    status: str | None = None,
    start_date: Annotated[str | None, Query()] = None,
    end_date: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    """Requests matching every filter given, oldest first."""
    district = await _district(sandbox, organisation)
    _check_api_key(district, api_key, required=False)
    start, end = _date(start_date, "start_date"), _date(end_date, "end_date")
    ids, codes, words = _list(service_request_id), _list(service_code), _list(status)
    behaviour = sandbox.office.behaviour_for(district.id)
    found = [
        _request_json(district, case, plain=behaviour.plain)
        for case in sandbox.office.cases.get(district.id, {}).values()
        if (ids is None or case["id"] in ids)
        and (codes is None or case["their_service_code"] in codes)
        and (words is None or case["status"] in words)
        and _within(case["created_at"], start, end)
    ]
    return JSONResponse(found[: behaviour.list_limit])


@router.get("/requests/{service_request_id}.json")
async def one_request(
    organisation: str, service_request_id: str, sandbox: SandboxDep
) -> JSONResponse:
    """One request, as a one-element array."""
    district = await _district(sandbox, organisation)
    case = sandbox.office.case(district.id, service_request_id)
    if case is None:
        raise Open311Error(404, f"Service request {service_request_id} not found")
    plain = sandbox.office.behaviour_for(district.id).plain
    return JSONResponse([_request_json(district, case, plain=plain)])


@router.get("/servicerequestupdates.json")
async def updates(
    organisation: str,
    sandbox: SandboxDep,
    api_key: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
) -> JSONResponse:
    """Every status move in the window, oldest first."""
    district = await _district(sandbox, organisation)
    _check_api_key(district, api_key, required=False)
    start, end = _date(start_date, "start_date"), _date(end_date, "end_date")
    found = [
        {
            "update_id": update["update_id"],
            "service_request_id": case["id"],
            "status": update["status"],
            "updated_datetime": _iso(update["updated_at"]),
            "description": update["description"],
            "external_status_code": external_status_code(update["status"]),
            "media_url": "",
        }
        for case in sandbox.office.cases.get(district.id, {}).values()
        for update in case["updates"]
        if _within(update["updated_at"], start, end)
    ]
    found.sort(key=lambda u: u["updated_datetime"])
    return JSONResponse({"service_request_updates": found})


@router.post("/servicerequestupdates.json")
async def post_update(organisation: str, request: Request, sandbox: SandboxDep) -> JSONResponse:
    """File a follow-up on its case once, with the files its media_url serve."""
    district = _find(sandbox, organisation)
    pairs = parse_qsl((await request.body()).decode(errors="replace"), keep_blank_values=True)
    fields = {k: v for k, v in pairs if k not in ("media_url", "media_url[]")}
    media = [v for k, v in pairs if k in ("media_url", "media_url[]") and v]
    key = fields.get("update_id") or ""
    try:
        await _arrive(sandbox, district)
        case = _updated_case(sandbox, district, fields)
        held = _taken(case, key) or await _follow_up(case, fields, media)
    except Open311Error:
        _count_follow_up(sandbox.office, district.id, key)
        raise
    sandbox.office.record_follow_up(case, held)  # a repeat is counted, and adds nothing
    await faults.hold(sandbox.office, district.id)
    return JSONResponse({"service_request_updates": [{"update_id": held["id"]}]})


def _updated_case(
    sandbox: Sandbox, district: Organisation, fields: dict[str, str]
) -> dict[str, Any]:
    """The case an update is for, once its form is one a council takes."""
    _check_api_key(district, fields.get("api_key"), required=True)
    _check_jurisdiction(district, fields.get("jurisdiction_id"))
    missing = [name for name in UPDATE_FIELDS if name not in fields]
    if missing or not fields["update_id"]:
        raise Open311Error(400, f"Missing required fields: {', '.join(missing or ['update_id'])}")
    if fields["status"] not in UPDATE_STATUSES:
        raise Open311Error(400, f"status '{fields['status'][:40]}' is not a status of ours")
    _date(fields["updated_datetime"], "updated_datetime")
    case = sandbox.office.case(district.id, fields["service_request_id"])
    if case is None:
        raise Open311Error(404, f"Service request {fields['service_request_id'][:60]} not found")
    return case


def _taken(case: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The follow-up this case already holds under this update_id."""
    return next((f for f in case.get("follow_ups", []) if f["key"] == key), None)


async def _follow_up(
    case: dict[str, Any], fields: dict[str, str], media: list[str]
) -> dict[str, Any]:
    """The follow-up to file: what it says, and each file as fetched from its media_url."""
    received: dict[str, Any] = {k: v for k, v in fields.items() if k != "api_key"}
    # The signed URLs' query strings are bearer secrets until they expire: left out.
    received["media_url"] = [urlsplit(url)._replace(query="").geturl() for url in media]
    return {
        "id": f"{case['id']}-U{len(case.get('follow_ups', [])) + 1}",
        "key": fields["update_id"],
        "kind": _kind(case, fields["status"]),
        "text": fields["description"],
        "status": fields["status"],
        "attachments": [await _fetch(url) for url in media],
        "received": received,
    }


def _kind(case: dict[str, Any], status: str) -> str:
    """What the update asks for, as a council would read it."""
    if status == "CLOSED":
        return "withdrawal"
    if status == "REOPEN" or (status == "OPEN" and case["status"] in FINAL_WORDS):
        return "reopening"
    return "information"


async def _fetch(url: str) -> dict[str, Any]:
    """One media_url's file, fetched as a council's system fetches it."""
    try:
        async with httpx.AsyncClient(timeout=MEDIA_TIMEOUT_SECONDS) as client:
            answer = await client.get(url)
    except (httpx.HTTPError, ValueError) as exc:
        raise Open311Error(503, f"media_url could not be fetched: {type(exc).__name__}") from exc
    if answer.status_code >= 400:
        status = 400 if answer.status_code < 500 else 503
        raise Open311Error(status, f"media_url answered HTTP {answer.status_code}")
    content_type = answer.headers.get("content-type", "application/octet-stream")
    return file_record(answer.content, content_type.split(";")[0].strip())


def _count_follow_up(office: BackOffice, organisation_id: str, key: str) -> None:
    """Count a follow-up call that failed, as record_follow_up counts those that arrive."""
    slot = (organisation_id, key)
    office.follow_up_posts[slot] = office.follow_up_posts.get(slot, 0) + 1


def _request_json(
    organisation: Organisation, case: dict[str, Any], *, plain: bool = False
) -> dict[str, Any]:
    last = case["updates"][-1]["description"] if case["updates"] else None
    spec = {
        "service_request_id": case["id"],
        "status": case["status"],
        "status_notes": last,
        "service_name": case["service_name"],
        "service_code": case["their_service_code"],
        "description": case["description"],
        "agency_responsible": organisation.name,
        "service_notice": NOTICE,
        "requested_datetime": _iso(case["created_at"]),
        "updated_datetime": _iso(case["updated_at"]),
        "expected_datetime": None,
        "address": case["address_string"],
        "address_id": None,
        "zipcode": None,
        "lat": case["lat"],
        "long": case["long"],
        "media_url": None,
    }
    if plain:
        return spec
    return {**spec, "iap_reference": case["reference"], "attributes": case["attributes"]}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _list(value: str | None) -> set[str] | None:
    return {v.strip() for v in value.split(",") if v.strip()} if value else None


def _date(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError as exc:
        raise Open311Error(400, f"{name} is not an ISO 8601 date") from exc
    if moment.tzinfo is None:
        raise Open311Error(400, f"{name} needs a time zone")
    return moment


def _within(moment: datetime, start: datetime | None, end: datetime | None) -> bool:
    # Compared at whole seconds, as the times are shown, so a cursor taken from an answer
    # finds that update again rather than missing any in the same second.
    shown = moment.replace(microsecond=0)
    return (start is None or shown >= start) and (end is None or shown <= end)
