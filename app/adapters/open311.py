"""`open311`: Open311 GeoReport v2 for the district councils, with mySociety's updates extension.

A create is made safe to repeat in two ways: our reference travels as
`attribute[iap_reference]`, so a council that dedupes on it answers "already exists" (which
counts as delivered), and on every attempt after the first (and the first after a redrive) we
look for the request before posting again, because an earlier attempt may have reached the
council before it timed out.
The look-up reads the spec's own list answer, which has no attributes: the reference is found
in the description, where the create writes it too, within a narrow time window that is read
again in halves whenever the council's answer is as long as it ever lists (`list_limit`).

A follow-up (more information, a withdrawal, a reopening) is mySociety's client-side
`POST servicerequestupdates`, as open311-adapter takes it: our follow-up id is the `update_id`
a council dedupes a repeat on, the status says what the update asks for (OPEN, CLOSED, or
REOPEN for a council that takes the extended statuses), and every attachment is one repeated
`media_url`, a signed URL the council fetches the file from.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from app.adapters.base import (
    Adapter,
    AdapterConfig,
    Delivery,
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
from app.catalogue.status import OPEN311_WORDS
from app.core.vocabulary import MessageKind

# Our remote_reference while a council has only given us a token for the request.
TOKEN_PREFIX = "token:"  # noqa: S105 - a label, not a secret
# The spec's limit on a request's description.
MAX_DESCRIPTION = 4000
# Written after the citizen's description, where every list answer shows it.
REFERENCE_LINE = "\n\nIAP reference: {reference}"
# Either side of the look-up's window, for the council's clock and its queue.
LOOKUP_MARGIN = timedelta(minutes=10)
# Ids per `GET requests.json?service_request_id=...`, keeping URLs well under server limits.
CHUNK_SIZE = 50
ID_IN_MESSAGE = re.compile(r"service_request_id[ :=]+(\S+)")
# The citizen's details the spec has no field for, which an agreement may let a council have
# as attributes (`citizen_attributes`).
AttributeField = Literal["preferred_contact", "accessibility_needs", "language"]
# What an update says when the citizen gave no words (the spec requires a description).
UNSAID: dict[MessageKind, str] = {
    MessageKind.information: "More information was added to this request.",
    MessageKind.withdrawal: "The request was withdrawn at the citizen's request.",
    MessageKind.reopening: "The citizen asks for this request to be reopened.",
}

FormData = dict[str, str | list[str]]


class Open311Config(AdapterConfig):
    base_url: AnyHttpUrl
    api_key: SecretStr
    jurisdiction_id: str | None = None
    # Our service code → the council's; a code not listed is sent unchanged.
    service_codes: dict[str, str] = Field(default_factory=dict)
    reference_attribute: str = Field(default="iap_reference", min_length=1)
    # A 400 whose description matches this means our earlier attempt already created it.
    already_exists: str = r"(?i)already exists|duplicate request"
    updates: Literal["servicerequestupdates", "requests"] = "servicerequestupdates"
    # The most requests the council answers in one GET requests.json: a list this long may
    # have left ours out, so its time window is read again in halves.
    list_limit: int = Field(default=1000, ge=1, le=100_000)
    # False for a council whose requests cannot be listed: a repeat after an ambiguous failure
    # is posted without a look-up, so it may make a second case there (at-least-once).
    lookup: bool = True
    # The citizen's language, accessibility needs or preferred contact, sent as the attribute
    # codes agreed with the council ({language: iap_language}); only what its agreement shares.
    citizen_attributes: dict[AttributeField, str] = Field(default_factory=dict)
    # The council takes mySociety's extended statuses on an update: a reopening says REOPEN
    # (else OPEN, as the plain extension has only OPEN and CLOSED).
    extended_statuses: bool = False

    @model_validator(mode="after")
    def _attribute_codes_are_free(self) -> Open311Config:
        codes = list(self.citizen_attributes.values())
        if any(not code.strip() for code in codes):
            raise ValueError("citizen_attributes: an attribute code may not be empty")
        if len(set(codes)) != len(codes) or self.reference_attribute in codes:
            raise ValueError("citizen_attributes: each needs its own code, not the reference's")
        return self

    @field_validator("already_exists")
    @classmethod
    def _is_a_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
        return value


class Open311Adapter(Adapter):
    config_model = Open311Config
    config: Open311Config
    status_words = OPEN311_WORDS
    can_poll = True

    async def deliver(self, delivery: Delivery) -> Receipt:
        """Create the service request, unless an earlier attempt already did."""
        if delivery.is_repeat and self.config.lookup:
            found = await self._find_existing(delivery)
            if found is not None:
                return Receipt(remote_reference=found)
            await delivery.fence()  # the look-up took time: is the create still ours to make?
        response = await self._call(
            "POST", "requests.json", data=create_form(delivery, self.config)
        )
        if response.status_code == 400:
            message = error_description(response)
            if re.search(self.config.already_exists, message):
                return await self._receipt_for_existing(delivery, message)
        raise_for_open311(response)
        return await self._receipt(first_item(json_body(response)))

    async def follow_up(self, follow_up: FollowUp) -> FollowUpReceipt:
        """POST servicerequestupdates once; a repeat carries the same update_id."""
        if is_token(follow_up.remote_reference):
            # The poll resolves the token; the update can go once the case has its id.
            raise RetryableError("update: the council has given the request no id yet")
        await follow_up.fence()
        response = await self._call(
            "POST", "servicerequestupdates.json", data=update_form(follow_up, self.config)
        )
        taken = re.search(self.config.already_exists, error_description(response))
        if response.status_code == 400 and taken:
            return FollowUpReceipt(remote_reference=None)  # taken at an earlier attempt
        raise_for_open311(response)
        return FollowUpReceipt(remote_reference=answered_update_id(response))

    def recognises_repeats(self) -> bool:
        """Only with the look-up: the spec gives a council no duty to dedupe."""
        return self.config.lookup

    async def poll(self, tracked: Sequence[Tracked], *, cursor: str | None) -> PollResult:
        """Resolve tokens, then fetch the status changes of the tracked requests."""
        references = await self._resolve_tokens(tracked)
        ids = {t.remote_reference for t in tracked if not is_token(t.remote_reference)}
        ids |= set(references.values())
        if not ids:
            return PollResult(updates=[], references=references)
        if self.config.updates == "requests":
            # The current state of each request, every time: update ids repeat, so a state
            # already recorded is recorded once, and no cursor is needed.
            updates = await self._poll_requests(ids)
            return PollResult(updates=updates, references=references)
        since = updates_since(tracked, references, cursor)
        updates, latest = await self._poll_updates(ids, since)
        return PollResult(updates=updates, references=references, cursor=later(latest, cursor))

    # -- create ---------------------------------------------------------------------------

    async def _find_existing(self, delivery: Delivery) -> str | None:
        """The id of a request carrying our reference, made since the enquiry was."""
        start = delivery.enquiry.created_at - LOOKUP_MARGIN
        return await self._find_between(delivery, start, datetime.now(UTC) + LOOKUP_MARGIN)

    async def _find_between(self, delivery: Delivery, start: datetime, end: datetime) -> str | None:
        """Ours among the requests made from `start` to `end`, halving a window the council
        answered in full (it may have cut ours off)."""
        listed = await self._list_requests(delivery, start, end)
        ours = delivery.enquiry.reference
        for request in listed:
            if carries_reference(request, ours, self.config.reference_attribute):
                return request_id(request)
        if len(listed) < self.config.list_limit:
            return None
        if end - start <= timedelta(seconds=2):
            # Posting now could make a second case: better to wait and look again.
            raise RetryableError("look-up: the council lists too many requests to find ours")
        middle = start + (end - start) / 2
        return await self._find_between(delivery, start, middle) or await self._find_between(
            delivery, middle, end
        )

    async def _list_requests(
        self, delivery: Delivery, start: datetime, end: datetime
    ) -> list[dict[str, Any]]:
        params = {
            **self._credentials(),
            "service_code": their_service_code(delivery, self.config),
            "start_date": iso(start),
            "end_date": iso(end),
        }
        response = await self._call("GET", "requests.json", params=params)
        if response.status_code == 404:  # some servers say 404 for an empty list
            return []
        raise_for_open311(response)
        return items(json_body(response))

    async def _receipt_for_existing(self, delivery: Delivery, message: str) -> Receipt:
        """Delivered before: the id the council named, else the one a look-up finds."""
        named = ID_IN_MESSAGE.search(message)
        if named:
            return Receipt(remote_reference=named.group(1).rstrip(".,;)\"'"))
        # The council holds it but would not say under which id; delivered all the same, and
        # posting again would only be refused again.
        return Receipt(remote_reference=await self._find_existing(delivery))

    async def _receipt(self, item: dict[str, Any]) -> Receipt:
        """The request id from a create's answer, resolving a token if the council can yet."""
        if item.get("service_request_id") not in (None, ""):
            return Receipt(remote_reference=request_id(item))
        token = item.get("token")
        if token in (None, ""):
            raise PermanentError("create answered with neither service_request_id nor token")
        try:
            resolved = await self._token_request_id(str(token))
        except (RetryableError, PermanentError):
            # The request was created; poll() resolves the token later, so a failed look-up
            # must not make the dispatcher post it again.
            resolved = None
        return Receipt(remote_reference=resolved or f"{TOKEN_PREFIX}{token}")

    # -- poll -----------------------------------------------------------------------------

    async def _resolve_tokens(self, tracked: Sequence[Tracked]) -> dict[uuid.UUID, str]:
        """Service request ids learnt for tokens, by dispatch id."""
        references = {}
        for item in tracked:
            if is_token(item.remote_reference):
                token = item.remote_reference.removeprefix(TOKEN_PREFIX)
                resolved = await self._token_request_id(token)
                if resolved is not None:
                    references[item.dispatch_id] = resolved
        return references

    async def _token_request_id(self, token: str) -> str | None:
        """The service request id behind a token, or None while the council has none yet."""
        response = await self._call("GET", f"tokens/{token}.json", params=self._credentials())
        if response.status_code == 404:
            return None
        raise_for_open311(response)
        for item in items(json_body(response)):
            if item.get("service_request_id") not in (None, ""):
                return request_id(item)
        return None

    async def _poll_updates(
        self, ids: set[str], since: str
    ) -> tuple[list[RemoteUpdate], str | None]:
        """mySociety's servicerequestupdates since `since`, and the latest time seen."""
        params = {**self._credentials(), "start_date": since}
        response = await self._call("GET", "servicerequestupdates.json", params=params)
        raise_for_open311(response)
        body = json_body(response)
        if isinstance(body, dict):
            body = body.get("service_request_updates")
        updates = [update_from_updates(item) for item in items(body)]
        latest = max((u.updated_at for u in updates), default=None)
        mine = [u for u in updates if u.remote_reference in ids]
        return mine, iso(latest) if latest else None

    async def _poll_requests(self, ids: set[str]) -> list[RemoteUpdate]:
        """Each tracked request's current status, asked for in chunks."""
        updates: list[RemoteUpdate] = []
        for chunk in chunks(sorted(ids), CHUNK_SIZE):
            params = {**self._credentials(), "service_request_id": ",".join(chunk)}
            response = await self._call("GET", "requests.json", params=params)
            raise_for_open311(response)
            found = (update_from_request(item) for item in items(json_body(response)))
            updates.extend(u for u in found if u.remote_reference in ids)
        return updates

    # -- transport ------------------------------------------------------------------------

    def _credentials(self) -> dict[str, str]:
        params = {"api_key": self.config.api_key.get_secret_value()}
        if self.config.jurisdiction_id:
            params["jurisdiction_id"] = self.config.jurisdiction_id
        return params

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: FormData | None = None,
    ) -> httpx.Response:
        url = f"{str(self.config.base_url).rstrip('/')}/{path}"
        try:
            return await self.client.request(
                method, url, params=params, data=data, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc


def create_form(delivery: Delivery, config: Open311Config) -> FormData:
    """The form a council receives: the enquiry, and only the citizen's details it may have."""
    enquiry = delivery.enquiry
    form: FormData = {
        "api_key": config.api_key.get_secret_value(),
        "service_code": their_service_code(delivery, config),
    }
    if config.jurisdiction_id:
        form["jurisdiction_id"] = config.jurisdiction_id
    form |= location_fields(enquiry.location)
    form["description"] = described(enquiry.description, enquiry.reference)
    ours = {config.reference_attribute, *config.citizen_attributes.values()}
    for code, value in enquiry.attributes.items():
        if code not in ours:  # ours must not be overwritten, nor said by anyone else
            form |= attribute_field(code, value)
    form[f"attribute[{config.reference_attribute}]"] = enquiry.reference
    form |= citizen_fields(enquiry.citizen)
    form |= citizen_attribute_fields(enquiry.citizen, config)
    return form


def update_form(follow_up: FollowUp, config: Open311Config) -> FormData:
    """mySociety's update form: the follow-up, its files as media_url, and only the citizen's
    details the council may have."""
    form: FormData = {"api_key": config.api_key.get_secret_value()}
    if config.jurisdiction_id:
        form["jurisdiction_id"] = config.jurisdiction_id
    form |= {
        "service_request_id": follow_up.remote_reference,
        "update_id": str(follow_up.follow_up_id),
        "updated_datetime": iso(follow_up.created_at),
        "status": update_status(follow_up.kind, config),
        "description": follow_up.text or UNSAID[follow_up.kind],
    }
    if follow_up.attachments:
        # open311-adapter reads media_url as a list; a council that reads one gets the first.
        form["media_url"] = [attachment.url for attachment in follow_up.attachments]
    form |= citizen_fields(follow_up.enquiry.citizen)
    return form


def update_status(kind: MessageKind, config: Open311Config) -> str:
    """What the request's status is to be after the update."""
    if kind is MessageKind.withdrawal:
        return "CLOSED"
    if kind is MessageKind.reopening and config.extended_statuses:
        return "REOPEN"
    if kind in (MessageKind.information, MessageKind.reopening):
        return "OPEN"
    raise PermanentError(f"a {kind} is never sent to a back-office")


def answered_update_id(response: httpx.Response) -> str | None:
    """The council's id for the update it took, when its answer names one."""
    try:
        body = response.json()
    except ValueError:
        return None  # taken all the same: a 2xx answer without a body we can read
    if isinstance(body, dict):
        body = body.get("service_request_updates", body)
    found = body if isinstance(body, list) else [body]
    for item in found:
        if isinstance(item, dict) and item.get("update_id") not in (None, ""):
            return str(item["update_id"])
    return None


def described(description: str, reference: str) -> str:
    """The citizen's description, cut to leave room for our reference line after it."""
    line = REFERENCE_LINE.format(reference=reference)
    return description[: MAX_DESCRIPTION - len(line)] + line


def their_service_code(delivery: Delivery, config: Open311Config) -> str:
    """The council's code for our service."""
    ours = delivery.enquiry.service_code
    return config.service_codes.get(ours, ours)


def location_fields(location: Mapping[str, Any] | None) -> dict[str, str]:
    """One location: lat/long when known, else the address or postcode as address_string."""
    if not location:
        return {}
    lat, lon = location.get("lat"), location.get("lon")
    if lat is not None and lon is not None:
        return {"lat": str(lat), "long": str(lon)}
    address = location.get("address") or location.get("postcode")
    return {"address_string": str(address)} if address else {}


def attribute_field(code: str, value: Any) -> FormData:
    """`attribute[code]=value`, or repeated `attribute[code][]=v` for a list."""
    if isinstance(value, list):
        return {f"attribute[{code}][]": [form_value(v) for v in value]}
    return {f"attribute[{code}]": form_value(value)}


def form_value(value: Any) -> str:
    """A value as a form writes it; booleans as the spec's lowercase words."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def citizen_fields(citizen: Mapping[str, Any] | None) -> dict[str, str]:
    """The spec's contact fields, from the already minimised citizen and nothing else."""
    if not citizen:
        return {}
    fields = {}
    if citizen.get("email"):
        fields["email"] = str(citizen["email"])
    if citizen.get("name"):
        first, _, last = str(citizen["name"]).strip().rpartition(" ")
        # One word is all we have: a first name is the least wrong place for it.
        fields |= {"first_name": first, "last_name": last} if first else {"first_name": last}
    if citizen.get("phone"):
        fields["phone"] = str(citizen["phone"])
    return fields


def citizen_attribute_fields(
    citizen: Mapping[str, Any] | None, config: Open311Config
) -> dict[str, str]:
    """The citizen's details the council takes as agreed attributes, from the already
    minimised citizen: nothing the agreement or the citizen's consent withholds."""
    if not citizen:
        return {}
    return {
        f"attribute[{code}]": form_value(citizen[field])
        for field, code in config.citizen_attributes.items()
        if citizen.get(field) not in (None, "")
    }


def carries_reference(request: dict[str, Any], reference: str, attribute: str) -> bool:
    """Whether a council's request is the one we made for this reference."""
    if reference in str(request.get("description") or ""):
        return True
    if request.get(attribute) == reference:
        return True
    attributes = request.get("attributes")
    if isinstance(attributes, dict):
        return bool(attributes.get(attribute) == reference)
    if isinstance(attributes, list):
        return any(
            isinstance(a, dict) and a.get("code") == attribute and a.get("value") == reference
            for a in attributes
        )
    return False


def update_from_updates(item: dict[str, Any]) -> RemoteUpdate:
    """One entry of servicerequestupdates.json."""
    update_id = item.get("update_id")
    if update_id in (None, ""):
        raise PermanentError("servicerequestupdates answered an update without update_id")
    return RemoteUpdate(
        remote_reference=request_id(item),
        update_id=str(update_id),
        status=required_text(item, "status"),
        description=item.get("description") or None,
        updated_at=parse_time(item.get("updated_datetime")),
    )


def update_from_request(item: dict[str, Any]) -> RemoteUpdate:
    """One request of requests.json as its current status."""
    remote, status = request_id(item), required_text(item, "status")
    stamp = required_text(item, "updated_datetime")
    return RemoteUpdate(
        remote_reference=remote,
        update_id=f"{remote}:{status}:{stamp}",
        status=status,
        description=item.get("status_notes") or None,
        updated_at=parse_time(stamp),
    )


def updates_since(
    tracked: Sequence[Tracked], references: dict[uuid.UUID, str], cursor: str | None
) -> str:
    """Where to start reading updates: the cursor, or earlier for requests only now known."""
    starts = [t.delivered_at for t in tracked if cursor is None or t.dispatch_id in references]
    if cursor is not None:
        # A token resolved just now may have had updates before the cursor that we could not
        # match to it then; read again from its delivery (repeats keep their update ids).
        # The cursor itself is read from a little before: an update the back-office was still
        # writing as we last read may carry an earlier time than the latest we saw.
        starts.append(parse_time(cursor) - CURSOR_OVERLAP)
    return iso(min(starts))


CURSOR_OVERLAP = timedelta(minutes=5)


def later(seen: str | None, cursor: str | None) -> str | None:
    """The new cursor: the latest time seen, never behind the old one."""
    if seen is None or cursor is None:
        return seen or cursor
    return max(seen, iso(parse_time(cursor)))


def raise_for_open311(response: httpx.Response) -> None:
    """The shared error mapping, with the council's own description on permanent errors."""
    try:
        raise_for_response(response)
    except PermanentError:
        host = response.request.url.host
        detail = error_description(response) or "no description"
        raise PermanentError(f"HTTP {response.status_code} from {host}: {detail}") from None


def error_description(response: httpx.Response) -> str:
    """The description of an Open311 error array (the council's words for the fault), else none:
    a body of any other shape might echo what we sent."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return str(body[0].get("description") or "")[:200]
    return ""


def json_body(response: httpx.Response) -> Any:
    """The answer's JSON; an answer we cannot read is permanent."""
    try:
        return response.json()
    except ValueError as exc:
        raise PermanentError(f"HTTP {response.status_code} with a body that is not JSON") from exc


def items(body: Any) -> list[dict[str, Any]]:
    """An Open311 JSON array of objects (a lone object counts as one)."""
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
        raise PermanentError("answer is not an array of objects")
    return body


def first_item(body: Any) -> dict[str, Any]:
    """The one object a create answers with."""
    found = items(body)
    if not found:
        raise PermanentError("create answered with an empty array")
    return found[0]


def request_id(item: dict[str, Any]) -> str:
    """The service_request_id of an answer's object, as text."""
    return required_text(item, "service_request_id")


def required_text(item: dict[str, Any], name: str) -> str:
    """A field the answer must have, as text."""
    value = item.get(name)
    if value in (None, "") or isinstance(value, dict | list):
        raise PermanentError(f"answer without {name}")
    return str(value)


def parse_time(value: Any) -> datetime:
    """An ISO 8601 time from a council, as aware UTC (a time without a zone is taken as UTC)."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise PermanentError("answer with a time that is not ISO 8601") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def iso(when: datetime) -> str:
    """A time as the W3C form the spec asks for, in UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_token(remote_reference: str) -> bool:
    """Whether we still hold only a token for this request."""
    return remote_reference.startswith(TOKEN_PREFIX)


def chunks(values: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of at most `size` values."""
    batch: list[str] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
