"""The access token is made from the enquiry id (so a message can carry the tracking link),
and which status changes are told is each service's choice."""

from __future__ import annotations

import uuid

from pydantic import SecretStr
from sqlalchemy import select

from app.alerts.feed import feed
from app.alerts.sender import tracking_token
from app.catalogue.status import Status
from app.core.crypto import DEVELOPMENT_KEY, DEVELOPMENT_LOOKUP_KEY, Sealer, new_key
from app.core.models import enquiry_table, event_table, utcnow
from app.core.vocabulary import AlertKind
from tests.alerts.conftest import (
    EMAIL_CITIZEN,
    alerts,
    enquiry_id,
    missed_bin,
    move,
    submit,
    tell,
)
from tests.conftest import enquiry_body


async def test_the_token_intake_answers_is_the_enquirys_own_and_reads_it(client, anonymous, app):
    created = (await client.post("/v1/enquiries", json=enquiry_body())).json()
    reference, token = created["reference"], created["access_token"]
    sealer: Sealer = app.state.iap.sealer
    assert token == sealer.access_token(await enquiry_id(app, reference))
    read = await anonymous.get(f"/v1/enquiries/{reference}", params={"token": token})
    assert read.status_code == 200
    assert read.json()["reference"] == reference
    # Another enquiry's token opens nothing here.
    other = sealer.access_token(uuid.uuid4())
    refused = await anonymous.get(f"/v1/enquiries/{reference}", params={"token": other})
    assert refused.status_code == 404


async def test_after_a_key_rotation_the_sender_finds_the_token_the_citizen_was_given(
    client, anonymous, app
):
    created = (await client.post("/v1/enquiries", json=enquiry_body())).json()
    found = await enquiry_id(app, created["reference"])
    async with app.state.iap.engine.connect() as conn:
        stored = await conn.scalar(
            select(enquiry_table.c.access_token_hash).where(enquiry_table.c.id == found)
        )
    rotated = Sealer(
        [SecretStr(new_key()), SecretStr(DEVELOPMENT_KEY)], SecretStr(DEVELOPMENT_LOOKUP_KEY)
    )
    assert rotated.access_token(found) != created["access_token"]
    assert tracking_token(rotated, found, stored) == created["access_token"]
    assert tracking_token(rotated, found, "0" * 64) is None  # a random token of old: no link
    assert rotated.unsubscribe_signed(found, app.state.iap.sealer.unsubscribe_signature(found))


def test_a_service_may_tell_other_statuses_than_the_default(app):
    catalogue = app.state.iap.catalogue
    assert Status.in_progress in catalogue.tells("missed-bin")
    assert Status.acknowledged not in catalogue.tells("missed-bin")
    only_resolved = _telling(catalogue, "missed-bin", (Status.resolved,))
    assert only_resolved.tells("missed-bin") == {Status.resolved}
    assert only_resolved.tells("pothole") == catalogue.tells("pothole")


async def test_a_status_the_service_does_not_tell_makes_no_alert(client, app, sandbox, back_office):
    state = app.state.iap
    only_resolved = _telling(state.catalogue, "missed-bin", (Status.resolved,))
    _, case = await submit(client, app, missed_bin(EMAIL_CITIZEN))
    await move(app, sandbox, case, "in_progress")
    await feed(state.engine, only_resolved, state.sealer)
    await move(app, sandbox, case, "fixed")
    await feed(state.engine, only_resolved, state.sealer)
    told = await alerts(app)
    assert [(r.kind, r.status) for r in told] == [
        (AlertKind.acknowledgement, None),
        (AlertKind.status, Status.resolved),
    ]


def _telling(catalogue, code, statuses):
    service = catalogue.services[code].model_copy(update={"tell": statuses})
    return catalogue.model_copy(update={"services": {**catalogue.services, code: service}})


async def test_a_status_told_is_not_told_again_until_it_changes(client, app, sandbox, back_office):
    created, case = await submit(client, app, missed_bin(EMAIL_CITIZEN))
    found = await enquiry_id(app, created["reference"])
    await move(app, sandbox, case, "fixed")
    await tell(app)
    # The timeline says resolved again (as a withdrawal can: recorded, then each part closed
    # as withdrawn), then reopened and resolved once more.
    for status in ("resolved", "reopened", "resolved"):
        async with app.state.iap.engine.begin() as conn:
            await conn.execute(
                event_table.insert(),
                {
                    "id": uuid.uuid4(),
                    "enquiry_id": found,
                    "type": f"enquiry.{status}",
                    "status": status,
                    "detail": f"the enquiry is now {status}",
                    "created_at": utcnow(),
                },
            )
        await tell(app)
    told = [(r.kind, r.status) for r in await alerts(app)]
    assert told == [
        (AlertKind.acknowledgement, None),
        (AlertKind.status, Status.resolved),
        (AlertKind.status, Status.reopened),
        (AlertKind.status, Status.resolved),
    ]
    assert len(back_office.mail) == 4
