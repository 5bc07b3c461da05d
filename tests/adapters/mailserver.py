"""A real SMTP back-office on loopback (aiosmtpd), for the email adapter's tests."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    authenticated: bool
    tls: bool

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps what it accepts; can answer a command with a set reply."""

    replies: dict[str, str] = field(default_factory=dict)  # "MAIL"/"RCPT"/"DATA" → reply
    refuse: dict[str, str] = field(default_factory=dict)  # recipient → reply
    received: list[Received] = field(default_factory=list)
    silent_after_data: int = 0  # take this many messages but never answer their data

    async def handle_MAIL(self, server, session, envelope, address, options) -> str:
        envelope.mail_from = address
        return self.replies.get("MAIL", "250 OK")

    async def handle_RCPT(self, server, session, envelope, address, options) -> str:
        reply = self.refuse.get(address) or self.replies.get("RCPT")
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        if "DATA" in self.replies:
            return self.replies["DATA"]
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.received.append(
            Received(
                envelope.mail_from, envelope.rcpt_tos, envelope.content, session.authenticated, tls
            )
        )
        if self.silent_after_data:
            self.silent_after_data -= 1
            await asyncio.Event().wait()  # never set: the stopping server cancels this wait
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    mailbox: Mailbox
    port: int


def readable(raw: bytes) -> str:
    """The raw message and every part decoded, so base64 cannot hide what was sent."""
    parsed = message_from_bytes(raw, policy=policy.default)
    texts = [raw.decode("utf-8", "replace")]
    for part in parsed.walk():
        if not part.is_multipart():
            content = part.get_content()
            texts.append(content.decode() if isinstance(content, bytes) else content)
    return "\n".join(texts)
