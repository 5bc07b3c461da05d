"""`iap staff`: people with roles and personal tokens; a partner's staff see their own part only."""

from __future__ import annotations

import subprocess
import sys

from sqlalchemy import select

from app.clients.service import Scope
from app.clients.staff import StaffRole, check_password, scopes_for
from app.core.models import audit_table, staff_table
from tests.conftest import bearer, enquiry_body, make_person

IAP = [sys.executable, "-c", "from app.cli import main; main()"]


def iap(*args, settings, stdin=None):
    env = {
        "IAP_ENV": "test",
        "IAP_DATABASE_URL": settings.database_url,
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [*IAP, *args], capture_output=True, text=True, env=env, input=stdin, check=False
    )


async def test_staff_create_prints_a_token_that_works_with_the_roles_scopes(
    app, settings, anonymous
):
    made = iap(
        "staff",
        "create",
        "Priya Patel",
        "--email",
        "Priya.Patel@Council.example.org",
        "--role",
        "agent",
        settings=settings,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("iap_")
    assert "Priya Patel <priya.patel@council.example.org>" in made.stdout

    body = enquiry_body()
    created = await anonymous.post("/v1/enquiries", json=body, headers=bearer(token))
    assert created.status_code == 201
    read = await anonymous.get(
        f"/v1/enquiries/{created.json()['reference']}", headers=bearer(token)
    )
    assert read.status_code == 200
    # An agent holds no privacy scope.
    audit = await anonymous.get("/v1/audit", headers=bearer(token))
    assert audit.status_code == 403

    listed = iap("staff", "list", settings=settings)
    assert "priya.patel@council.example.org\t" in listed.stdout
    assert "\tagent\t-\tactive" in listed.stdout

    disabled = iap("staff", "disable", "priya.patel@council.example.org", settings=settings)
    assert disabled.returncode == 0, disabled.stderr
    refused = await anonymous.get("/v1/enquiries", headers=bearer(token))
    assert refused.status_code == 401


async def test_the_audit_log_names_the_person_who_read_a_citizens_details(app, anonymous, engine):
    token = await make_person(app, "agent", name="Sam Reader")
    body = enquiry_body(citizen={"name": "Jo Bloggs", "phone": "07700 900123"})
    created = await anonymous.post("/v1/enquiries", json=body, headers=bearer(token))
    reference = created.json()["reference"]
    assert (
        await anonymous.get(f"/v1/enquiries/{reference}", headers=bearer(token))
    ).status_code == 200
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(audit_table.c.actor, audit_table.c.actor_id, audit_table.c.action)
            )
        ).all()
    reads = [r for r in rows if r.action == "enquiry.read"]
    assert [r.actor for r in reads] == ["Sam Reader"]
    assert reads[0].actor_id.startswith("staff:")


def test_a_partners_staff_never_hold_the_triage_desk_or_submit():
    assert Scope.triage not in scopes_for(StaffRole.agent, "thames-valley-police")
    assert Scope.parts_update in scopes_for(StaffRole.agent, "thames-valley-police")
    assert Scope.triage in scopes_for(StaffRole.agent, None)


def test_a_partner_cannot_be_made_an_administrator(settings, app):
    made = iap(
        "staff",
        "create",
        "Pat",
        "--email",
        "pat@police.example.org",
        "--role",
        "administrator",
        "--organisation",
        "thames-valley-police",
        settings=settings,
    )
    assert made.returncode == 1
    assert "agent or supervisor" in made.stderr
    unknown = iap(
        "staff",
        "create",
        "Pat",
        "--email",
        "pat@x.example.org",
        "--role",
        "agent",
        "--organisation",
        "no-such-org",
        settings=settings,
    )
    assert unknown.returncode == 1
    assert "no-such-org" in unknown.stderr


async def test_a_password_is_kept_as_argon2_and_checked(settings, app, engine):
    made = iap(
        "staff",
        "create",
        "Lee",
        "--email",
        "lee@council.example.org",
        "--role",
        "supervisor",
        "--password-stdin",
        settings=settings,
        stdin="correct horse battery\n",
    )
    assert made.returncode == 0, made.stderr
    async with engine.connect() as conn:
        stored = await conn.scalar(select(staff_table.c.password_hash))
    assert stored.startswith("$argon2id$")
    assert await check_password(engine, "LEE@council.example.org", "correct horse battery")
    assert await check_password(engine, "lee@council.example.org", "wrong horse battery") is None
    assert (
        await check_password(engine, "nobody@council.example.org", "correct horse battery") is None
    )
    short = iap(
        "staff", "set-password", "lee@council.example.org", settings=settings, stdin="short\n"
    )
    assert short.returncode == 1
    assert "12 characters" in short.stderr
