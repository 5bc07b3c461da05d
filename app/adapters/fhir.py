"""`fhir`: an NHS ICB's FHIR R4 server; each enquiry becomes one ServiceRequest.

Creates are conditional (`If-None-Exist: identifier=<system>|<reference>`), so a create repeated
after an ambiguous failure finds the ServiceRequest the first attempt made (200) instead of making
a second one (201). Status comes back by polling `ServiceRequest?_id=...`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import AnyHttpUrl, SecretStr, ValidationError

from app.adapters.base import (
    Adapter,
    AdapterConfig,
    Delivery,
    EnquirySnapshot,
    PermanentError,
    PollResult,
    Receipt,
    RemoteUpdate,
    Tracked,
    raise_for_response,
    transport_error,
)
from app.catalogue.status import FHIR_WORDS

FHIR_JSON = "application/fhir+json"
# Ids per search: keeps the query string well inside every server's URL limit.
POLL_CHUNK = 50
# Notes we write carry this author, so that polling reports only what the ICB wrote.
NOTE_AUTHOR = "IAP integrated access point"
WITHHELD = "Citizen (details withheld)"
BCP47 = "urn:ietf:bcp:47"


class FhirConfig(AdapterConfig):
    base_url: AnyHttpUrl
    identifier_system: str = "urn:iap:enquiry-reference"
    bearer_token: SecretStr | None = None


class FhirAdapter(Adapter):
    config_model = FhirConfig
    config: FhirConfig
    status_words = FHIR_WORDS
    can_poll = True

    async def deliver(self, delivery: Delivery) -> Receipt:
        """Conditionally create the ServiceRequest; an existing one with our identifier is kept."""
        system = self.config.identifier_system
        body = service_request(delivery, system=system)
        headers = {
            **self._headers(),
            "Content-Type": FHIR_JSON,
            "If-None-Exist": f"identifier={system}|{delivery.enquiry.reference}",
        }
        url = f"{self._base}/ServiceRequest"
        response = await self._call("POST", url, headers, content=body)
        return Receipt(remote_reference=created_id(response))

    async def poll(self, tracked: Sequence[Tracked], *, cursor: str | None) -> PollResult:
        """The current version of every tracked ServiceRequest; the version id makes it stable."""
        wanted = list(dict.fromkeys(t.remote_reference for t in tracked))
        updates: list[RemoteUpdate] = []
        for start in range(0, len(wanted), POLL_CHUNK):
            chunk = wanted[start : start + POLL_CHUNK]
            async for resource in self._search(chunk):
                if resource.get("id") in chunk:
                    updates.append(remote_update(resource))
        return PollResult(updates=updates)

    async def _search(self, ids: list[str]) -> AsyncIterator[dict[str, Any]]:
        url: str | None = f"{self._base}/ServiceRequest"
        params: dict[str, str] | None = {"_id": ",".join(ids)}
        visited: set[str] = set()
        while url is not None and url not in visited:
            visited.add(url)
            response = await self._call("GET", url, self._headers(), params=params)
            bundle = json_body(response, what="search answer")
            if bundle.get("resourceType") != "Bundle":
                raise PermanentError(f"HTTP {response.status_code}: search answer is not a Bundle")
            for resource in bundle_resources(bundle):
                yield resource
            url, params = self._next_page(bundle), None

    def _next_page(self, bundle: dict[str, Any]) -> str | None:
        # Follow paging only on the same server: the bearer token must not go anywhere else.
        for link in bundle.get("link") or []:
            if isinstance(link, dict) and link.get("relation") == "next":
                url = str(link.get("url") or "")
                if urlsplit(url)[:2] == urlsplit(self._base)[:2]:
                    return url
        return None

    async def _call(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        content: str | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = await self.client.request(
                method, url, content=content, params=params, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        raise_for_fhir_response(response)
        return response

    @property
    def _base(self) -> str:
        return str(self.config.base_url).rstrip("/")

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": FHIR_JSON}
        if self.config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.config.bearer_token.get_secret_value()}"
        return headers


def service_request(delivery: Delivery, *, system: str) -> str:
    """The ServiceRequest for this enquiry as FHIR JSON, validated as R4 before it leaves."""
    enquiry = delivery.enquiry
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": system, "value": enquiry.reference}],
        "status": "active",
        # "order": the citizen asks the ICB to act and expects an answer, which is what "order"
        # means among FHIR's request intents (a request for action, made by someone entitled
        # to make it). "proposal" is a suggestion the ICB could leave unanswered and "plan" an
        # intention of our own; receiving systems put neither on a list of work to do.
        "intent": "order",
        "code": {"text": enquiry.service_name},
        "authoredOn": enquiry.created_at.astimezone(UTC).isoformat(),
        "note": notes(enquiry),
        "subject": {"display": WITHHELD},
    }
    patient = contained_patient(enquiry.citizen)
    if patient is not None:
        resource["contained"] = [patient]
        resource["subject"] = {"reference": "#citizen"}
    try:
        validated = ServiceRequest.model_validate(resource)
    except ValidationError as exc:
        # Only where it failed: pydantic's own message quotes the values, which may be personal.
        where = "; ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise PermanentError(f"our ServiceRequest is not valid FHIR R4: {where}") from exc
    json_text: str = validated.model_dump_json()
    return json_text


def notes(enquiry: EnquirySnapshot) -> list[dict[str, str]]:
    """The description, then the enquiry's answers as `code: value` lines."""
    result = [{"authorString": NOTE_AUTHOR, "text": enquiry.description}]
    lines = [f"{code}: {note_value(value)}" for code, value in enquiry.attributes.items()]
    if lines:
        result.append({"authorString": NOTE_AUTHOR, "text": "\n".join(lines)})
    return result


def note_value(value: Any) -> str:
    """An attribute's value as people read it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def contained_patient(citizen: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A Patient with only the shared name, email, phone and language; None when none is."""
    citizen = citizen or {}
    patient: dict[str, Any] = {}
    if citizen.get("name"):
        patient["name"] = [{"text": citizen["name"]}]
    telecom = [
        {"system": system, "value": citizen[system]}
        for system in ("email", "phone")
        if citizen.get(system)
    ]
    if telecom:
        patient["telecom"] = telecom
    if citizen.get("language"):
        language = {"coding": [{"system": BCP47, "code": citizen["language"]}]}
        patient["communication"] = [{"language": language, "preferred": True}]
    if not patient:
        return None
    return {"resourceType": "Patient", "id": "citizen", **patient}


def raise_for_fhir_response(response: httpx.Response) -> None:
    """The shared mapping, told by the OperationOutcome; 412 means several matches."""
    if response.status_code == 412:
        host = response.request.url.host
        raise PermanentError(
            f"HTTP 412 from {host}{outcome_summary(response)} "
            "(several ServiceRequests carry our identifier)"
        )
    raise_for_response(response, detail=outcome_summary)


def outcome_summary(response: httpx.Response) -> str:
    """`: <diagnostics>` of an OperationOutcome's first issue, else nothing."""
    try:
        outcome = response.json()
    except ValueError:
        return ""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    issues = outcome.get("issue") or [{}]
    first = issues[0] if isinstance(issues[0], dict) else {}
    text = first.get("diagnostics") or first.get("code")
    return f": {str(text)[:200]}" if text else ""


def json_body(response: httpx.Response, *, what: str) -> dict[str, Any]:
    """The answer as a JSON object, or a PermanentError naming what it should have been."""
    try:
        answer = response.json()
    except ValueError as exc:
        raise PermanentError(f"HTTP {response.status_code}: {what} is not JSON") from exc
    if not isinstance(answer, dict):
        raise PermanentError(f"HTTP {response.status_code}: {what} is not a JSON object")
    return answer


def created_id(response: httpx.Response) -> str:
    """The ServiceRequest id from the answer's body, else from its Location header."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("resourceType") == "ServiceRequest":
        resource_id = answer.get("id")
        if isinstance(resource_id, str) and resource_id:
            return resource_id
    location_id = id_from_location(response.headers.get("location", ""))
    if location_id is None:
        raise PermanentError(
            f"HTTP {response.status_code} without a ServiceRequest id in its body or Location"
        )
    return location_id


def id_from_location(location: str) -> str | None:
    """`<id>` from `.../ServiceRequest/<id>/_history/<version>` (or without the history part)."""
    parts = urlsplit(location).path.rstrip("/").split("/")
    if "ServiceRequest" not in parts:
        return None
    after = parts[len(parts) - parts[::-1].index("ServiceRequest") :]
    return after[0] if after and after[0] else None


def bundle_resources(bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ServiceRequests in a searchset; an OperationOutcome entry (warnings) is skipped."""
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "ServiceRequest":
            yield resource


def remote_update(resource: dict[str, Any]) -> RemoteUpdate:
    """One version of a ServiceRequest as an update; the same version always gets the same id."""
    meta = resource.get("meta") or {}
    version, updated, status = (
        meta.get("versionId"),
        meta.get("lastUpdated"),
        resource.get("status"),
    )
    if not (version and updated and isinstance(status, str)):
        raise PermanentError(
            "a ServiceRequest in the search answer lacks versionId, lastUpdated or status"
        )
    try:
        updated_at = datetime.fromisoformat(str(updated))
    except ValueError as exc:
        raise PermanentError("a ServiceRequest's meta.lastUpdated is not an instant") from exc
    if updated_at.tzinfo is None:
        raise PermanentError("a ServiceRequest's meta.lastUpdated has no time zone")
    return RemoteUpdate(
        remote_reference=str(resource["id"]),
        update_id=f"{resource['id']}/_history/{version}",
        status=status,
        description=their_last_note(resource),
        updated_at=updated_at.astimezone(UTC),
    )


def their_last_note(resource: dict[str, Any]) -> str | None:
    """The last note the ICB wrote; ours (the enquiry itself) is no news to anyone."""
    for note in reversed(resource.get("note") or []):
        if isinstance(note, dict) and note.get("authorString") != NOTE_AUTHOR and note.get("text"):
            return str(note["text"])
    return None
