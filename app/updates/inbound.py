"""Status updates pushed to us: checked to come from the organisation, then recorded once.

Two ways in: a Standard Webhooks message (JSON, HMAC-signed with the organisation's secret,
timestamp within five minutes, each webhook-id accepted once), and the mySociety-style Open311
`servicerequestupdates` form, authenticated by the organisation's api_key.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.adapters.base import Adapter, RemoteUpdate
from app.catalogue.catalogue import Catalogue, Organisation
from app.catalogue.status import Status
from app.core.db import is_postgres, reading, writing
from app.core.errors import FieldError, Unauthenticated, ValidationFailed, error_message
from app.core.models import inbound_message_table, utcnow
from app.core.types import AwareUtcDatetime, NoNul
from app.core.vocabulary import ReceivedVia
from app.updates.recording import record_update, vocabulary

# What an unknown organisation's pushes, or one that does not push, are checked against.
_NOBODYS_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
# NUL is refused in every text field (PostgreSQL cannot store it), and a time UTC cannot hold.
Word = Annotated[NoNul, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
m = inbound_message_table.c


class InboundUpdate(BaseModel):
    """One status change, as an organisation pushes it (the body of a Standard Webhook)."""

    model_config = ConfigDict(
        extra="ignore",
        str_strip_whitespace=True,
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "update_id": "upd-20261203-0042",
                    "reference": "K7Q-M4X-PB6",
                    "status": "fixed",
                    "description": "Filled and sealed by the Abingdon highways crew",
                    "updated_at": "2026-12-03T14:20:00Z",
                }
            ]
        },
    )

    update_id: Annotated[NoNul, StringConstraints(min_length=1, max_length=255)] = Field(
        description="Unique per organisation; the same update sent twice is recorded once"
    )
    remote_reference: Annotated[NoNul, StringConstraints(min_length=1, max_length=128)] | None = (
        Field(default=None, description="The organisation's own case reference")
    )
    reference: Annotated[NoNul, StringConstraints(max_length=32)] | None = Field(
        default=None, description="Our reference, when the case reference is not known to us"
    )
    status: Word = Field(description="The organisation's own status word", examples=["fixed"])
    description: Annotated[NoNul, StringConstraints(max_length=4000)] | None = None
    updated_at: AwareUtcDatetime


class InboundReceipt(BaseModel):
    outcome: Literal["recorded", "duplicate", "replayed"] = Field(
        description="recorded: new; duplicate: this update_id was already recorded; "
        "replayed: this webhook-id was already received"
    )
    status: Status | None = Field(
        default=None, description="The update in our vocabulary; null for a word we do not know"
    )


class Inbox:
    """Where pushed updates come in; holds what checking and recording them needs."""

    def __init__(
        self, *, engine: AsyncEngine, catalogue: Catalogue, adapters: Mapping[str, Adapter]
    ) -> None:
        self.engine = engine
        self.catalogue = catalogue
        self.adapters = adapters

    async def webhook(
        self, organisation_id: str, *, body: bytes, headers: Mapping[str, str]
    ) -> InboundReceipt:
        """A Standard Webhooks message: verify, skip a replayed id, record the update."""
        organisation = self.catalogue.organisations.get(organisation_id)
        secret = organisation.inbound.webhook_secret if organisation else None
        # Checked against a secret nobody holds when the organisation is unknown or does not
        # push: answered as any wrong signature is, so ids cannot be probed without one.
        message_id = _verified(
            secret.get_secret_value() if secret else _NOBODYS_SECRET, body, headers
        )
        if organisation is None or secret is None:  # pragma: no cover - nobody can sign
            raise Unauthenticated("The webhook signature does not check out.")
        if await self._seen(organisation.id, message_id):
            return InboundReceipt(outcome="replayed")
        try:
            update = InboundUpdate.model_validate_json(body)
        except ValidationError as exc:
            raise _invalid(exc) from exc
        if update.remote_reference is None and update.reference is None:
            raise ValidationFailed(
                "Say which case this is about: remote_reference or reference.",
                [FieldError("one of remote_reference or reference is required", "#")],
            )
        receipt = await self._record(organisation, update, via=ReceivedVia.webhook)
        await self._remember(organisation.id, message_id)
        return receipt

    async def open311(self, organisation_id: str, *, form: Mapping[str, str]) -> InboundReceipt:
        """A mySociety-style servicerequestupdates push, authenticated by its api_key."""
        organisation = self.catalogue.organisations.get(organisation_id)
        expected = organisation.inbound.api_key if organisation else None
        # Compared the same way when there is no key to compare with, and answered alike.
        wanted = expected.get_secret_value() if expected else _NOBODYS_SECRET
        given = form.get("api_key", "")
        matches = hmac.compare_digest(given.encode(), wanted.encode())
        if not matches or organisation is None or expected is None:
            raise Unauthenticated("The api_key is missing or wrong.")
        update = _open311_update(form)
        return await self._record(organisation, update, via=ReceivedVia.open311_push)

    async def _record(
        self, organisation: Organisation, update: InboundUpdate, *, via: ReceivedVia
    ) -> InboundReceipt:
        recorded = await record_update(
            engine=self.engine,
            catalogue=self.catalogue,
            organisation=organisation,
            words=vocabulary(organisation, self.adapters.get(organisation.id)),
            remote=RemoteUpdate(
                remote_reference=update.remote_reference or "",
                update_id=update.update_id,
                status=update.status,
                description=update.description,
                updated_at=update.updated_at,
            ),
            via=via,
            reference=update.reference,
        )
        return InboundReceipt(
            outcome="recorded" if recorded.new else "duplicate", status=recorded.status
        )

    async def _seen(self, organisation_id: str, message_id: str) -> bool:
        async with reading(self.engine) as conn:
            found = await conn.scalar(
                select(m.message_id).where(
                    m.organisation_id == organisation_id, m.message_id == message_id
                )
            )
        return found is not None

    async def _remember(self, organisation_id: str, message_id: str) -> None:
        dialect = postgresql if is_postgres(self.engine) else sqlite
        statement = (
            dialect.insert(inbound_message_table)
            .values(organisation_id=organisation_id, message_id=message_id, received_at=utcnow())
            .on_conflict_do_nothing()
        )
        async with writing(self.engine) as conn:
            await conn.execute(statement)


def _verified(secret: str, body: bytes, headers: Mapping[str, str]) -> str:
    """The webhook-id of a correctly signed, fresh message; Unauthenticated otherwise."""
    try:
        Webhook(secret).verify(body, dict(headers), json_parse=False)
    except WebhookVerificationError as exc:
        raise Unauthenticated(f"The webhook signature does not check out: {exc}.") from exc
    except ValueError as exc:  # malformed signature header, base64 or encoding
        raise Unauthenticated("The webhook signature headers are malformed.") from exc
    message_id = headers.get("webhook-id", "")
    if len(message_id) > 255 or "\x00" in message_id:
        raise Unauthenticated("The webhook-id is longer than 255 characters or holds NUL.")
    return message_id


def _open311_update(form: Mapping[str, str]) -> InboundUpdate:
    updated = form.get("updated_datetime", "")
    try:
        moment = datetime.fromisoformat(updated) if updated else None
    except ValueError:
        moment = None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # Open311 servers usually send an offset; else UTC
    try:
        return InboundUpdate.model_validate(
            {
                "update_id": form.get("update_id"),
                "remote_reference": form.get("service_request_id"),
                "status": form.get("status"),
                "description": form.get("description") or None,
                "updated_at": moment,
            }
        )
    except ValidationError as exc:
        raise _invalid(
            exc, names={"remote_reference": "service_request_id", "updated_at": "updated_datetime"}
        ) from exc


def _invalid(exc: ValidationError, names: Mapping[str, str] | None = None) -> ValidationFailed:
    names = names or {}
    errors = [
        FieldError(
            error_message(error),
            "#/" + "/".join(names.get(str(p), str(p)) for p in error["loc"]),
        )
        for error in exc.errors()
    ]
    return ValidationFailed("The update is not valid.", errors)


async def forget_old_messages(engine: AsyncEngine, *, older_than: timedelta) -> int:
    """Drop pushed-message ids long past the signature tolerance; a replay that old fails it."""
    async with writing(engine) as conn:
        deleted = await conn.execute(
            delete(inbound_message_table).where(m.received_at < utcnow() - older_than)
        )
    return int(deleted.rowcount or 0)
