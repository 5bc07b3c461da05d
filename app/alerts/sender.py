"""The alert sender: due `alert` rows are claimed under a lease (app.core.outbox, as the
dispatcher's and the webhook sender's are), written in the citizen's language
(app.alerts.templates) and sent by their channel: email through SMTP (or Notify's email API
with IAP_ALERTS__EMAIL_VIA=notify), SMS through a GOV.UK Notify-compatible API.

Each email's Message-ID is made from the alert id, and so is Notify's client reference: a
repeat after an attempt whose outcome is unknown asks Notify first (app.alerts.notify), and an
email sent again carries the same Message-ID for the receiving system to discard. An alert of
an enquiry whose alerts were stopped, or whose personal data was removed, before it was sent
is cancelled. Addresses and message text never reach the logs or the row's last_error.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlencode

import aiosmtplib
import structlog
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.alerts import notify, templates
from app.alerts.feed import question_text
from app.catalogue.catalogue import Catalogue
from app.clients.service import hash_secret
from app.core import outbox
from app.core.crypto import SealedDataUnreadable, Sealer
from app.core.db import reading, writing
from app.core.errors import DeliveryError, PermanentError, RetryableError
from app.core.models import (
    alert_table,
    dispatch_table,
    enquiry_table,
    event_table,
    utcnow,
)
from app.core.outbound import OutboundGuard
from app.core.outbox import LeaseQueue, finished
from app.core.reference import display
from app.core.settings import AlertVia, Environment, Settings
from app.core.vocabulary import AlertChannel, AlertKind, Outcome

log = structlog.get_logger()
a = alert_table.c
e = enquiry_table.c
MESSAGE_ID_DOMAIN = "iap.invalid"
UNSUBSCRIBE_PATH = "/v1/alerts/unsubscribe"
TRACK_PATH = "/track/"  # the citizen's page: TRACK_PATH + reference (app.routers.track)
SANDBOX_SMTP_HOST = "127.0.0.1"


@dataclass(frozen=True, kw_only=True)
class Claim(outbox.Claim):
    enquiry_id: uuid.UUID
    event_id: uuid.UUID
    kind: str
    channel: str
    language: str
    status: str | None


@dataclass(frozen=True, kw_only=True)
class Result(outbox.Result):
    provider_reference: str | None = None  # Notify's notification id, or the Message-ID


@dataclass(frozen=True)
class Outgoing:
    """One message on its way: to whom (never logged), what, and its links."""

    to: str
    written: templates.Written
    unsubscribe_url: str


def message_id(alert_id: uuid.UUID) -> str:
    """The same on every attempt, so a receiving system can discard a repeat."""
    return f"<alert-{alert_id}@{MESSAGE_ID_DOMAIN}>"


def unsubscribe_url(settings: Settings, sealer: Sealer, enquiry_id: uuid.UUID) -> str:
    """The link that stops this enquiry's messages (GET shows a page, POST stops them)."""
    query = urlencode(
        {"enquiry": str(enquiry_id), "signature": sealer.unsubscribe_signature(enquiry_id)}
    )
    return f"{settings.public_url.rstrip('/')}{UNSUBSCRIBE_PATH}?{query}"


def track_url(settings: Settings, reference: str, token: str | None) -> str:
    """The citizen's page for the enquiry, with their access token when it can be made."""
    url = f"{settings.public_url.rstrip('/')}{TRACK_PATH}{quote(display(reference))}"
    return f"{url}?token={quote(token)}" if token else url


def tracking_token(sealer: Sealer, enquiry_id: uuid.UUID, stored_hash: str | None) -> str | None:
    """The enquiry's access token: the one, under any configured key, whose hash is stored
    (None for an enquiry whose token was random, from before tokens were derived)."""
    if stored_hash is None:
        return None
    return next(
        (t for t in sealer.access_tokens(enquiry_id) if hash_secret(t) == stored_hash), None
    )


class AlertSender(LeaseQueue[Claim]):
    """Sends due alerts until stopped; any number may share a database."""

    table = alert_table
    name = "alerts"
    claim_columns = (a.enquiry_id, a.event_id, a.kind, a.channel, a.language, a.status)

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        catalogue: Catalogue,
        sealer: Sealer,
        settings: Settings,
        outbound: OutboundGuard | None = None,
        worker_id: str | None = None,
        shutdown_grace_seconds: float = 10.0,
    ) -> None:
        super().__init__(engine=engine, settings=settings.alerts, worker_id=worker_id)
        self.catalogue = catalogue
        self.sealer = sealer
        self.app_settings = settings
        self.outbound = outbound
        self.shutdown_grace_seconds = shutdown_grace_seconds

    # --- the lease queue ---------------------------------------------------------------------

    def _grace_seconds(self) -> float:
        return self.shutdown_grace_seconds

    async def _claimed(self, rows: Sequence[Row[Any]], lease_until: datetime) -> list[Claim]:
        return [Claim(**row._asdict()) for row in rows]

    async def _deliver(self, claim: Claim) -> None:
        attempt = claim.claims
        outcome = await self._attempt(claim)
        if (gave_up := self._gave_up(outcome, attempt)) is not None:
            outcome = Result(Outcome.dead, gave_up)
        await self._record(claim, attempt=attempt, outcome=outcome)

    # --- one attempt -------------------------------------------------------------------------

    async def _attempt(self, claim: Claim) -> Result:
        try:
            outgoing = await self._outgoing(claim)
            if outgoing is None:
                return Result(Outcome.cancelled, "the citizen's alerts were stopped or removed")
            reference = await self._send(claim, outgoing)
        except RetryableError as exc:
            return Result(Outcome.retry, str(exc), exc.retry_after)
        except DeliveryError as exc:
            return Result(Outcome.dead, str(exc))
        return Result(Outcome.delivered, provider_reference=reference)

    async def _outgoing(self, claim: Claim) -> Outgoing | None:
        """The message to send, or None when it must not be sent any more."""
        async with reading(self.engine, one_snapshot=True) as conn:
            enquiry = (
                await conn.execute(select(enquiry_table).where(e.id == claim.enquiry_id))
            ).first()
            if enquiry is None or enquiry.alerts_stopped_at or enquiry.anonymised_at:
                return None
            fields = await self._fields(conn, claim, enquiry)
        try:
            citizen = self.sealer.open(enquiry.citizen_sealed) or {}
        except SealedDataUnreadable as exc:
            raise RetryableError("no configured key opens the citizen's details") from exc
        to = citizen.get("email" if claim.channel == AlertChannel.email else "phone")
        if not to:
            raise PermanentError(f"the citizen gave no address for {claim.channel}")
        unsubscribe = unsubscribe_url(self.app_settings, self.sealer, claim.enquiry_id)
        token = tracking_token(self.sealer, claim.enquiry_id, enquiry.access_token_hash)
        fields |= {
            "track_url": track_url(self.app_settings, enquiry.reference, token),
            "unsubscribe_url": unsubscribe,
        }
        written = templates.write(AlertKind(claim.kind), claim.language, fields)
        return Outgoing(to=str(to), written=written, unsubscribe_url=unsubscribe)

    async def _fields(self, conn: AsyncConnection, claim: Claim, enquiry: Any) -> dict[str, str]:
        service = self.catalogue.services.get(enquiry.service_code)
        fields = {
            "reference": display(enquiry.reference),
            "service": service.name if service else enquiry.service_code,
            "status": claim.status or "",
        }
        if claim.kind == AlertKind.acknowledgement:
            fields["organisations"] = templates.names(
                claim.language, await self._organisations(conn, claim.enquiry_id)
            )
        elif claim.kind == AlertKind.question:
            event = (
                await conn.execute(select(event_table).where(event_table.c.id == claim.event_id))
            ).one()
            organisation = self.catalogue.organisations.get(event.organisation_id or "")
            fields["organisation"] = organisation.name if organisation else ""
            fields["question"] = await question_text(conn, event) or ""
        return fields

    async def _organisations(self, conn: AsyncConnection, enquiry_id: uuid.UUID) -> list[str]:
        d = dispatch_table.c
        ids = await conn.scalars(
            select(d.organisation_id).where(d.enquiry_id == enquiry_id).order_by(d.created_at)
        )
        known = self.catalogue.organisations
        return list(dict.fromkeys(known[i].name for i in ids if i in known))

    async def _send(self, claim: Claim, outgoing: Outgoing) -> str:
        alerts = self.app_settings.alerts
        if claim.channel == AlertChannel.email and alerts.email_via == AlertVia.smtp:
            return await self._send_smtp(claim, outgoing)
        target = self._notify_target()
        await self._check(target.base_url)
        email = claim.channel == AlertChannel.email
        message = notify.NotifyMessage(
            channel=AlertChannel(claim.channel),
            to=outgoing.to,
            template_id=alerts.notify_email_template_id if email else alerts.notify_sms_template_id,
            personalisation={"subject": outgoing.written.subject, "body": outgoing.written.body}
            if email
            else {"body": outgoing.written.body},
            reference=str(claim.row_id),
            unsubscribe_url=outgoing.unsubscribe_url if email else None,
        )
        return await notify.send(target, message, repeat=claim.claims > 1)

    def _notify_target(self) -> notify.NotifyTarget:
        settings, alerts = self.app_settings, self.app_settings.alerts
        production = settings.env is Environment.production
        key = alerts.notify_api_key.get_secret_value() if alerts.notify_api_key else None
        if production and key is None:
            raise PermanentError("IAP_ALERTS__NOTIFY_API_KEY is not set")
        sandbox = None if production else settings.sandbox_url
        return notify.NotifyTarget(
            base_url=alerts.notify_base_url or sandbox or notify.NOTIFY_URL,
            api_key=key or notify.SANDBOX_NOTIFY_API_KEY,
            timeout=settings.http.timeout_seconds,
        )

    async def _check(self, url: str) -> None:
        """The outbound rules (enforced in production); our own clients connect by themselves."""
        if self.outbound is None:
            return
        try:
            await self.outbound.check_url(url)
        except OSError as exc:
            raise RetryableError(f"{type(exc).__name__}: the host could not be resolved") from exc

    async def _send_smtp(self, claim: Claim, outgoing: Outgoing) -> str:
        host, port = self._smtp_server()
        alerts = self.app_settings.alerts
        await self._check(f"{'smtps' if alerts.smtp_starttls else 'smtp'}://{host}:{port}")
        message = email_message(
            outgoing,
            sender=alerts.from_address,
            message_id=message_id(claim.row_id),
        )
        timeout = self.app_settings.http.timeout_seconds
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            username=alerts.smtp_username,
            password=alerts.smtp_password.get_secret_value() if alerts.smtp_password else None,
            start_tls=alerts.smtp_starttls,
            timeout=timeout,
        )
        try:
            async with asyncio.timeout(timeout):
                await client.connect()
                refused, _ = await client.send_message(message)
        except TimeoutError as exc:
            raise RetryableError(f"SMTP: no answer within {timeout:g} s", ambiguous=True) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise smtp_error(exc) from exc
        finally:
            client.close()
        if refused:
            raise reply_error(min(r.code for r in refused.values()))
        return message_id(claim.row_id).strip("<>")

    def _smtp_server(self) -> tuple[str, int]:
        settings, alerts = self.app_settings, self.app_settings.alerts
        if alerts.smtp_host:
            return alerts.smtp_host, alerts.smtp_port or (587 if alerts.smtp_starttls else 25)
        if settings.env is Environment.production:
            raise PermanentError("IAP_ALERTS__SMTP_HOST is not set")
        return SANDBOX_SMTP_HOST, settings.sandbox_smtp_port

    # --- the outcome -------------------------------------------------------------------------

    async def _record(self, claim: Claim, *, attempt: int, outcome: Result) -> None:
        now = utcnow()
        values = finished(
            outcome.kind,
            attempt=attempt,
            now=now,
            error=outcome.error,
            retry_in=lambda: self._backoff(attempt, outcome.retry_after),
        )
        if outcome.provider_reference is not None:
            values["provider_reference"] = outcome.provider_reference[:128]
        async with writing(self.engine) as conn:
            if not await self._settle(conn, claim, values):
                log.warning("alert.lease_lost", alert=str(claim.row_id))
                return
        log.info(
            f"alert.{outcome.kind}",
            alert=str(claim.row_id),
            enquiry=str(claim.enquiry_id),
            kind=claim.kind,
            channel=claim.channel,
            attempt=attempt,
            error=outcome.error,
        )


def email_message(outgoing: Outgoing, *, sender: str, message_id: str) -> EmailMessage:
    """Plain text, with the one-click unsubscribe headers of RFC 8058."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = outgoing.to
    message["Subject"] = outgoing.written.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id
    message["List-Unsubscribe"] = f"<{outgoing.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(outgoing.written.body)
    message["Content-Language"] = outgoing.written.language  # set_content clears Content-*
    return message


def smtp_error(exc: aiosmtplib.SMTPException | OSError) -> RetryableError | PermanentError:
    """By reply code alone (a reply may quote the citizen's address): 4xx, refused or dropped
    connections retry; 5xx and the rest do not."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return reply_error(min(r.code for r in exc.recipients))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return reply_error(exc.code)
    if isinstance(exc, OSError):
        dropped = isinstance(exc, aiosmtplib.SMTPServerDisconnected)
        return RetryableError(f"SMTP: {type(exc).__name__}", ambiguous=dropped)
    return PermanentError(f"SMTP: {type(exc).__name__}")


def reply_error(code: int) -> RetryableError | PermanentError:
    """An SMTP reply code: 4xx is temporary by definition (RFC 5321 §4.2.1)."""
    if 400 <= code < 500:
        return RetryableError(f"SMTP {code}")
    return PermanentError(f"SMTP {code}")
