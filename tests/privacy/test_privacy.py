"""Personal data held lawfully: sealed at rest, exported and erased on request, anonymised after
retention, and every read, export and erasure in an audit log nobody can change."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from app.clients.service import Scope
from app.core.audit import Actor
from app.core.crypto import Sealer, new_key
from app.core.db import create_engine
from app.core.models import enquiry_table, utcnow
from app.core.settings import PrivacySettings
from app.main import create_app
from app.privacy import service as privacy
from app.privacy.service import REMOVED, Retention
from tests.cli.test_cli import iap as iap_command
from tests.conftest import another_worker, bearer, enquiry_body, make_key, make_settings, started
from tests.sandbox.conftest import eventually
from tests.updates.test_inbound import push
from tests.updates.test_inbound import update as county_update

ADA = {
    "name": "Ada Lovelace",
    "email": "Ada.Lovelace@example.org",
    "phone": "+44 7700 900123",
    "accessibility_needs": "Large print letters, please",
}
BOB = {"name": "Bob Brown", "email": "bob@example.org"}
SHARED = {"share_contact_details": True}


async def submit(client: Any, citizen: dict[str, Any], **change: Any) -> str:
    body = enquiry_body(citizen=citizen, consent=SHARED, **change)
    created = await client.post("/v1/enquiries", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["reference"])


def asb(**change: Any) -> dict[str, Any]:
    """Anti-social behaviour in Oxford: the city council and the police both receive it."""
    return {
        "service_code": "anti-social-behaviour",
        "description": "Loud parties next door at number 12 every night",
        "attributes": {},
        **change,
    }


async def raw_rows(engine: Any) -> str:
    """Every row of every table the gateway writes, as text."""
    tables = ("enquiry", "dispatch", "event", "idempotency_record", "status_update", "audit_log")
    dumped = []
    async with engine.connect() as conn:
        for table in tables:
            dumped += [repr(tuple(r)) for r in await conn.execute(text(f"SELECT * FROM {table}"))]
    return "\n".join(dumped)


async def audit_entries(client: Any, **params: str) -> list[dict[str, Any]]:
    answer = await client.get("/v1/audit", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


async def test_the_citizens_details_are_stored_sealed_and_shown_to_an_agent(client, engine):
    reference = await submit(client, ADA)
    stored = await raw_rows(engine)
    for value in (*ADA.values(), "ada.lovelace", "7700 900123", "Lovelace"):
        assert value not in stored
    shown = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert shown["citizen"] == ADA


async def test_a_subject_access_export_finds_every_enquiry_by_email_or_phone(
    client, app, back_office
):
    first = await submit(client, ADA)
    second = await submit(client, {**ADA, "phone": "07700 900123"}, **asb())
    await submit(client, BOB)
    await app.state.runtime.dispatcher.run_until_idle()

    by_email = await client.post(
        "/v1/privacy/subject-access", json={"email": "ada.lovelace@EXAMPLE.org"}
    )
    assert by_email.status_code == 200, by_email.text
    export = by_email.json()
    assert export["matched_by"] == ["email"]
    assert [e["reference"] for e in export["enquiries"]] == [first, second]
    pothole, noise = export["enquiries"]
    assert pothole["citizen"] == ADA
    assert pothole["consent"] == {**SHARED, "send_updates": False}
    assert pothole["description"] == "A deep pothole by the bus stop"
    [county] = pothole["shared_with"]
    assert county["organisation_id"] == "oxfordshire-county"
    assert county["remote_reference"]
    assert county["citizen_fields"] == sorted(["name", "email", "phone", "accessibility_needs"])
    assert {s["organisation_id"] for s in noise["shared_with"]} == {
        "oxford-city",
        "thames-valley-police",
    }
    assert any(e["type"] == "dispatch.delivered" for e in pothole["timeline"])

    by_phone = await client.post("/v1/privacy/subject-access", json={"phone": "0044 7700 900123"})
    assert [e["reference"] for e in by_phone.json()["enquiries"]] == [first, second]
    nobody = await client.post("/v1/privacy/subject-access", json={"email": "no@example.org"})
    assert nobody.json()["enquiries"] == []

    exports = await audit_entries(client, action="privacy.export")
    assert len(exports) == 3
    assert exports[-1]["detail"] == {"references": [first, second]}
    assert exports[-1]["subject"].startswith("email:")
    assert "example.org" not in repr(exports)  # the audit log names a hash, not the address


async def test_a_subject_needs_an_email_or_a_phone(client):
    answer = await client.post("/v1/privacy/subject-access", json={})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    bad = await client.post("/v1/privacy/erasure", json={"email": "not an email"})
    assert bad.status_code == 422


async def test_erasure_anonymises_calls_off_what_is_unsent_and_tells_who_received_it(
    client, app, back_office, engine
):
    delivered = await submit(client, ADA, **asb())
    await app.state.runtime.dispatcher.run_until_idle()
    unsent = await submit(client, ADA)  # still waiting for the dispatcher
    others = await submit(client, BOB)

    erased = await client.post("/v1/privacy/erasure", json={"phone": "07700900123"})
    assert erased.status_code == 200, erased.text
    result = erased.json()
    assert result["references"] == [delivered, unsent]
    told = {(n["organisation_id"], n["reference"]) for n in result["organisations_told"]}
    assert told == {("oxford-city", delivered), ("thames-valley-police", delivered)}

    after = (await client.get(f"/v1/enquiries/{delivered}")).json()
    assert after["citizen"] is None
    assert after["description"] == REMOVED
    assert after["anonymised_at"] is not None
    assert after["service_code"] == "anti-social-behaviour"  # statistics remain
    assert after["place"]["district_code"] == "E07000178"
    assert "postcode" not in after["place"]
    notices = [e for e in after["timeline"] if e["type"] == "privacy.erasure_requested"]
    assert {e["organisation_id"] for e in notices} == {"oxford-city", "thames-valley-police"}
    called_off = (await client.get(f"/v1/enquiries/{unsent}")).json()
    assert [d["state"] for d in called_off["destinations"]] == ["cancelled"]
    assert called_off["status"] == "cancelled"
    await app.state.runtime.dispatcher.run_until_idle()
    sent = [c for c in back_office.cases.values() if c.get("reference") == unsent]
    assert sent == []  # the call-off held: nothing went out

    again = await client.post("/v1/privacy/subject-access", json={"email": ADA["email"]})
    assert again.json()["enquiries"] == []
    assert (await client.get(f"/v1/enquiries/{others}")).json()["citizen"] == BOB
    stored = await raw_rows(engine)
    assert "number 12" not in stored  # the description went from the database too
    [entry] = await audit_entries(client, action="privacy.erase")
    assert entry["detail"]["references"] == [delivered, unsent]
    assert entry["detail"]["organisations_told"] == ["oxford-city", "thames-valley-police"]


async def test_every_read_of_personal_data_is_audited_and_the_citizens_own_is_not(
    client, anonymous, engine
):
    created = await client.post("/v1/enquiries", json=enquiry_body(citizen=ADA, consent=SHARED))
    reference, token = created.json()["reference"], created.json()["access_token"]
    agent = await make_key(engine, Scope.enquiries_read_all, name="agent-desk-7")
    await anonymous.get(f"/v1/enquiries/{reference}", headers=bearer(agent))
    await anonymous.get(f"/v1/enquiries/{reference}", params={"token": token})
    reads = await audit_entries(client, action="enquiry.read")
    assert [(r["actor"], r["subject"]) for r in reads] == [("agent-desk-7", reference)]

    plain = await client.post("/v1/enquiries", json=enquiry_body())
    await client.get(f"/v1/enquiries/{plain.json()['reference']}")
    assert len(await audit_entries(client, action="enquiry.read")) == 1  # nothing personal


async def test_the_audit_log_pages_newest_first(client):
    references = [await submit(client, ADA) for _ in range(3)]
    for reference in references:
        await client.get(f"/v1/enquiries/{reference}")
    first = (await client.get("/v1/audit", params={"limit": 2})).json()
    assert [e["subject"] for e in first["items"]] == references[:0:-1]
    rest = (await client.get("/v1/audit", params={"cursor": first["next_cursor"]})).json()
    assert [e["subject"] for e in rest["items"]] == [references[0]]
    assert rest["next_cursor"] is None
    bad = await client.get("/v1/audit", params={"cursor": "nonsense"})
    assert bad.status_code == 422


async def test_the_database_refuses_to_change_or_remove_an_audit_entry(client, engine):
    await client.get(f"/v1/enquiries/{await submit(client, ADA)}")
    for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    assert len(await audit_entries(client)) == 1


async def test_retention_anonymises_an_enquiry_its_services_days_after_it_closed(
    client, app, back_office, engine
):
    closing = await submit(client, ADA)
    kept = await submit(client, BOB)
    await app.state.runtime.dispatcher.run_until_idle()
    remote = (await client.get(f"/v1/enquiries/{closing}")).json()["destinations"][0]
    closed = await push(client, county_update(remote["remote_reference"], "completed"))
    assert closed.status_code < 300, closed.text
    closed_at = (await client.get(f"/v1/enquiries/{closing}")).json()["closed_at"]
    assert closed_at is not None
    catalogue = app.state.iap.catalogue
    days = catalogue.services["pothole"].retention_days
    async with engine.begin() as conn:
        when = await conn.scalar(
            select(enquiry_table.c.closed_at).where(enquiry_table.c.closed_at.is_not(None))
        )
        # Bob's enquiry, still open, saw something happen the day before the run.
        await conn.execute(
            update(enquiry_table)
            .where(enquiry_table.c.closed_at.is_(None))
            .values(updated_at=when + timedelta(days=days - 1))
        )
    actor = Actor("test")

    early = await privacy.run_retention(
        engine=engine,
        catalogue=catalogue,
        store=app.state.iap.attachments,
        actor=actor,
        now=when + timedelta(days=days - 1),
    )
    assert early == 0
    assert (await client.get(f"/v1/enquiries/{closing}")).json()["citizen"] == ADA
    due = await privacy.run_retention(
        engine=engine,
        catalogue=catalogue,
        store=app.state.iap.attachments,
        actor=actor,
        now=when + timedelta(days=days, seconds=1),
    )
    assert due == 1
    gone = (await client.get(f"/v1/enquiries/{closing}")).json()
    assert (gone["citizen"], gone["description"]) == (None, REMOVED)
    assert gone["status"] == "resolved"
    assert gone["timeline"][-1]["type"] == "enquiry.anonymised"
    assert (await client.get(f"/v1/enquiries/{kept}")).json()["citizen"] == BOB  # still open
    [entry] = await audit_entries(client, action="retention.anonymised")
    assert entry["detail"] == {"references": [closing]}


async def test_an_enquiry_that_never_closes_is_anonymised_once_nothing_happened_for_as_long(
    client, app, back_office, engine
):
    reference = await submit(client, ADA, **asb())  # the police never report back
    await app.state.runtime.dispatcher.run_until_idle()
    days = app.state.iap.catalogue.services["anti-social-behaviour"].retention_days
    async with engine.begin() as conn:
        await conn.execute(
            update(enquiry_table).values(updated_at=utcnow() - timedelta(days=days + 1))
        )
    done = await privacy.run_retention(
        engine=engine,
        catalogue=app.state.iap.catalogue,
        store=app.state.iap.attachments,
        actor=Actor("test"),
    )
    assert done == 1
    assert (await client.get(f"/v1/enquiries/{reference}")).json()["citizen"] is None


async def submitted_under(settings: Any, citizen: dict[str, Any]) -> tuple[str, Any]:
    """Submit through an app with these settings; the reference and the app's sealer."""
    application = create_app(settings, run_dispatcher=False)
    async with started(application, Scope.admin) as http:
        return await submit(http, citizen), application.state.iap.sealer


async def stored_citizen(database_url: str) -> tuple[str, str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(enquiry_table.c.citizen_sealed, enquiry_table.c.citizen_email_hash)
                )
            ).one()
    finally:
        await engine.dispose()
    return row[0], row[1]


def privacy_env(keys: list[str], lookup: str) -> dict[str, str]:
    return {"IAP_PRIVACY__KEYS": json.dumps(keys), "IAP_PRIVACY__LOOKUP_KEY": lookup}


async def test_rotating_keys_reseals_every_citizen_so_the_old_key_can_go(database_url, sandbox):
    old, new = new_key(), new_key()
    settings = make_settings(
        database_url,
        sandbox.url,
        privacy=PrivacySettings(keys=[SecretStr(old)], lookup_key=SecretStr("lookup-one")),
    )
    await submitted_under(settings, ADA)
    sealed_before, _ = await stored_citizen(database_url)

    missing_old = iap_command(
        "privacy", "rotate-keys", database_url=database_url,
        env=privacy_env([new], "lookup-two"), check=False,
    )  # fmt: skip
    assert missing_old.returncode == 1
    assert "keep every old key" in missing_old.stderr

    rotated = iap_command(
        "privacy", "rotate-keys", database_url=database_url,
        env=privacy_env([new, old], "lookup-two"),
    )  # fmt: skip
    assert "re-sealed the citizen's details of 1 enquiries" in rotated.stdout
    sealed_after, email_hash = await stored_citizen(database_url)
    only_new = Sealer([SecretStr(new)], SecretStr("lookup-two"))
    assert sealed_after != sealed_before
    assert only_new.open(sealed_after) == ADA
    assert email_hash == only_new.email_hash(ADA["email"])  # found under the new lookup key


def test_new_key_prints_a_key_that_seals():
    printed = iap_command("privacy", "new-key", database_url="sqlite+aiosqlite:///unused.db")
    key = printed.stdout.strip()
    assert Sealer([SecretStr(key)], SecretStr("l")).seal(ADA)


async def test_retention_run_from_the_command_line(client, app, engine, database_url):
    reference = await submit(client, ADA)
    async with engine.begin() as conn:
        await conn.execute(
            update(enquiry_table).values(status="closed", closed_at=utcnow() - timedelta(days=2000))
        )
    ran = iap_command("retention", "run", database_url=database_url)
    assert "anonymised 1 enquiries" in ran.stdout
    assert (await client.get(f"/v1/enquiries/{reference}")).json()["citizen"] is None
    [entry] = await audit_entries(client, action="retention.anonymised")
    assert entry["actor"] == "iap retention run"


async def test_the_worker_applies_retention_on_its_schedule(client, app, engine):
    reference = await submit(client, ADA)
    async with engine.begin() as conn:
        await conn.execute(
            update(enquiry_table).values(status="closed", closed_at=utcnow() - timedelta(days=2000))
        )
    schedule = Retention(
        engine=engine,
        catalogue=app.state.iap.catalogue,
        store=app.state.iap.attachments,
        interval_seconds=0.05,
    )
    running = asyncio.create_task(schedule.run())
    try:

        async def anonymised() -> bool:
            shown = (await client.get(f"/v1/enquiries/{reference}")).json()
            return shown["anonymised_at"] is not None

        await eventually(anonymised, within=5, what="the scheduled retention run")
    finally:
        schedule.stop()
        await asyncio.wait_for(running, 5)


async def test_odd_audit_filters_are_422_not_500(client):
    for params in ({"action": "privacy.erase\x00"}, {"subject": "\x00"}, {"limit": "0"}):
        answer = await client.get("/v1/audit", params=params)
        assert answer.status_code == 422, params
        assert answer.headers["content-type"] == "application/problem+json"


async def test_a_delivery_under_way_when_its_enquiry_is_erased_is_called_off_not_sent(
    client, app, back_office
):
    reference = await submit(client, ADA)
    worker = another_worker(app, "busy")
    [claim] = await worker._claim(10)  # leased: the erasure cannot call it off itself
    erased = await client.post("/v1/privacy/erasure", json={"email": ADA["email"]})
    assert erased.json()["references"] == [reference]

    await worker._deliver(claim)  # its attempt comes round after the erasure

    assert back_office.cases.get("oxfordshire-county", {}) == {}  # nothing went out
    after = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert [d["state"] for d in after["destinations"]] == ["cancelled"]
    assert after["status"] == "cancelled"
    assert "dispatch.cancelled" in [e["type"] for e in after["timeline"]]
