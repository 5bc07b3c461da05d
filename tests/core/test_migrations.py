"""Migrations that move personal data: citizen details stored in the clear by earlier versions
are sealed on upgrade, with the hashes they are found by, and never left behind."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.crypto import Sealer, new_key
from app.core.db import alembic_config, create_engine, migrate
from tests.conftest import ON_POSTGRES, POSTGRES_URL, _postgres_admin

CITIZEN = {"name": "Edith Hartley", "email": "Edith@Example.org", "phone": "01865 111222"}


@pytest.fixture
async def empty_database(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A database of its own with no schema at all."""
    if not ON_POSTGRES:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
        yield engine
        await engine.dispose()
        return
    name = f"iap_test_{uuid.uuid4().hex[:8]}"
    await _postgres_admin(f'CREATE DATABASE "{name}"')
    engine = create_engine(POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield engine
    finally:
        await engine.dispose()
        await _postgres_admin(f'DROP DATABASE "{name}" WITH (FORCE)')


async def at_revision(engine: AsyncEngine, revision: str) -> None:
    def upgrade(sync_conn) -> None:
        config = alembic_config(str(engine.url.render_as_string(hide_password=False)))
        config.attributes["connection"] = sync_conn
        command.upgrade(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(upgrade)


async def an_enquiry_stored_in_the_clear(engine: AsyncEngine) -> None:
    """A row as version 0004 wrote it: the citizen as plain JSON."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO enquiry (id, reference, service_code, status, channel, description,"
                " citizen, created_at, updated_at) VALUES (:id, 'K7QM4XPB6', 'pothole', 'resolved',"
                " 'phone', 'A pothole', :citizen, :at, :at)"
            ),
            {
                "id": uuid.uuid4().hex if not ON_POSTGRES else uuid.uuid4(),
                "citizen": json.dumps(CITIZEN),
                "at": "2026-01-05 10:00:00"
                if not ON_POSTGRES
                else datetime(2026, 1, 5, tzinfo=UTC),
            },
        )


async def test_upgrading_seals_citizens_stored_in_the_clear(empty_database):
    await at_revision(empty_database, "0004")
    await an_enquiry_stored_in_the_clear(empty_database)
    sealer = Sealer([SecretStr(new_key())], SecretStr("lookup"))
    await migrate(empty_database, sealer=sealer)

    async with empty_database.connect() as conn:
        columns = await conn.run_sync(
            lambda c: {col["name"] for col in inspect(c).get_columns("enquiry")}
        )
        row = (await conn.execute(text("SELECT * FROM enquiry"))).mappings().one()
    assert "citizen" not in columns  # nothing left in the clear
    assert "Edith" not in repr(dict(row))
    assert sealer.open(row["citizen_sealed"]) == CITIZEN
    assert row["citizen_email_hash"] == sealer.email_hash("edith@example.org")
    assert row["citizen_phone_hash"] == sealer.phone_hash("+44 1865 111222")
    assert row["closed_at"] is not None  # resolved before: retention counts from then


async def test_upgrading_without_the_keys_refuses_rather_than_lose_or_expose_anything(
    empty_database,
):
    await at_revision(empty_database, "0004")
    await an_enquiry_stored_in_the_clear(empty_database)
    with pytest.raises(RuntimeError, match="iap migrate"):
        await migrate(empty_database)
    async with empty_database.connect() as conn:
        kept = await conn.scalar(text("SELECT citizen FROM enquiry"))
    assert (json.loads(kept) if isinstance(kept, str) else kept) == CITIZEN  # rolled back whole
