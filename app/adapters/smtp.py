"""`email`: send the enquiry by SMTP, as a readable text body with a JSON attachment.

For back-offices whose only intake is a mailbox (Thames Valley Police in the shipped config, and
any organisation as a fallback). The Message-ID is made from the dispatch id, so a message sent
again after an ambiguous failure (a timeout after DATA) can be recognised and discarded.
Named smtp.py, not email.py, so that it never shadows the standard library's `email` package.
"""

from __future__ import annotations

import asyncio
import json
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import aiosmtplib
from pydantic import EmailStr, Field, SecretStr, model_validator

from app.adapters.base import (
    Adapter,
    AdapterConfig,
    Delivery,
    PermanentError,
    Receipt,
    RetryableError,
    enquiry_record,
)

MESSAGE_ID_DOMAIN = "iap.invalid"
_REPLY_CHARS = 120


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
        if self.outbound is not None:
            # aiosmtplib connects by itself, so the outbound rules are checked here.
            try:
                await self.outbound.check_url(self.config.outbound_urls()["host"])
            except OSError as exc:
                raise smtp_error(exc) from exc
        message = build_message(delivery, self.config)
        refused = await self._send(message)
        if refused:
            raise_for_refused(refused, total=len(self.config.recipients))
        return Receipt(remote_reference=message_id(delivery).strip("<>"))

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
    return f"<{delivery.dispatch_id}@{MESSAGE_ID_DOMAIN}>"


def build_message(delivery: Delivery, config: EmailConfig) -> EmailMessage:
    """multipart/mixed: the enquiry as plain text, and as enquiry-<reference>.json."""
    record = enquiry_record(delivery)
    enquiry = delivery.enquiry
    message = EmailMessage()
    message["From"] = config.sender
    message["To"] = ", ".join(config.recipients)
    message["Subject"] = f"{config.subject_prefix} {enquiry.reference}: {enquiry.service_name}"
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
