"""`rest-json`: a county's case-management API, POST `{base_url}/cases`, OAuth2 client credentials.

The `Idempotency-Key` header is the dispatch id, so a create repeated after an ambiguous failure
(a timeout after the request left) answers 200 with the case made the first time instead of
making a second one. The county pushes status changes (Standard Webhooks), so this never polls.

Follow-ups go to the case itself, each call under its own Idempotency-Key: information is a
comment (`POST /cases/{id}/comments`, key the follow-up id) after each attachment has been
uploaded as the case's own file (`POST /cases/{id}/attachments`, multipart, key derived from
the follow-up and attachment ids), the comment naming the uploads; a withdrawal or reopening is
a status change (`POST /cases/{id}/status`, "withdrawn" or "reopened" with the reason).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from functools import cached_property
from time import monotonic
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import AnyHttpUrl, SecretStr, model_validator

from app.adapters.base import (
    Adapter,
    AdapterConfig,
    AttachmentFile,
    Delivery,
    FollowUp,
    FollowUpReceipt,
    PermanentError,
    Receipt,
    enquiry_record,
    raise_for_response,
    transport_error,
)
from app.catalogue.status import Status
from app.core.vocabulary import MessageKind

# A token this close to its expiry is renewed first, so it cannot lapse while a call is on the way.
EXPIRY_MARGIN_SECONDS = 30.0

CASE_WORDS: dict[str, Status] = {
    "new": Status.acknowledged,
    "assigned": Status.acknowledged,
    "in_progress": Status.in_progress,
    "scheduled": Status.action_scheduled,
    "completed": Status.resolved,
    "closed": Status.closed,
    "rejected": Status.not_our_responsibility,
    "duplicate": Status.duplicate,
    # The case's own words for a citizen calling it off or opening it again: ours, whether we
    # asked for the change (a follow-up) or the citizen rang the county.
    "withdrawn": Status.withdrawn,
    "reopened": Status.reopened,
}

# The status change each follow-up kind asks the county for.
FOLLOW_UP_STATUS: dict[MessageKind, str] = {
    MessageKind.withdrawal: "withdrawn",
    MessageKind.reopening: "reopened",
}


class RestJsonConfig(AdapterConfig):
    base_url: AnyHttpUrl
    # None: no OAuth; then api_key, if set, is sent as the bearer token instead.
    token_url: AnyHttpUrl | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None
    api_key: SecretStr | None = None

    @model_validator(mode="after")
    def _credentials_for_oauth(self) -> RestJsonConfig:
        if self.token_url is not None and (not self.client_id or self.client_secret is None):
            raise ValueError("token_url needs client_id and client_secret")
        return self


class RestJsonAdapter(Adapter):
    config_model = RestJsonConfig
    config: RestJsonConfig
    status_words = CASE_WORDS
    _token: str | None = None  # the OAuth access token until it expires or is refused
    _token_expires_at = 0.0

    @cached_property
    def _token_lock(self) -> asyncio.Lock:
        """One token request at a time: a burst of deliveries must not each ask for its own."""
        return asyncio.Lock()

    async def deliver(self, delivery: Delivery) -> Receipt:
        """Create the case, or get back the one an earlier attempt with this dispatch id made."""
        url = f"{str(self.config.base_url).rstrip('/')}/cases"
        body = enquiry_record(delivery)
        headers = {"Idempotency-Key": str(delivery.dispatch_id)}
        response = await self._post(url, headers, json=body)
        raise_for_response(response)
        return Receipt(remote_reference=case_id(response))

    async def follow_up(self, follow_up: FollowUp) -> FollowUpReceipt:
        """A comment with its uploads, or a status change, made once per follow-up id."""
        case = quote(follow_up.remote_reference, safe="")
        case_url = f"{str(self.config.base_url).rstrip('/')}/cases/{case}"
        key = str(follow_up.follow_up_id)
        if follow_up.kind in FOLLOW_UP_STATUS:
            change = {"status": FOLLOW_UP_STATUS[follow_up.kind], "reason": follow_up.text or ""}
            await follow_up.fence()
            answer = await self._taken_once(follow_up, f"{case_url}/status", key, json=change)
            return FollowUpReceipt(remote_reference=answer_id(answer, "update_id"))
        if follow_up.kind is not MessageKind.information:
            raise PermanentError(f"a {follow_up.kind} is never sent to a back-office")
        uploaded = [await self._upload(follow_up, case_url, file) for file in follow_up.attachments]
        comment = {
            "text": follow_up.text or "",
            "attachments": [upload for upload in uploaded if upload is not None],
            "author": "citizen" if follow_up.by_citizen else "agent",
            "created_at": follow_up.created_at.isoformat(),
        }
        await follow_up.fence()
        answer = await self._taken_once(follow_up, f"{case_url}/comments", key, json=comment)
        return FollowUpReceipt(remote_reference=answer_id(answer, "id"))

    async def _upload(self, follow_up: FollowUp, case_url: str, file: AttachmentFile) -> str | None:
        """Upload one file to the case; its id, or None when an earlier attempt uploaded it."""
        await follow_up.fence()
        files = {"file": (file.filename, file.content, file.content_type)}
        key = str(upload_key(follow_up.follow_up_id, file.attachment_id))
        answer = await self._taken_once(follow_up, f"{case_url}/attachments", key, files=files)
        return answer_id(answer, "id")

    async def _taken_once(
        self, follow_up: FollowUp, url: str, key: str, **body: Any
    ) -> httpx.Response | None:
        """POST under this Idempotency-Key; None when a repeat is refused as a key already
        used (409): the county took the first attempt, whose answer we never read."""
        response = await self._post(url, {"Idempotency-Key": key}, **body)
        if response.status_code == 409 and follow_up.is_repeat:
            return None
        raise_for_response(response)
        return response

    async def _post(self, url: str, headers: dict[str, str], **body: Any) -> httpx.Response:
        """POST with the bearer token, renewed once if the county refuses it."""
        response = await self._post_authorised(url, headers, **body)
        if response.status_code == 401 and self.config.token_url is not None:
            # The county may revoke a token before its expiry (key rotation, restart): renew once.
            self._forget_token(response.request.headers.get("authorization"))
            response = await self._post_authorised(url, headers, **body)
        return response

    async def _post_authorised(
        self, url: str, headers: dict[str, str], **body: Any
    ) -> httpx.Response:
        bearer = await self._bearer()
        sent = {**headers, "Authorization": f"Bearer {bearer}"} if bearer else headers
        try:
            return await self.client.post(url, headers=sent, timeout=self.timeout, **body)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc

    async def _bearer(self) -> str | None:
        if self.config.token_url is None:
            key = self.config.api_key
            return key.get_secret_value() if key is not None else None
        async with self._token_lock:
            if self._token is None or monotonic() >= self._token_expires_at:
                self._token, lifetime = await self._fetch_token()
                self._token_expires_at = monotonic() + lifetime - EXPIRY_MARGIN_SECONDS
            return self._token

    def _forget_token(self, authorization: str | None) -> None:
        # Only the token the county refused: a concurrent call may already have renewed it.
        if authorization == f"Bearer {self._token}":
            self._token = None

    async def _fetch_token(self) -> tuple[str, float]:
        """A new access token and its lifetime in seconds (client_secret_post)."""
        config = self.config
        # Both are set whenever a token is fetched: the config model refuses token_url without them.
        assert config.token_url is not None
        assert config.client_secret is not None
        form = {
            "grant_type": "client_credentials",
            "client_id": config.client_id or "",
            "client_secret": config.client_secret.get_secret_value(),
        }
        if config.scope:
            form["scope"] = config.scope
        try:
            response = await self.client.post(
                str(config.token_url), data=form, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc) from exc
        if response.status_code in (400, 401):
            raise PermanentError(
                f"HTTP {response.status_code} from {response.request.url.host}: "
                "county rejected our client credentials"
            )
        raise_for_response(response)
        return token_from(response)


def token_from(response: httpx.Response) -> tuple[str, float]:
    """The access token and its lifetime from a token answer; without expires_in, until refused."""
    try:
        answer = response.json()
    except ValueError as exc:
        raise PermanentError("token endpoint answered with a body that is not JSON") from exc
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise PermanentError("token endpoint answered without an access_token")
    if str(answer.get("token_type", "Bearer")).lower() != "bearer":
        raise PermanentError("token endpoint answered with a token type other than Bearer")
    lifetime = answer.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float):
        return token, math.inf
    return token, float(lifetime)


def case_id(response: httpx.Response) -> str:
    """The county's case id from a create answer."""
    try:
        answer = response.json()
    except ValueError as exc:
        raise PermanentError(f"HTTP {response.status_code} with a body that is not JSON") from exc
    remote = answer.get("id") if isinstance(answer, dict) else None
    if remote is None or isinstance(remote, bool | dict | list) or str(remote) == "":
        raise PermanentError(f"HTTP {response.status_code} without a case id")
    return str(remote)


def upload_key(follow_up_id: uuid.UUID, attachment_id: uuid.UUID) -> uuid.UUID:
    """One file's Idempotency-Key: the same for every attempt of this follow-up, and apart from
    the comment's key and every other file's."""
    return uuid.uuid5(follow_up_id, str(attachment_id))


def answer_id(response: httpx.Response | None, field: str) -> str | None:
    """The county's id for what it made (a comment, an upload, a status change), if it said."""
    if response is None:
        return None
    try:
        answer = response.json()
    except ValueError:
        return None
    found = answer.get(field) if isinstance(answer, dict) else None
    if found is None or isinstance(found, bool | dict | list) or str(found) == "":
        return None
    return str(found)
