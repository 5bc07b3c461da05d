"""`fhir`: an NHS ICB's FHIR R4 server; each enquiry becomes one ServiceRequest.

Creates are conditional (`If-None-Exist: identifier=<system>|<reference>`), so a create repeated
after an ambiguous failure finds the ServiceRequest the first attempt made (200) instead of making
a second one (201). Status comes back by polling `ServiceRequest?_id=...`.

Follow-ups: information is a `Communication` based on the ServiceRequest (its text a
contentString, each file a contentAttachment), created conditionally on an identifier from the
follow-up id; a withdrawal revokes the ServiceRequest (read, then a version-aware update with
If-Match, our reason as a note); a reopening is a new ServiceRequest that `replaces` the
completed one, created conditionally on the follow-up id, and the part follows the new one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from fhir.resources.R4B.communication import Communication
from fhir.resources.R4B.servicerequest import ServiceRequest
from pydantic import AnyHttpUrl, BaseModel, SecretStr, ValidationError

from app.adapters.base import (
    Adapter,
    AdapterConfig,
    AttachmentFile,
    Delivery,
    EnquirySnapshot,
    FollowUp,
    FollowUpReceipt,
    PermanentError,
    PollResult,
    Receipt,
    RemoteUpdate,
    RetryableError,
    Tracked,
    raise_for_response,
    transport_error,
)
from app.catalogue.status import FHIR_WORDS
from app.core.vocabulary import MessageKind

FHIR_JSON = "application/fhir+json"
# Ids per search: keeps the query string well inside every server's URL limit.
POLL_CHUNK = 50
# Notes we write carry this author, so that polling reports only what the ICB wrote.
NOTE_AUTHOR = "IAP integrated access point"
WITHHELD = "Citizen (details withheld)"
BCP47 = "urn:ietf:bcp:47"
# A ServiceRequest in one of these is over: nothing is left to revoke.
ENDED = frozenset({"completed", "entered-in-error"})


class FhirConfig(AdapterConfig):
    base_url: AnyHttpUrl
    identifier_system: str = "urn:iap:enquiry-reference"
    # The system of the identifier a follow-up's Communication or replacing ServiceRequest
    # carries (its value the follow-up id), so a repeated create finds the first.
    follow_up_system: str = "urn:iap:follow-up"
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

    async def follow_up(self, follow_up: FollowUp) -> FollowUpReceipt:
        """A Communication, a revocation or a replacing ServiceRequest, made once."""
        if follow_up.kind is MessageKind.information:
            return await self._communicate(follow_up)
        if follow_up.kind is MessageKind.withdrawal:
            return await self._revoke(follow_up)
        if follow_up.kind is MessageKind.reopening:
            return await self._replace(follow_up)
        raise PermanentError(f"a {follow_up.kind} is never sent to a back-office")

    async def _communicate(self, follow_up: FollowUp) -> FollowUpReceipt:
        system = self.config.follow_up_system
        body = validated(Communication, communication(follow_up, system=system))
        await follow_up.fence()
        response = await self._create("Communication", body, system, follow_up)
        return FollowUpReceipt(remote_reference=created_id(response, "Communication"))

    async def _replace(self, follow_up: FollowUp) -> FollowUpReceipt:
        system = self.config.follow_up_system
        body = validated(ServiceRequest, replacing_request(follow_up, system=system))
        await follow_up.fence()
        response = await self._create("ServiceRequest", body, system, follow_up)
        new_id = created_id(response)
        return FollowUpReceipt(remote_reference=new_id, case_reference=new_id)

    async def _create(
        self, resource_type: str, body: str, system: str, follow_up: FollowUp
    ) -> httpx.Response:
        headers = {
            **self._headers(),
            "Content-Type": FHIR_JSON,
            "If-None-Exist": f"identifier={system}|{follow_up.follow_up_id}",
        }
        return await self._call("POST", f"{self._base}/{resource_type}", headers, content=body)

    async def _revoke(self, follow_up: FollowUp) -> FollowUpReceipt:
        """Read the ServiceRequest and put it back revoked, on the version just read."""
        url = f"{self._base}/ServiceRequest/{quote(follow_up.remote_reference, safe='')}"
        current = await self._call("GET", url, self._headers())
        resource = json_body(current, what="ServiceRequest")
        status = resource.get("status")
        if status == "revoked":  # an earlier attempt (or the ICB) revoked it already
            return FollowUpReceipt(remote_reference=version_reference(resource))
        if status in ENDED:
            raise PermanentError(f"the ServiceRequest is {status}: there is nothing to revoke")
        body = validated(ServiceRequest, revoked(resource, follow_up))
        headers = {
            **self._headers(),
            "Content-Type": FHIR_JSON,
            "If-Match": current.headers.get("etag") or f'W/"{version_of(resource)}"',
        }
        await follow_up.fence()
        response = await self._call("PUT", url, headers, content=body, check=raise_for_update)
        answer = json_body(response, what="ServiceRequest")
        return FollowUpReceipt(remote_reference=version_reference(answer))

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
        check: Callable[[httpx.Response], None] | None = None,
    ) -> httpx.Response:
        try:
            response = await self.client.request(
                method, url, content=content, params=params, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        (check or raise_for_fhir_response)(response)
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
    resource = request_for(enquiry, identifier={"system": system, "value": enquiry.reference})
    return validated(ServiceRequest, resource)


def replacing_request(follow_up: FollowUp, *, system: str) -> dict[str, Any]:
    """A new ServiceRequest for the enquiry that `replaces` the completed one, its identifier
    the follow-up's (the enquiry's own is the first request's), the reason as its last note."""
    identifier = {"system": system, "value": str(follow_up.follow_up_id)}
    resource = request_for(follow_up.enquiry, identifier=identifier)
    resource["replaces"] = [{"reference": f"ServiceRequest/{follow_up.remote_reference}"}]
    resource["authoredOn"] = follow_up.created_at.astimezone(UTC).isoformat()
    resource["note"].append(our_note(follow_up))
    return resource


def revoked(resource: dict[str, Any], follow_up: FollowUp) -> dict[str, Any]:
    """The ServiceRequest as read, revoked, with why as a note of ours."""
    notes = [*(resource.get("note") or []), our_note(follow_up)]
    return {**resource, "status": "revoked", "note": notes}


def our_note(follow_up: FollowUp) -> dict[str, str]:
    """The citizen's reason, as a note of ours (polling skips it: it is no news from the ICB)."""
    return {
        "authorString": NOTE_AUTHOR,
        "time": follow_up.created_at.astimezone(UTC).isoformat(),
        "text": follow_up.text or f"The citizen asked for this ({follow_up.kind}).",
    }


def communication(follow_up: FollowUp, *, system: str) -> dict[str, Any]:
    """The information as a Communication about the ServiceRequest: the text, then each file."""
    payload: list[dict[str, Any]] = []
    if follow_up.text:
        payload.append({"contentString": follow_up.text})
    payload += [{"contentAttachment": fhir_attachment(f)} for f in follow_up.attachments]
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": system, "value": str(follow_up.follow_up_id)}],
        "basedOn": [{"reference": f"ServiceRequest/{follow_up.remote_reference}"}],
        "status": "completed",
        "sent": follow_up.created_at.astimezone(UTC).isoformat(),
        "payload": payload,
        **subject_of(follow_up.enquiry),
    }
    return resource


def fhir_attachment(file: AttachmentFile) -> dict[str, Any]:
    """One file inline: FHIR's Attachment.hash is the base64 of the data's SHA-1."""
    return {
        "contentType": file.content_type,
        "data": base64.b64encode(file.content).decode(),
        "title": file.filename,
        "size": len(file.content),
        "hash": base64.b64encode(hashlib.sha1(file.content).digest()).decode(),  # noqa: S324
    }


def subject_of(enquiry: EnquirySnapshot) -> dict[str, Any]:
    """`subject` (and the contained Patient it points at) as the delivery sends it."""
    patient = contained_patient(enquiry.citizen)
    if patient is None:
        return {"subject": {"display": WITHHELD}}
    return {"contained": [patient], "subject": {"reference": "#citizen"}}


def validated(model: type[BaseModel], resource: dict[str, Any]) -> str:
    """The resource as FHIR JSON, validated as R4 before it leaves."""
    try:
        checked = model.model_validate(resource)
    except ValidationError as exc:
        # Only where it failed: pydantic's own message quotes the values, which may be personal.
        where = "; ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise PermanentError(
            f"our {resource['resourceType']} is not valid FHIR R4: {where}"
        ) from exc
    json_text: str = checked.model_dump_json()
    return json_text


def version_of(resource: dict[str, Any]) -> str:
    return str((resource.get("meta") or {}).get("versionId") or "")


def version_reference(resource: dict[str, Any]) -> str:
    """`<id>/_history/<version>`: the version the follow-up made (or found)."""
    return f"{resource.get('id')}/_history/{version_of(resource)}"


def raise_for_update(response: httpx.Response) -> None:
    """A version-aware update's answer: 412 means the resource moved on since we read it."""
    if response.status_code == 412:
        raise RetryableError(
            f"HTTP 412 from {response.request.url.host}: the ServiceRequest changed since it "
            "was read"
        )
    raise_for_response(response, detail=outcome_summary)


def request_for(enquiry: EnquirySnapshot, *, identifier: dict[str, str]) -> dict[str, Any]:
    """The ServiceRequest for this enquiry, under `identifier`."""
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "identifier": [identifier],
        "status": "active",
        # "order": the citizen asks the ICB to act and expects an answer, which is what "order"
        # means among FHIR's request intents (a request for action, made by someone entitled
        # to make it). "proposal" is a suggestion the ICB could leave unanswered and "plan" an
        # intention of our own; receiving systems put neither on a list of work to do.
        "intent": "order",
        "code": {"text": enquiry.service_name},
        "authoredOn": enquiry.created_at.astimezone(UTC).isoformat(),
        "note": notes(enquiry),
        **subject_of(enquiry),
    }
    return resource


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


def created_id(response: httpx.Response, resource_type: str = "ServiceRequest") -> str:
    """The created resource's id from the answer's body, else from its Location header."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if isinstance(answer, dict) and answer.get("resourceType") == resource_type:
        resource_id = answer.get("id")
        if isinstance(resource_id, str) and resource_id:
            return resource_id
    location_id = id_from_location(response.headers.get("location", ""), resource_type)
    if location_id is None:
        raise PermanentError(
            f"HTTP {response.status_code} without a {resource_type} id in its body or Location"
        )
    return location_id


def id_from_location(location: str, resource_type: str = "ServiceRequest") -> str | None:
    """`<id>` from `.../<type>/<id>/_history/<version>` (or without the history part)."""
    parts = urlsplit(location).path.rstrip("/").split("/")
    if resource_type not in parts:
        return None
    after = parts[len(parts) - parts[::-1].index(resource_type) :]
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
