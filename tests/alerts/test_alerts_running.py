"""Alerts as `iap serve` sends them, its loops running, and what an erasure leaves unsent."""

from __future__ import annotations

from app.alerts.feed import feed
from app.clients.service import Scope
from app.core.vocabulary import OutboxState
from app.main import create_app
from tests.alerts.conftest import EMAIL_CITIZEN, SMS_CITIZEN, alerts, missed_bin, submit
from tests.conftest import started
from tests.sandbox.conftest import eventually


async def test_the_running_gateway_acknowledges_by_itself(settings, back_office):
    application = create_app(settings, run_dispatcher=True)
    async with started(application, Scope.admin) as http:
        created = (await http.post("/v1/enquiries", json=missed_bin(SMS_CITIZEN))).json()
        [text] = await eventually(lambda: back_office.notify, within=10, what="a text")
    assert f"Your reference is {created['reference']}." in text["body"]


async def test_an_alert_waiting_when_the_citizen_is_erased_is_not_sent(client, app, back_office):
    await submit(client, app, missed_bin(EMAIL_CITIZEN))
    state = app.state.iap
    await feed(state.engine, state.catalogue, state.sealer)
    erased = await client.post("/v1/privacy/erasure", json={"email": "jane@example.org"})
    assert erased.status_code == 200, erased.text
    await app.state.runtime.alerts.run_until_idle()
    [alert] = await alerts(app)
    assert alert.state == OutboxState.cancelled
    assert not back_office.mail
