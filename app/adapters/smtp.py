"""`email`: send the enquiry by SMTP, as a readable text body with a JSON attachment.

For back-offices whose only intake is a mailbox (Thames Valley Police in the shipped config, and
any organisation as a fallback). The Message-ID is made from the dispatch id, so a message sent
again after an ambiguous failure (a timeout after DATA) can be recognised and discarded.
A follow-up (more information, a withdrawal, a reopening) is a reply in the same thread: its
In-Reply-To and References name the first delivery's Message-ID, its own Message-ID is made
from the follow-up id (the key a repeat is recognised by), its subject is "Re: " and the first
one's, X-IAP-Follow-Up says which kind it is, and each photo or document is a part of its own.
Named smtp.py, not email.py, so that it never shadows the standard library's `email` package.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
from pydantic import EmailStr, Field, SecretStr, model_validator

from app.adapters.base import (
    Adapter,
    AdapterConfig,
    Delivery,
    EnquirySnapshot,
    FollowUp,
    FollowUpReceipt,
    PermanentError,
    Receipt,
    RetryableError,
    enquiry_record,
)
from app.core.vocabulary import MessageKind

MESSAGE_ID_DOMAIN = "iap.invalid"
_REPLY_CHARS = 120
# The first line of a follow-up's body, for the person reading the mailbox.
FOLLOW_UP_LEADS: dict[MessageKind, str] = {
    MessageKind.information: "More information about enquiry {reference}",
    MessageKind.withdrawal: "Enquiry {reference} has been withdrawn",
    MessageKind.reopening: "Enquiry {reference} is to be reopened",
}


class EmailConfig(AdapterConfig):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65_535)
    sender: EmailStr
    recipients: list[EmailStr] = Field(min_length=1)
    starttls: bool = False  # upgrade a plain connection with STARTTLS (submission, port 587)
    use_tls: bool = False  # TLS from the first byte (implicit TLS, port 465)
    username: str | None = None
    password: SecretStr | None = None
    subject_prefix: str = Field(default="IAP enquiry", min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailConfig:
        if self.starttls and self.use_tls:
            raise ValueError("starttls and use_tls: choose one (STARTTLS or implicit TLS)")
        return self

    @model_validator(mode="after")
    def _credentials_in_pairs(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password: give both, or neither")
        return self

    def outbound_urls(self) -> dict[str, str]:
        """The SMTP server, as smtps:// when the conversation is encrypted (either TLS mode)."""
        scheme = "smtps" if self.use_tls or self.starttls else "smtp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {"host": f"{scheme}://{host}:{self.port}"}


class EmailAdapter(Adapter):
    config_model = EmailConfig
    config: EmailConfig

    async def deliver(self, delivery: Delivery) -> Receipt:
        await self._check_outbound()
        message = build_message(delivery, self.config)
        refused = await self._send(message)
        if refused:
            raise_for_refused(refused, total=len(self.config.recipients))
        return Receipt(remote_reference=message_id(delivery).strip("<>"))

    async def follow_up(self, follow_up: FollowUp) -> FollowUpReceipt:
        """A reply to the first delivery's message; every attempt has the same Message-ID."""
        await self._check_outbound()
        message = build_follow_up(follow_up, self.config)
        await follow_up.fence()
        refused = await self._send(message)
        if refused:
            raise_for_refused(refused, total=len(self.config.recipients))
        return FollowUpReceipt(remote_reference=follow_up_message_id(follow_up).strip("<>"))

    async def _check_outbound(self) -> None:
        """aiosmtplib connects by itself, so the outbound rules are checked here."""
        if self.outbound is None:
            return
        try:
            await self.outbound.check_url(self.config.outbound_urls()["host"])
        except OSError as exc:
            raise smtp_error(exc) from exc

    async def _send(self, message: EmailMessage) -> dict[str, aiosmtplib.SMTPResponse]:
        """One SMTP conversation; the recipients that refused the message, if any."""
        client = self._client()
        try:
            # The whole conversation, not only each step, ends within the timeout: the
            # dispatcher's lease is sized from it.
            async with asyncio.timeout(self.timeout):
                await client.connect()
                refused, _ = await client.send_message(
                    message, sender=self.config.sender, recipients=self.config.recipients
                )
        except TimeoutError as exc:  # ours, or aiosmtplib's for one step
            said = f"SMTP: no answer within {self.timeout:g} s"
            raise RetryableError(said, ambiguous=True) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise smtp_error(exc) from exc
        finally:
            # No QUIT: the message is the server's once it answered the data with 250, and a
            # QUIT that timed out would turn that success into a repeat.
            client.close()
        return refused

    def _client(self) -> aiosmtplib.SMTP:
        config = self.config
        return aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            use_tls=config.use_tls,
            # False, not None: never an opportunistic upgrade the config did not ask for.
            start_tls=config.starttls,
            timeout=self.timeout,
        )


def message_id(delivery: Delivery) -> str:
    """The same on every attempt, so that a receiving system can discard repeats."""
    return id_of(delivery.dispatch_id)


def follow_up_message_id(follow_up: FollowUp) -> str:
    """A follow-up's own Message-ID, the same on every attempt."""
    return id_of(follow_up.follow_up_id)


def id_of(key: uuid.UUID) -> str:
    """A Message-ID made from one of our ids."""
    return f"<{key}@{MESSAGE_ID_DOMAIN}>"


def subject(enquiry: EnquirySnapshot, config: EmailConfig) -> str:
    """The first delivery's subject; a follow-up's is "Re: " and this."""
    return f"{config.subject_prefix} {enquiry.reference}: {enquiry.service_name}"


def build_message(delivery: Delivery, config: EmailConfig) -> EmailMessage:
    """multipart/mixed: the enquiry as plain text, and as enquiry-<reference>.json."""
    record = enquiry_record(delivery)
    enquiry = delivery.enquiry
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = ", ".join(config.recipients)
    message["Subject"] = subject(enquiry, config)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id(delivery)
    message["X-IAP-Reference"] = enquiry.reference
    message.set_content(text_body(record))
    message.add_attachment(
        json.dumps(record, indent=2, ensure_ascii=False).encode(),
        maintype="application",
        subtype="json",
        filename=f"enquiry-{enquiry.reference}.json",
    )
    return message


def build_follow_up(follow_up: FollowUp, config: EmailConfig) -> EmailMessage:
    """A reply in the enquiry's thread: the text, and each attachment under our file name."""
    enquiry = follow_up.enquiry
    first = id_of(follow_up.dispatch_id)
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = ", ".join(config.recipients)
    message["Subject"] = f"Re: {subject(enquiry, config)}"
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = follow_up_message_id(follow_up)
    message["In-Reply-To"] = first
    message["References"] = first
    message["X-IAP-Reference"] = enquiry.reference
    message["X-IAP-Follow-Up"] = str(follow_up.kind)
    message.set_content(follow_up_body(follow_up))
    for attachment in follow_up.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )
    return message


def follow_up_body(follow_up: FollowUp) -> str:
    """What was said, laid out for a person reading the mailbox."""
    enquiry = follow_up.enquiry
    if follow_up.kind not in FOLLOW_UP_LEADS:
        raise PermanentError(f"a {follow_up.kind} is never sent to a back-office")
    who = "the citizen" if follow_up.by_citizen else "our staff, for the citizen"
    lines = [
        f"{FOLLOW_UP_LEADS[follow_up.kind].format(reference=enquiry.reference)}"
        f" ({enquiry.service_name}).",
        f"Said: {follow_up.created_at.isoformat()} by {who}",
        "",
        follow_up.text or "(No words given.)",
        "",
    ]
    names = [attachment.filename for attachment in follow_up.attachments]
    if names:
        lines.append(f"Attached: {', '.join(names)}.")
    return "\n".join(lines) + "\n"


def text_body(record: dict[str, Any]) -> str:
    """The record laid out for a person reading the mailbox."""
    lines = [
        f"Enquiry {record['reference']}: {record['service_name']} ({record['service_code']})",
        f"Submitted: {record['submitted_at']} by {record['channel']}",
        "",
        "Description:",
        record["description"],
        "",
        *_section("Location", record["location"] or {}),
        *_section("Details", record["attributes"]),
    ]
    citizen = record.get("citizen")
    if citizen is None:
        lines += ["Contact details: not shared with this organisation.", ""]
    else:
        lines.extend(_section("Contact details", citizen))
    lines.append(f"The same, as JSON: enquiry-{record['reference']}.json (attached).")
    return "\n".join(lines) + "\n"


def _section(title: str, values: dict[str, Any]) -> list[str]:
    if not values:
        return [f"{title}: none given.", ""]
    lines = [f"{title}:"]
    for key, value in values.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        lines.append(f"  {key}: {shown}")
    return [*lines, ""]


def smtp_error(exc: aiosmtplib.SMTPException | OSError) -> RetryableError | PermanentError:
    """4xx replies, refused connections and timeouts retry; 5xx replies and the rest do not."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return refused_error(exc.recipients, total=len(exc.recipients))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return reply_error(exc.code, exc.message, what=type(exc).__name__)
    if isinstance(exc, OSError):
        # Refused or dropped connections (SMTPConnectError and SMTPServerDisconnected are
        # ConnectionErrors), and TLS handshakes that failed: a certificate can be renewed.
        # Dropped during the conversation, the message may have been taken all the same.
        dropped = isinstance(exc, aiosmtplib.SMTPServerDisconnected)
        return RetryableError(f"{type(exc).__name__}: {_one_line(str(exc))}", ambiguous=dropped)
    # SMTPNotSupported and the like: the server lacks what the config asks for (STARTTLS, AUTH).
    return PermanentError(f"{type(exc).__name__}: {_one_line(str(exc))}")


def reply_error(code: int, reply: str, *, what: str) -> RetryableError | PermanentError:
    """An SMTP reply code as an error: 4xx is temporary by definition (RFC 5321 §4.2.1)."""
    summary = f"SMTP {code} ({what}): {_one_line(reply)}"
    if 400 <= code < 500:
        return RetryableError(summary)
    return PermanentError(summary)


def refused_error(
    refusals: list[aiosmtplib.SMTPRecipientRefused], *, total: int
) -> RetryableError | PermanentError:
    """Some recipients refused: retry if any refusal is temporary (repeats share a Message-ID)."""
    codes = sorted({refusal.code for refusal in refusals})
    worst = min(codes)  # a 4xx among them means trying again may still reach everyone
    what = f"{len(refusals)} of {total} recipients refused"
    return reply_error(worst, refusals[0].message, what=f"{what}, codes {codes}")


def raise_for_refused(refused: dict[str, aiosmtplib.SMTPResponse], *, total: int) -> None:
    """The server took the message for some recipients only; the rest are still owed it."""
    refusals = [
        aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
        for recipient, response in refused.items()
    ]
    raise refused_error(refusals, total=total)


def _one_line(text: str) -> str:
    """A server's reply, short and on one line. It echoes our envelope, never the body."""
    return " ".join(text.split())[:_REPLY_CHARS]
