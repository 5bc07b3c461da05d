"""The email adapter against a real aiosmtpd server on loopback: the message as received, field
by field; minimisation; repeats; AUTH, STARTTLS and implicit TLS; and every error class."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from app.adapters import ADAPTER_TYPES
from app.adapters.base import Delivery, PermanentError, RetryableError
from app.adapters.smtp import EmailAdapter, EmailConfig
from app.catalogue.catalogue import AdapterConfig
from tests.adapters import factory
from tests.adapters.mailserver import Mailbox, Server, readable

POLICE = factory.CATALOGUE.organisations["thames-valley-police"]
DISPATCH_ID = uuid.UUID("00000000-0000-4000-8000-0000000000e1")
REFERENCE = "K7Q-M4X-PB6"
SENDER = "iap@example.org"
RECIPIENT = "enquiries@police.example.org"
CITIZEN = {
    "name": "Ann Example",
    "email": "ann@example.net",
    "phone": "01865 000000",
    "language": "cy",
    "accessibility_needs": "Large print",
}
PERSONAL = ("Ann Example", "ann@example.net", "01865 000000", "Large print")


def delivery(*, share: bool, organisation: Any = POLICE, attempt: int = 1) -> Delivery:
    return factory.delivery(
        organisation,
        citizen=CITIZEN,
        share=share,
        attempt=attempt,
        dispatch_id=DISPATCH_ID,
        service_name="Antisocial behaviour",
        service_code="antisocial-behaviour",
        description="Loud music every night — third week running",
        channel="web",
        location={"postcode": "OX4 1AA", "address": "1 High Street"},
        attributes={"time_of_day": "night", "kinds": ["noise", "litter"], "ongoing": True},
    )


# --- the back-office: a real SMTP server on loopback ----------------------------------------


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def trust_certificate(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the test certificate the one CA the client trusts, as an operator would with a
    private relay's CA (OpenSSL reads SSL_CERT_FILE when a default context is made)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))


def config(port: int | None = None, **overrides: Any) -> EmailConfig:
    values: dict[str, Any] = {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "sender": SENDER,
        "recipients": [RECIPIENT],
    }
    values.update(overrides)
    return EmailConfig(**values)


async def send(d: Delivery, port: int, *, timeout: float = 5, **overrides: Any):
    async with httpx.AsyncClient() as client:
        adapter = EmailAdapter(config=config(port, **overrides), client=client, timeout=timeout)
        return await adapter.deliver(d)


def parts(message: EmailMessage) -> tuple[str, dict[str, Any], EmailMessage]:
    """The text body, the JSON attachment parsed, and the attachment part itself."""
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1
    attachment = attachments[0]
    assert isinstance(attachment, EmailMessage)
    return body.get_content(), json.loads(attachment.get_content()), attachment


# --- the message as the back-office receives it -----------------------------------------------


async def test_message_without_consent_field_by_field(server: Server):
    receipt = await send(delivery(share=False), server.port)
    assert receipt.remote_reference == f"{DISPATCH_ID}@iap.invalid"
    [received] = server.mailbox.received
    assert received.mail_from == SENDER
    assert received.rcpt_tos == [RECIPIENT]
    assert not received.authenticated
    assert not received.tls
    message = received.message
    assert message["From"] == SENDER
    assert message["To"] == RECIPIENT
    assert message["Subject"] == f"IAP enquiry {REFERENCE}: Antisocial behaviour"
    assert message["Message-ID"] == f"<{DISPATCH_ID}@iap.invalid>"
    assert message["X-IAP-Reference"] == REFERENCE
    assert message["Date"].datetime.tzinfo is not None
    assert message.get_content_type() == "multipart/mixed"
    text, record, attachment = parts(message)
    assert attachment.get_content_type() == "application/json"
    assert attachment.get_filename() == f"enquiry-{REFERENCE}.json"
    assert record == {
        "reference": REFERENCE,
        "dispatch_id": str(DISPATCH_ID),
        "service_code": "antisocial-behaviour",
        "service_name": "Antisocial behaviour",
        "description": "Loud music every night — third week running",
        "channel": "web",
        "location": {"postcode": "OX4 1AA", "address": "1 High Street"},
        "attributes": {"time_of_day": "night", "kinds": ["noise", "litter"], "ongoing": True},
        "submitted_at": "2026-11-25T09:30:00+00:00",
    }
    assert text.splitlines() == [
        f"Enquiry {REFERENCE}: Antisocial behaviour (antisocial-behaviour)",
        "Submitted: 2026-11-25T09:30:00+00:00 by web",
        "",
        "Description:",
        "Loud music every night — third week running",
        "",
        "Location:",
        "  postcode: OX4 1AA",
        "  address: 1 High Street",
        "",
        "Details:",
        "  time_of_day: night",
        "  kinds: noise, litter",
        "  ongoing: True",
        "",
        "Contact details: not shared with this organisation.",
        "",
        f"The same, as JSON: enquiry-{REFERENCE}.json (attached).",
    ]
    everything = readable(received.raw)
    for value in PERSONAL:
        assert value not in everything


async def test_with_consent_the_agreed_fields_are_in_body_and_attachment(server: Server):
    await send(delivery(share=True), server.port, subject_prefix="[TVP]")
    [received] = server.mailbox.received
    assert received.message["Subject"] == f"[TVP] {REFERENCE}: Antisocial behaviour"
    text, record, _ = parts(received.message)
    assert record["citizen"] == CITIZEN
    lines = text.splitlines()
    start = lines.index("Contact details:") + 1
    assert lines[start : start + 6] == [
        "  name: Ann Example",
        "  email: ann@example.net",
        "  phone: 01865 000000",
        "  language: cy",
        "  accessibility_needs: Large print",
        "",
    ]


async def test_a_narrow_agreement_sends_only_its_fields(server: Server):
    narrow = POLICE.model_copy(update={"shares": ("email",)})
    await send(delivery(share=True, organisation=narrow), server.port)
    [received] = server.mailbox.received
    text, record, _ = parts(received.message)
    assert record["citizen"] == {"email": "ann@example.net"}
    assert "  email: ann@example.net" in text.splitlines()


async def test_several_recipients_and_no_location(server: Server):
    d = delivery(share=False)
    bare = replace(d, enquiry=replace(d.enquiry, location=None, attributes={}))
    others = [RECIPIENT, "duty@police.example.org"]
    await send(bare, server.port, recipients=others)
    [received] = server.mailbox.received
    assert received.rcpt_tos == others
    assert received.message["To"] == ", ".join(others)
    text, record, _ = parts(received.message)
    assert record["location"] is None
    assert record["attributes"] == {}
    assert "Location: none given." in text.splitlines()
    assert "Details: none given." in text.splitlines()


async def test_a_repeat_carries_the_same_message_id(server: Server):
    first = await send(delivery(share=False, attempt=1), server.port)
    second = await send(delivery(share=False, attempt=2), server.port)
    assert first == second
    ids = [r.message["Message-ID"] for r in server.mailbox.received]
    assert ids == [f"<{DISPATCH_ID}@iap.invalid>"] * 2


async def test_a_repeat_after_an_unanswered_data_carries_the_same_message_id(
    start_server: Callable[..., Server],
):
    # The ambiguous failure: the message arrived, the 250 never did.
    server = start_server(Mailbox(silent_after_data=1))
    with pytest.raises(RetryableError, match=r"no answer within 0\.5 s"):
        await send(delivery(share=False, attempt=1), server.port, timeout=0.5)
    receipt = await send(delivery(share=False, attempt=2), server.port)
    assert receipt.remote_reference == f"{DISPATCH_ID}@iap.invalid"
    ids = [r.message["Message-ID"] for r in server.mailbox.received]
    assert ids == [f"<{DISPATCH_ID}@iap.invalid>"] * 2


# --- authentication and TLS -------------------------------------------------------------------


def password_check(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"tvp-relay", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


async def test_auth_with_username_and_password(start_server: Callable[..., Server]):
    # Plain loopback: the server must allow AUTH without TLS. AUTH is offered, not required
    # (requiring it without TLS makes aiosmtpd warn, and warnings are errors here).
    server = start_server(authenticator=password_check, auth_require_tls=False)
    await send(delivery(share=False), server.port, username="tvp-relay", password="s3cret")
    [received] = server.mailbox.received
    assert received.authenticated


async def test_a_refused_password_is_permanent_and_not_repeated_back(
    start_server: Callable[..., Server],
):
    server = start_server(authenticator=password_check, auth_require_tls=False)
    with pytest.raises(PermanentError, match="SMTP 535") as caught:
        await send(delivery(share=True), server.port, username="tvp-relay", password="wrong")
    assert "wrong" not in str(caught.value)
    assert server.mailbox.received == []


async def test_starttls(
    start_server: Callable[..., Server], server_tls: ssl.SSLContext, trust_certificate: None
):
    server = start_server(tls_context=server_tls, require_starttls=True)
    await send(delivery(share=False), server.port, starttls=True)
    [received] = server.mailbox.received
    assert received.tls
    assert received.message["X-IAP-Reference"] == REFERENCE


async def test_starttls_then_auth(
    start_server: Callable[..., Server], server_tls: ssl.SSLContext, trust_certificate: None
):
    server = start_server(tls_context=server_tls, authenticator=password_check, auth_required=True)
    await send(
        delivery(share=False), server.port, starttls=True, username="tvp-relay", password="s3cret"
    )
    [received] = server.mailbox.received
    assert received.tls
    assert received.authenticated


async def test_implicit_tls(
    start_server: Callable[..., Server], server_tls: ssl.SSLContext, trust_certificate: None
):
    server = start_server(ssl_context=server_tls)
    await send(delivery(share=False), server.port, use_tls=True)
    [received] = server.mailbox.received
    assert received.tls


async def test_an_untrusted_certificate_is_refused(
    start_server: Callable[..., Server], server_tls: ssl.SSLContext
):
    server = start_server(tls_context=server_tls)
    with pytest.raises(RetryableError, match=r"(?i)certificate verify failed") as caught:
        await send(delivery(share=True), server.port, starttls=True)
    assert str(caught.value).startswith("SSLCertVerificationError: ")
    assert server.mailbox.received == []


async def test_starttls_asked_of_a_server_without_it_is_permanent(server: Server):
    with pytest.raises(PermanentError, match=r"(?i)starttls"):
        await send(delivery(share=False), server.port, starttls=True)
    assert server.mailbox.received == []


async def test_no_upgrade_unless_asked(
    start_server: Callable[..., Server], server_tls: ssl.SSLContext
):
    server = start_server(tls_context=server_tls)
    await send(delivery(share=False), server.port)
    [received] = server.mailbox.received
    assert not received.tls


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reply", "error"),
    [
        ("MAIL", "451 4.3.0 Try again later", RetryableError),
        ("MAIL", "553 5.1.8 Sender address rejected", PermanentError),
        ("RCPT", "450 4.2.1 Mailbox busy", RetryableError),
        ("RCPT", "550 5.1.1 No such user", PermanentError),
        ("DATA", "451 4.3.0 Local error in processing", RetryableError),
        ("DATA", "554 5.7.1 Message refused", PermanentError),
    ],
)
async def test_reply_codes(
    start_server: Callable[..., Server], command: str, reply: str, error: type[Exception]
):
    server = start_server(Mailbox(replies={command: reply}))
    with pytest.raises(error) as caught:
        await send(delivery(share=True), server.port)
    assert type(caught.value) is error
    message = str(caught.value)
    assert f"SMTP {reply[:3]}" in message
    assert reply[4:] in message
    for value in PERSONAL:
        assert value not in message


@pytest.mark.parametrize(
    ("reply", "error"),
    [("550 5.1.1 No such user", PermanentError), ("452 4.2.2 Over quota", RetryableError)],
)
async def test_one_recipient_of_two_refusing(
    start_server: Callable[..., Server], reply: str, error: type[Exception]
):
    # The other recipient has the message; a repeat carries the same Message-ID for it to drop.
    server = start_server(Mailbox(refuse={"duty@police.example.org": reply}))
    recipients = [RECIPIENT, "duty@police.example.org"]
    with pytest.raises(error, match=f"SMTP {reply[:3]} \\(1 of 2 recipients refused"):
        await send(delivery(share=False), server.port, recipients=recipients)
    assert [r.rcpt_tos for r in server.mailbox.received] == [[RECIPIENT]]


async def test_every_recipient_refusing_temporarily_or_not(start_server: Callable[..., Server]):
    refuse = {RECIPIENT: "550 5.1.1 No such user", "duty@police.example.org": "451 4.3.0 Later"}
    server = start_server(Mailbox(refuse=refuse))
    with pytest.raises(RetryableError, match=r"2 of 2 recipients refused, codes \[451, 550\]"):
        await send(delivery(share=False), server.port, recipients=list(refuse))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose connections are taken (by the kernel's backlog) but never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


async def test_a_server_that_never_greets_times_out_as_retryable(silent_port: int):
    started = time.monotonic()
    with pytest.raises(RetryableError, match=r"no answer within 0\.3 s"):
        await send(delivery(share=False), silent_port, timeout=0.3)
    assert time.monotonic() - started < 3


# --- configuration ----------------------------------------------------------------------------


def test_registered_as_email():
    assert ADAPTER_TYPES["email"] is EmailAdapter
    assert EmailAdapter.config_model is EmailConfig
    assert not EmailAdapter.can_poll


def test_config_from_the_catalogue_keeps_the_password_secret():
    raw = AdapterConfig(
        type="email",
        host="smtp.police.example.org",
        port=587,
        sender=SENDER,
        recipients=[RECIPIENT],
        starttls=True,
        username="tvp-relay",
        password="s3cret",
    ).model_dump()
    loaded = EmailConfig.model_validate(raw)
    assert loaded.password is not None
    assert loaded.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(loaded)
    assert (loaded.use_tls, loaded.subject_prefix) == (False, "IAP enquiry")


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"starttls": True, "use_tls": True}, "choose one"),
        ({"username": "tvp-relay"}, "give both"),
        ({"password": "s3cret"}, "give both"),
        ({"recipients": []}, "at least 1"),
        ({"sender": "not an address"}, "email address"),
        ({"port": 0}, "greater than or equal to 1"),
        ({"smtp_host": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_config_refuses(overrides: dict[str, Any], complaint: str):
    with pytest.raises(ValidationError, match=complaint):
        config(**{"port": 25, **overrides})
