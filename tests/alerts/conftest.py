"""The gateway with alerts retried at once, and helpers that run the alert feed and sender as
the worker would: the sandbox's SMTP sink and Notify simulator on loopback receive them."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.alerts.feed import feed
from app.core.models import alert_table, enquiry_table, event_table
from app.core.reference import parse
from app.core.settings import AlertSettings, Settings
from tests.adapters.conftest import start_server  # noqa: F401 (a real SMTP server's fixture)
from tests.conftest import ThreadedServer, enquiry_body, make_settings

EMAIL_CITIZEN = {"name": "Jane Citizen", "email": "jane@example.org", "preferred_contact": "email"}
SMS_CITIZEN = {"name": "Sam Citizen", "phone": "07700 900123", "preferred_contact": "phone"}
TOLD = {"share_contact_details": True, "send_updates": True}


@pytest.fixture
def settings(database_url: str, sandbox: ThreadedServer) -> Settings:
    return make_settings(
        database_url,
        sandbox.url,
        sandbox.smtp_port,  # type: ignore[attr-defined]
        alerts=AlertSettings(retry_schedule=[0.0, 0.0], jitter=0.0, poll_seconds=0.1),
    )


def missed_bin(citizen: dict[str, Any] | None, consent: dict[str, bool] | None = None) -> dict:
    """A missed bin in Banbury (Cherwell's Open311 back-office) from this citizen."""
    return enquiry_body(
        service_code="missed-bin",
        location={"postcode": "OX16 5QA"},
        attributes={"bin_type": "food"},
        citizen=citizen,
        consent=TOLD if consent is None else consent,
    )


async def submit(client: httpx.AsyncClient, app: FastAPI, body: dict) -> tuple[dict, str]:
    """Submit and deliver the enquiry; its answer and the back-office's case id."""
    response = await client.post("/v1/enquiries", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    await app.state.runtime.dispatcher.run_until_idle()
    read = (await client.get(f"/v1/enquiries/{created['reference']}")).json()
    [destination] = read["destinations"]
    return created, destination["remote_reference"]


async def tell(app: FastAPI) -> int:
    """Feed the alerts of new events and send everything due; how many alerts were made."""
    state = app.state.iap
    made = await feed(state.engine, state.catalogue, state.sealer)
    await app.state.runtime.alerts.run_until_idle()
    return made


async def move(
    app: FastAPI, sandbox: ThreadedServer, case_id: str, status: str, description: str = ""
) -> None:
    """Cherwell's back-office moves the case, and the gateway polls it."""
    async with httpx.AsyncClient(base_url=sandbox.url) as http:
        moved = await http.post(
            f"/_sandbox/cherwell/cases/{case_id}/status",
            json={"status": status, "description": description},
        )
    assert moved.status_code < 300, moved.text
    assert await app.state.runtime.poller.poll("cherwell") == 1


async def enquiry_id(app: FastAPI, reference: str) -> uuid.UUID:
    e = enquiry_table.c
    async with app.state.iap.engine.connect() as conn:
        found = await conn.scalar(select(e.id).where(e.reference == parse(reference)))
    assert found is not None
    return found


async def alerts(app: FastAPI) -> list[Any]:
    """Every alert row, in the order of the events they tell."""
    v = event_table.c
    query = select(alert_table).join(event_table, v.id == alert_table.c.event_id)
    async with app.state.iap.engine.connect() as conn:
        return list((await conn.execute(query.order_by(v.created_at, v.id))).all())


def link(text: str, path: str) -> str:
    """The first link in a message whose path is `path` (the part after the public URL)."""
    for word in text.split():
        if path in word:
            return word[word.index(path) :]
    raise AssertionError(f"no {path} link in the message")


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
