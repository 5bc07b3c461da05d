"""Telling the citizen: the acknowledgement and status changes reach a real SMTP sink and a
Notify-compatible API on loopback (through Notify's own client), once each, only with consent,
never after the citizen unsubscribed, in Welsh for a Welsh speaker."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest
from notifications_python_client.errors import HTTPError
from notifications_python_client.notifications import NotificationsAPIClient
from sqlalchemy import update
from structlog.testing import capture_logs

from app.alerts.feed import feed
from app.alerts.notify import SANDBOX_NOTIFY_API_KEY
from app.alerts.sender import AlertSender
from app.core.models import alert_table, feed_cursor_table
from app.core.settings import AlertSettings, AlertVia
from app.core.vocabulary import AlertChannel, AlertKind, OutboxState
from app.sandbox.office import Behaviour
from tests.alerts.conftest import (
    EMAIL_CITIZEN,
    SMS_CITIZEN,
    alerts,
    enquiry_id,
    link,
    missed_bin,
    move,
    query,
    submit,
    tell,
)


async def test_an_email_citizen_is_acknowledged_then_told_of_a_status_change_once(
    client, anonymous, app, sandbox, back_office
):
    created, case = await submit(client, app, missed_bin(EMAIL_CITIZEN))
    reference = created["reference"]
    assert await tell(app) == 1
    [acknowledgement] = back_office.mail
    assert acknowledgement["to"] == "jane@example.org"
    assert acknowledgement["subject"] == f"We have your enquiry {reference}"
    assert f"Your reference is {reference}." in acknowledgement["text"]
    assert "Cherwell District Council" in acknowledgement["text"]
    # The tracking link carries the citizen's own token: it opens the enquiry.
    track = link(acknowledgement["text"], f"/track/{reference}")
    token = query(track)["token"]
    assert token == created["access_token"]
    read = await anonymous.get(f"/v1/enquiries/{reference}", params={"token": token})
    assert read.status_code == 200

    await move(app, sandbox, case, "in_progress", "Crew sent")
    assert await tell(app) == 1
    assert [m["subject"] for m in back_office.mail] == [
        f"We have your enquiry {reference}",
        f"Your enquiry {reference}: work on it has started",
    ]
    # The same events read again (the cursor lost, or a second worker) tell nobody twice.
    async with app.state.iap.engine.begin() as conn:
        await conn.execute(feed_cursor_table.delete())
    assert await tell(app) == 0
    assert len(back_office.mail) == 2
    assert not back_office.notify
    told = await alerts(app)
    assert [(r.kind, r.channel, r.state) for r in told] == [
        (AlertKind.acknowledgement, AlertChannel.email, OutboxState.delivered),
        (AlertKind.status, AlertChannel.email, OutboxState.delivered),
    ]
    assert told[0].provider_reference == back_office.mail[0]["message_id"]


async def test_an_sms_citizen_is_texted_through_notify(client, app, sandbox, back_office):
    created, case = await submit(client, app, missed_bin(SMS_CITIZEN))
    reference = created["reference"]
    await tell(app)
    await move(app, sandbox, case, "closed")
    await tell(app)
    texts = back_office.notify
    assert [(t["type"], t["to"]) for t in texts] == [("sms", "07700 900123")] * 2
    assert f"Your reference is {reference}." in texts[0]["body"]
    assert f"Your enquiry {reference} about Missed bin collection: it is closed." in texts[1][
        "body"
    ].replace("\n", " ")
    told = await alerts(app)
    # Notify's client reference is the alert's id, and its notification id is kept.
    assert [t["reference"] for t in texts] == [str(r.id) for r in told]
    assert [r.provider_reference for r in told] == [t["id"] for t in texts]
    assert not back_office.mail


async def test_nothing_is_sent_without_consent_or_a_preferred_contact(
    client, app, sandbox, back_office
):
    no_consent = {"share_contact_details": True, "send_updates": False}
    _, case = await submit(client, app, missed_bin(EMAIL_CITIZEN, no_consent))
    await submit(client, app, missed_bin({**EMAIL_CITIZEN, "preferred_contact": "post"}))
    await submit(client, app, missed_bin(None))
    await move(app, sandbox, case, "in_progress")
    assert await tell(app) == 0
    assert await alerts(app) == []
    assert not back_office.mail
    assert not back_office.notify


async def test_a_status_not_worth_telling_is_not_told(client, app, sandbox, back_office):
    _, case = await submit(client, app, missed_bin(EMAIL_CITIZEN))
    await tell(app)
    await move(app, sandbox, case, "open")  # acknowledged: not in services.yaml's `tell`
    assert await tell(app) == 0
    assert len(back_office.mail) == 1


async def test_a_back_offices_question_is_put_to_the_citizen(client, app, sandbox, back_office):
    created, case = await submit(client, app, missed_bin(SMS_CITIZEN))
    await tell(app)
    await move(app, sandbox, case, "information_requested", "Which side of the road is it?")
    await tell(app)
    question = back_office.notify[-1]["body"]
    assert question.startswith(
        "Cherwell District Council has a question about your enquiry "
        f"{created['reference']} (Missed bin collection):\n\nWhich side of the road is it?"
    )
    assert [r.kind for r in await alerts(app)] == [AlertKind.acknowledgement, AlertKind.question]


async def test_a_welsh_speaker_is_written_to_in_welsh(client, app, sandbox, back_office):
    created, case = await submit(client, app, missed_bin({**EMAIL_CITIZEN, "language": "cy"}))
    await tell(app)
    await move(app, sandbox, case, "fixed")
    await tell(app)
    reference = created["reference"]
    welsh = back_office.mail
    assert [m["subject"] for m in welsh] == [
        f"Mae gennym eich ymholiad {reference}",
        f"Eich ymholiad {reference}: mae wedi'i ddatrys",
    ]
    assert f"Eich cyfeirnod yw {reference}." in welsh[0]["text"]
    assert "I roi'r gorau i'r negeseuon hyn:" in welsh[0]["text"]
    assert {r.language for r in await alerts(app)} == {"cy"}


async def test_another_language_reads_english(client, app, back_office):
    await submit(client, app, missed_bin({**EMAIL_CITIZEN, "language": "pl"}))
    await tell(app)
    assert back_office.mail[0]["subject"].startswith("We have your enquiry")


async def test_after_unsubscribing_nothing_more_is_sent(
    client, anonymous, app, sandbox, back_office
):
    created, case = await submit(client, app, missed_bin(EMAIL_CITIZEN))
    await tell(app)
    unsubscribe = link(back_office.mail[0]["text"], "/v1/alerts/unsubscribe")
    page = await anonymous.get(unsubscribe)
    assert page.status_code == 200
    assert '<form method="post"' in page.text
    assert created["reference"] in page.text
    # Opening the link stops nothing (mail scanners open links); the one-click POST does.
    await move(app, sandbox, case, "in_progress")
    await feed(app.state.iap.engine, app.state.iap.catalogue, app.state.iap.sealer)
    [_, waiting] = await alerts(app)
    assert waiting.state == OutboxState.pending
    stopped = await anonymous.post(
        unsubscribe,
        content="List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert stopped.status_code == 200, stopped.text
    assert "You will not be sent any more messages" in stopped.text
    again = await anonymous.post(unsubscribe)
    assert again.status_code == 200
    await move(app, sandbox, case, "fixed")
    assert await tell(app) == 0
    assert len(back_office.mail) == 1
    [_, cancelled] = await alerts(app)
    assert cancelled.state == OutboxState.cancelled
    audit = (await client.get("/v1/audit", params={"action": "alerts.stopped"})).json()
    [entry] = audit["items"]
    assert entry["detail"]["references"] == [created["reference"]]


async def test_an_unsubscribe_link_with_a_wrong_signature_is_refused(
    client, anonymous, app, back_office
):
    created, _ = await submit(client, app, missed_bin(EMAIL_CITIZEN))
    await tell(app)
    good = link(back_office.mail[0]["text"], "/v1/alerts/unsubscribe")
    signature = urlsplit(good).query.split("signature=")[1]
    forged = good.replace(signature, "A" * len(signature))
    for answer in (await anonymous.get(forged), await anonymous.post(forged)):
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("/invalid-link")
    other = await enquiry_id(app, created["reference"])
    assert (await anonymous.get(forged.replace(str(other), "not-an-id"))).status_code == 422
    [told] = await alerts(app)
    assert told.state == OutboxState.delivered  # nothing was stopped


async def test_notify_failing_for_now_is_retried_and_a_refusal_is_dead(
    client, app, sandbox, back_office
):
    back_office.behaviour["notify"] = Behaviour(fail_rate=1.0, fail_status=503)
    await submit(client, app, missed_bin(SMS_CITIZEN))
    await feed(app.state.iap.engine, app.state.iap.catalogue, app.state.iap.sealer)
    sender: AlertSender = app.state.runtime.alerts
    [claim] = await sender._claim(1)
    await sender._deliver(claim)
    [waiting] = await alerts(app)
    assert (waiting.state, waiting.attempts) == (OutboxState.pending, 1)
    assert waiting.last_error == "Notify HTTP 503 (Exception)"
    back_office.behaviour.clear()
    await sender.run_until_idle()
    [sent] = await alerts(app)
    assert sent.state == OutboxState.delivered
    assert len(back_office.notify) == 1

    await submit(client, app, missed_bin({**SMS_CITIZEN, "phone": "01865 000000"}))  # a landline
    back_office.behaviour["notify"] = Behaviour(fail_rate=1.0, fail_status=400)
    await tell(app)
    refused = (await alerts(app))[-1]
    assert (refused.state, refused.attempts) == (OutboxState.dead, 1)
    assert refused.last_error.startswith("Notify HTTP 400")


async def test_a_sender_that_crashed_after_notify_took_the_text_sends_it_no_more(
    client, app, back_office
):
    await submit(client, app, missed_bin(SMS_CITIZEN))
    await feed(app.state.iap.engine, app.state.iap.catalogue, app.state.iap.sealer)
    crashed: AlertSender = app.state.runtime.alerts
    [claim] = await crashed._claim(1)
    await crashed._attempt(claim)  # Notify has it; the worker dies before it records that
    assert len(back_office.notify) == 1
    async with app.state.iap.engine.begin() as conn:  # its lease runs out
        await conn.execute(update(alert_table).values(lease_until=alert_table.c.created_at))
    state = app.state.iap
    other = AlertSender(
        engine=state.engine,
        catalogue=state.catalogue,
        sealer=state.sealer,
        settings=state.settings,
        worker_id="another-worker",
    )
    await other.run_until_idle()
    [told] = await alerts(app)
    assert (told.state, told.claims) == (OutboxState.delivered, 2)
    assert len(back_office.notify) == 1  # asked Notify by reference first: not sent again
    assert told.provider_reference == back_office.notify[0]["id"]


async def test_a_sender_that_crashed_before_sending_loses_nothing(client, app, back_office):
    await submit(client, app, missed_bin(EMAIL_CITIZEN))
    await feed(app.state.iap.engine, app.state.iap.catalogue, app.state.iap.sealer)
    [claim] = await app.state.runtime.alerts._claim(1)  # claimed, then the worker died
    async with app.state.iap.engine.begin() as conn:
        await conn.execute(update(alert_table).values(lease_until=alert_table.c.created_at))
    await app.state.runtime.alerts.run_until_idle()
    assert claim.claims == 1
    assert len(back_office.mail) == 1
    [told] = await alerts(app)
    assert told.state == OutboxState.delivered


async def test_the_notify_simulator_refuses_a_token_not_signed_with_its_key(sandbox, back_office):
    wrong = SANDBOX_NOTIFY_API_KEY[:-36] + "11111111-1111-4111-8111-111111111111"

    def send() -> None:
        client = NotificationsAPIClient(wrong, base_url=sandbox.url)
        client.send_sms_notification(
            phone_number="07700 900123",
            template_id=AlertSettings().notify_sms_template_id,
            personalisation={"body": "hello"},
        )

    with pytest.raises(HTTPError) as refused:
        await asyncio.to_thread(send)
    assert refused.value.status_code == 403
    assert refused.value.response.json()["errors"][0]["error"] == "AuthError"
    assert not back_office.notify
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        assert (await http.get("/_sandbox/notify")).json() == {"notifications": []}


async def test_staff_see_the_messages_sent_and_the_citizen_does_not(
    client, anonymous, app, sandbox, back_office
):
    created, case = await submit(client, app, missed_bin(EMAIL_CITIZEN))
    await move(app, sandbox, case, "in_progress")
    await tell(app)
    reference = created["reference"]
    staff = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert [(a["kind"], a["channel"], a["status"], a["state"]) for a in staff["alerts"]] == [
        ("acknowledgement", "email", None, "delivered"),
        ("status", "email", "in_progress", "delivered"),
    ]
    assert all(a["delivered_at"] for a in staff["alerts"])
    assert "jane@example.org" not in str(staff["alerts"])
    own = await anonymous.get(
        f"/v1/enquiries/{reference}", params={"token": created["access_token"]}
    )
    assert own.json()["alerts"] is None


async def test_email_through_notify_carries_its_subject_and_one_click_link(
    client, app, sandbox, back_office
):
    state = app.state.iap
    through_notify = state.settings.model_copy(
        update={"alerts": state.settings.alerts.model_copy(update={"email_via": AlertVia.notify})}
    )
    created, _ = await submit(client, app, missed_bin(EMAIL_CITIZEN))
    await feed(state.engine, state.catalogue, state.sealer)
    sender = AlertSender(
        engine=state.engine,
        catalogue=state.catalogue,
        sealer=state.sealer,
        settings=through_notify,
    )
    await sender.run_until_idle()
    [email] = back_office.notify
    assert (email["type"], email["to"]) == ("email", "jane@example.org")
    assert email["subject"] == f"We have your enquiry {created['reference']}"
    assert email["one_click_unsubscribe_url"] in email["body"]
    assert "/v1/alerts/unsubscribe?enquiry=" in email["one_click_unsubscribe_url"]
    assert not back_office.mail


async def test_no_address_or_message_reaches_the_logs(client, app, sandbox, back_office, caplog):
    back_office.behaviour["notify"] = Behaviour(fail_rate=1.0, fail_status=400)
    with capture_logs() as logs:
        created, case = await submit(client, app, missed_bin(SMS_CITIZEN))
        await submit(client, app, missed_bin(EMAIL_CITIZEN))
        await tell(app)
        back_office.behaviour.clear()
        await move(app, sandbox, case, "information_requested", "Which side of the road?")
        await tell(app)
    written = str(logs) + caplog.text
    assert "alert.dead" in written  # the refused text was logged, by its id
    assert "alert.delivered" in written
    for personal in ("07700", "900123", "jane@example.org", "Which side", "Sam Citizen"):
        assert personal not in written
    assert created["access_token"] not in written
