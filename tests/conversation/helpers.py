"""Shared steps of the conversation tests: submit and deliver an enquiry, resolve a part as its
back-office would, count what was stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select

from app.adapters.base import RemoteUpdate
from app.core.models import (
    attachment_table,
    dispatch_table,
    enquiry_table,
    follow_up_table,
    message_table,
    utcnow,
)
from app.core.reference import parse
from app.core.vocabulary import ReceivedVia
from app.updates.recording import record_update, vocabulary
from tests.conftest import enquiry_body

COUNTY = "oxfordshire-county"
CHERWELL = "cherwell"
POLICE = "thames-valley-police"
NHS = "nhs-bob-icb"
CITIZEN = {"name": "Sam Reporter", "email": "sam@example.org", "phone": "07700 900123"}


def asb() -> dict[str, Any]:
    """Anti-social behaviour in Banbury: Cherwell (Open311) and the police (email)."""
    return enquiry_body(
        service_code="anti-social-behaviour",
        description="Youths throwing stones at parked cars every evening",
        location={"postcode": "OX16 5QA"},
        attributes={"ongoing": "yes"},
    )


def health() -> dict[str, Any]:
    """A health enquiry: the NHS (FHIR)."""
    return enquiry_body(
        service_code="health-enquiry",
        description="How do I register with a GP surgery near me?",
        location={"postcode": "OX4 1AA"},
        attributes={},
    )


def with_citizen(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "citizen": CITIZEN, "consent": {"share_contact_details": True}}


async def submitted(client: Any, body: dict[str, Any] | None = None) -> tuple[str, str]:
    """(reference, the citizen's token) of a new enquiry."""
    created = await client.post("/v1/enquiries", json=with_citizen(body or enquiry_body()))
    assert created.status_code == 201, created.text
    answer = created.json()
    return str(answer["reference"]), str(answer["access_token"])


async def delivered(
    client: Any, app: FastAPI, body: dict[str, Any] | None = None
) -> tuple[str, str]:
    reference, token = await submitted(client, body)
    await app.state.runtime.dispatcher.run_until_idle()
    return reference, token


async def report(app: FastAPI, reference: str, organisation_id: str, status: str) -> None:
    """The organisation's back-office says where its part has got to (the one update path)."""
    state = app.state.iap
    async with state.engine.connect() as conn:
        remote = await conn.scalar(
            select(dispatch_table.c.remote_reference)
            .join(enquiry_table, enquiry_table.c.id == dispatch_table.c.enquiry_id)
            .where(
                enquiry_table.c.reference == parse(reference),
                dispatch_table.c.organisation_id == organisation_id,
            )
        )
    organisation = state.catalogue.organisations[organisation_id]
    await record_update(
        engine=state.engine,
        catalogue=state.catalogue,
        organisation=organisation,
        words=vocabulary(organisation, state.adapters.get(organisation_id)),
        remote=RemoteUpdate(
            remote_reference=str(remote),
            update_id=f"{status}-{utcnow().timestamp()}",
            status=status,
            description=None,
            updated_at=utcnow(),
        ),
        via=ReceivedVia.webhook,
    )


async def stored(app: FastAPI) -> dict[str, int]:
    """How many messages, attachments and follow-ups are kept."""
    tables = {
        "messages": message_table,
        "attachments": attachment_table,
        "follow_ups": follow_up_table,
    }
    async with app.state.iap.engine.connect() as conn:
        return {
            name: int(await conn.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in tables.items()
        }


async def follow_ups(app: FastAPI) -> list[dict[str, Any]]:
    async with app.state.iap.engine.connect() as conn:
        rows = await conn.execute(select(follow_up_table).order_by(follow_up_table.c.created_at))
        return [dict(row) for row in rows.mappings()]


async def ended_at(app: FastAPI, reference: str, when: datetime) -> None:
    """Move when the enquiry ended (to test the citizen's reopening window)."""
    async with app.state.iap.engine.begin() as conn:
        await conn.execute(
            enquiry_table.update()
            .where(enquiry_table.c.reference == parse(reference))
            .values(closed_at=when)
        )
