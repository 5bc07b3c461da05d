"""Email alerts through a configured SMTP server (a real aiosmtpd on loopback): the message's
one-click unsubscribe headers (RFC 8058) and Message-ID, and how the server's refusals count."""

from __future__ import annotations

from app.alerts.feed import feed
from app.alerts.sender import AlertSender
from app.core.vocabulary import OutboxState
from tests.adapters.mailserver import Mailbox
from tests.alerts.conftest import EMAIL_CITIZEN, alerts, enquiry_id, missed_bin, query, submit


def sender_to(app, port: int) -> AlertSender:
    """An alert sender whose email goes through the SMTP server on this loopback port."""
    state = app.state.iap
    alerts_settings = state.settings.alerts.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "from_address": "alerts@iap.example"}
    )
    return AlertSender(
        engine=state.engine,
        catalogue=state.catalogue,
        sealer=state.sealer,
        settings=state.settings.model_copy(update={"alerts": alerts_settings}),
    )


async def fed(app) -> None:
    state = app.state.iap
    await feed(state.engine, state.catalogue, state.sealer)


async def test_the_email_carries_one_click_unsubscribe_headers(client, app, start_server):
    server = start_server()
    created, _ = await submit(client, app, missed_bin(EMAIL_CITIZEN))
    await fed(app)
    await sender_to(app, server.port).run_until_idle()
    [received] = server.mailbox.received
    message = received.message
    [told] = await alerts(app)
    assert received.rcpt_tos == ["jane@example.org"]
    assert message["From"] == "alerts@iap.example"
    assert message["Message-ID"] == f"<alert-{told.id}@iap.invalid>"
    assert message["Content-Language"] == "en"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = message["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith("http://127.0.0.1:8000/v1/alerts/unsubscribe?")
    assert query(unsubscribe)["enquiry"] == str(await enquiry_id(app, created["reference"]))
    assert unsubscribe in message.get_content()


async def test_a_temporary_refusal_is_retried_and_a_permanent_one_is_dead(
    client, app, start_server
):
    server = start_server(Mailbox(replies={"RCPT": "451 4.3.0 Try again later"}))
    await submit(client, app, missed_bin(EMAIL_CITIZEN))
    await fed(app)
    sender = sender_to(app, server.port)
    [claim] = await sender._claim(1)
    await sender._deliver(claim)
    [waiting] = await alerts(app)
    assert (waiting.state, waiting.last_error) == (OutboxState.pending, "SMTP 451")
    server.mailbox.replies["RCPT"] = "550 5.1.1 <jane@example.org>: no such mailbox"
    await sender.run_until_idle()
    [dead] = await alerts(app)
    assert (dead.state, dead.attempts) == (OutboxState.dead, 2)
    assert dead.last_error == "SMTP 550"  # the reply quoted the address: it is not kept
    assert not server.mailbox.received
