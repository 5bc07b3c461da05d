"""The email adapter's follow-ups against a real aiosmtpd server on loopback: a reply in the
first message's thread, field by field for each kind, its files as parts, the same Message-ID on
a repeat, and every failure classified as a delivery's is."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from app.adapters.base import FollowUp, LeaseLost, PermanentError, RetryableError
from app.adapters.smtp import EmailAdapter, EmailConfig, build_message
from app.core.vocabulary import MessageKind
from tests.adapters import factory
from tests.adapters.mailserver import Mailbox, Server, free_port, readable

SENDER = "iap@example.org"
RECIPIENT = "enquiries@police.example.org"
FIRST = f"<{factory.DISPATCH_ID}@iap.invalid>"
OWN = f"<{factory.FOLLOW_UP_ID}@iap.invalid>"
SUBJECT = f"IAP enquiry {factory.REFERENCE}: Antisocial behaviour"


def config(port: int, **overrides: Any) -> EmailConfig:
    values = {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "sender": SENDER,
        "recipients": [RECIPIENT],
    }
    return EmailConfig(**(values | overrides))


def follow_up(**fields: Any) -> FollowUp:
    return factory.follow_up(
        "thames-valley-police",
        remote_reference=f"{factory.DISPATCH_ID}@iap.invalid",
        service_name="Antisocial behaviour",
        **fields,
    )


async def send(f: FollowUp, port: int, *, timeout: float = 5, **overrides: Any):
    async with httpx.AsyncClient() as client:
        adapter = EmailAdapter(config=config(port, **overrides), client=client, timeout=timeout)
        return await adapter.follow_up(f)


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


# -- the reply as the back-office receives it ----------------------------------------------------


async def test_more_information_with_two_photos_threads_on_the_first_message(server: Server):
    photos = (factory.attachment_file(number=1), factory.attachment_file(factory.photo(), number=2))
    receipt = await send(follow_up(attachments=photos), server.port)
    assert receipt.remote_reference == f"{factory.FOLLOW_UP_ID}@iap.invalid"
    [received] = server.mailbox.received
    assert (received.mail_from, received.rcpt_tos) == (SENDER, [RECIPIENT])
    message = received.message
    assert message["Message-ID"] == OWN
    assert message["In-Reply-To"] == FIRST
    assert message["References"] == FIRST
    assert message["Subject"] == f"Re: {SUBJECT}"
    assert message["X-IAP-Reference"] == factory.REFERENCE
    assert message["X-IAP-Follow-Up"] == "information"
    assert message["From"] == SENDER
    assert message["To"] == RECIPIENT
    text = text_of(message)
    assert text.startswith(f"More information about enquiry {factory.REFERENCE}")
    assert "The pothole is on the north side, by the bus stop" in text
    assert "by the citizen" in text
    assert "Attached: photo-1.jpg, photo-2.jpg." in text
    files = list(message.iter_attachments())
    assert [(p.get_filename(), p.get_content_type()) for p in files] == [
        ("photo-1.jpg", "image/jpeg"),
        ("photo-2.jpg", "image/jpeg"),
    ]
    assert [p.get_content() for p in files] == [a.content for a in photos]


async def test_the_subject_is_re_and_the_first_deliverys(server: Server):
    first = factory.delivery(
        "thames-valley-police", citizen=None, service_name="Antisocial behaviour"
    )
    assert build_message(first, config(server.port))["Subject"] == SUBJECT
    assert build_message(first, config(server.port))["Message-ID"] == FIRST


@pytest.mark.parametrize(
    ("kind", "lead"),
    [
        (MessageKind.withdrawal, f"Enquiry {factory.REFERENCE} has been withdrawn"),
        (MessageKind.reopening, f"Enquiry {factory.REFERENCE} is to be reopened"),
    ],
)
async def test_a_withdrawal_and_a_reopening_say_so_with_their_reason(
    server: Server, kind: MessageKind, lead: str
):
    await send(follow_up(kind=kind, text="A neighbour sorted it", by_citizen=False), server.port)
    [received] = server.mailbox.received
    message = received.message
    assert message["X-IAP-Follow-Up"] == kind.value
    assert message["In-Reply-To"] == FIRST
    text = text_of(message)
    assert text.startswith(lead)
    assert "A neighbour sorted it" in text
    assert "by our staff, for the citizen" in text
    assert list(message.iter_attachments()) == []


async def test_a_reply_carries_nothing_about_the_citizen(server: Server):
    # The first message carried what the agreement allowed; the reply need not repeat it.
    await send(follow_up(share=True), server.port)
    [received] = server.mailbox.received
    shown = readable(received.raw)
    for value in ("Ann Example", "ann@example.org", "01865 000000", "Large print"):
        assert value not in shown


async def test_a_document_goes_under_its_own_type(server: Server):
    pdf = replace(
        factory.attachment_file(b"%PDF-1.4\n%%EOF\n"),
        filename="document-1.pdf",
        content_type="application/pdf",
    )
    await send(follow_up(attachments=(pdf,)), server.port)
    [part] = server.mailbox.received[0].message.iter_attachments()
    assert (part.get_filename(), part.get_content_type()) == ("document-1.pdf", "application/pdf")
    assert part.get_content() == b"%PDF-1.4\n%%EOF\n"


async def test_a_repeat_carries_the_same_message_id(server: Server):
    await send(follow_up(), server.port)
    await send(follow_up(attempt=2), server.port)
    ids = [r.message["Message-ID"] for r in server.mailbox.received]
    assert ids == [OWN, OWN]


async def test_another_follow_up_has_its_own_message_id_in_the_same_thread(server: Server):
    other = uuid.UUID("00000000-0000-4000-8000-0000000000f2")
    await send(follow_up(), server.port)
    await send(follow_up(follow_up_id=other), server.port)
    first, second = (r.message for r in server.mailbox.received)
    assert first["Message-ID"] != second["Message-ID"] == f"<{other}@iap.invalid>"
    assert first["In-Reply-To"] == second["In-Reply-To"] == FIRST


async def test_a_note_is_never_sent(server: Server):
    with pytest.raises(PermanentError, match="note"):
        await send(follow_up(kind=MessageKind.note), server.port)
    assert server.mailbox.received == []


async def test_the_fence_is_awaited_before_sending(server: Server):
    async def lost() -> None:
        raise LeaseLost("no longer ours")

    with pytest.raises(LeaseLost):
        await send(replace(follow_up(), fence=lost), server.port)
    assert server.mailbox.received == []


# -- failures, classified as a delivery's --------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reply", "error"),
    [
        ("MAIL", "451 4.3.0 Try again later", RetryableError),
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
        await send(follow_up(), server.port)
    assert type(caught.value) is error
    assert f"SMTP {reply[:3]}" in str(caught.value)
    assert "north side" not in str(caught.value)


async def test_a_mail_server_that_cannot_be_reached_is_retryable():
    with pytest.raises(RetryableError, match="SMTPConnectError") as caught:
        await send(follow_up(), free_port())
    assert not caught.value.ambiguous


async def test_an_unanswered_data_is_an_ambiguous_retry_and_the_repeat_matches(
    start_server: Callable[..., Server],
):
    server = start_server(Mailbox(silent_after_data=1))
    with pytest.raises(RetryableError, match="no answer within") as caught:
        await send(follow_up(), server.port, timeout=0.5)
    assert caught.value.ambiguous
    await send(follow_up(attempt=2), server.port)
    assert [r.message["Message-ID"] for r in server.mailbox.received] == [OWN, OWN]
