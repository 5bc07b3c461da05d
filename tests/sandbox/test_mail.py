"""The SMTP sink, sent to as the email adapter sends, and read as a person reads it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import pytest
from fastapi import FastAPI

from app.sandbox import Behaviour
from tests.sandbox.conftest import POLICE_INBOX, client_for

REFERENCE = "K7Q-M4X-PB6"
MESSAGE_ID = "5b0c0f1e-8c1b-4c55-9d4e-0d5a8f6c1a11@iap.invalid"


def enquiry_mail(*, to: str = POLICE_INBOX, message_id: str = MESSAGE_ID) -> EmailMessage:
    """A message as the email adapter builds it: text, the same as JSON, a stable Message-ID."""
    data = {
        "reference": REFERENCE,
        "service_code": "anti-social-behaviour",
        "description": "Youths kicking a ball at windows every evening",
        "citizen": {"name": "Ann Example", "email": "ann@example.org"},
    }
    message = EmailMessage()
    message["From"] = "iap@example.org"
    message["To"] = to
    message["Subject"] = f"IAP enquiry {REFERENCE}: Anti-social behaviour"
    message["Message-ID"] = f"<{message_id}>"
    message["X-IAP-Reference"] = REFERENCE
    message.set_content(f"Reference: {REFERENCE}\nYouths kicking a ball at windows every evening\n")
    message.add_attachment(
        json.dumps(data).encode(),
        maintype="application",
        subtype="json",
        filename=f"enquiry-{REFERENCE}.json",
    )
    return message


@pytest.fixture
async def mail_app(make_sandbox) -> AsyncIterator[FastAPI]:
    """The sandbox with its SMTP sink listening on a free loopback port."""
    app = make_sandbox(smtp_port=0)
    async with app.router.lifespan_context(app):
        yield app


async def send(app: FastAPI, message: EmailMessage) -> None:
    port = app.state.sandbox.smtp_port
    await aiosmtplib.send(message, hostname="127.0.0.1", port=port, timeout=5)


async def test_a_message_is_kept_and_opens_a_case_for_its_organisation(mail_app):
    await send(mail_app, enquiry_mail())
    office = mail_app.state.office
    [case] = office.cases["thames-valley-police"].values()
    assert case["id"] == MESSAGE_ID
    assert case["reference"] == REFERENCE
    assert case["description"] == "Youths kicking a ball at windows every evening"
    assert case["citizen"]["email"] == "ann@example.org"
    async with client_for(mail_app) as http:
        [shown] = (await http.get("/mail.json")).json()["messages"]
    assert shown["subject"] == f"IAP enquiry {REFERENCE}: Anti-social behaviour"
    assert shown["message_id"] == MESSAGE_ID
    assert shown["to"] == POLICE_INBOX
    assert shown["duplicate"] is False
    assert shown["attachments"][0]["filename"] == f"enquiry-{REFERENCE}.json"


async def test_a_repeat_is_flagged_and_makes_no_second_case(mail_app):
    await send(mail_app, enquiry_mail())
    await send(mail_app, enquiry_mail())
    office = mail_app.state.office
    assert len(office.cases["thames-valley-police"]) == 1
    assert office.posts_by_key[("thames-valley-police", MESSAGE_ID)] == 2
    assert [m["duplicate"] for m in office.mail] == [False, True]
    async with client_for(mail_app) as http:
        page = await http.get("/mail")
    assert page.headers["content-type"].startswith("text/html")
    assert page.text.count(f"&lt;{MESSAGE_ID}&gt;") == 2
    assert page.text.count(">duplicate<") == 1


async def test_mail_to_nobody_we_know_is_kept_without_a_case(mail_app):
    await send(mail_app, enquiry_mail(to="someone@example.net", message_id="other@iap.invalid"))
    office = mail_app.state.office
    assert office.cases == {}
    assert office.mail[0]["organisation"] is None


@pytest.mark.parametrize(
    ("behaviour", "code"), [(Behaviour(down=True), 421), (Behaviour(fail_rate=1.0), 451)]
)
async def test_a_misbehaving_inbox_answers_like_a_mail_server(mail_app, behaviour, code):
    mail_app.state.office.behaviour["thames-valley-police"] = behaviour
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await send(mail_app, enquiry_mail())
    assert refused.value.code == code
    assert mail_app.state.office.mail == []
    assert mail_app.state.office.posts["thames-valley-police"] == 1


async def test_the_mail_page_says_when_there_is_none(make_sandbox):
    async with client_for(make_sandbox()) as http:
        page = await http.get("/mail")
    assert "No mail yet." in page.text
