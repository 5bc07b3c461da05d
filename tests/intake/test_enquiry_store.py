"""The intake's one-trip writer: what it stores reads back through the models, a taken
reference is redrawn, and on SQLite one failing enquiry in a group commit fails alone."""

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from app.core import reference
from app.core.db import is_postgres
from app.core.models import enquiry_table
from app.intake import store as enquiry_store
from tests.conftest import enquiry_body


async def test_a_taken_reference_is_drawn_again(client, engine, monkeypatch):
    first = await client.post("/v1/enquiries", json=enquiry_body())
    taken = first.json()["reference"].replace("-", "")
    fresh = reference.new_reference()
    draws = iter([taken, fresh])
    monkeypatch.setattr(reference, "new_reference", lambda: next(draws))
    second = await client.post("/v1/enquiries", json=enquiry_body())
    assert second.status_code == 201
    assert second.json()["reference"] == reference.display(fresh)
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(enquiry_table)) == 2


async def test_one_failure_in_a_group_does_not_sink_the_others(client, engine, monkeypatch):
    """Many enquiries at once, one of them reusing a reference: only that one is redrawn."""
    first = await client.post("/v1/enquiries", json=enquiry_body())
    taken = first.json()["reference"].replace("-", "")
    calls = {"n": 0}
    real = reference.new_reference

    def sometimes_taken():
        calls["n"] += 1
        return taken if calls["n"] == 5 else real()

    monkeypatch.setattr(reference, "new_reference", sometimes_taken)
    answers = await asyncio.gather(
        *(client.post("/v1/enquiries", json=enquiry_body()) for _ in range(20))
    )
    assert [a.status_code for a in answers] == [201] * 20
    assert len({a.json()["reference"] for a in answers}) == 20
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(enquiry_table)) == 21


async def test_other_integrity_errors_are_not_mistaken_for_a_taken_reference(engine):
    new = enquiry_store.NewEnquiry(
        enquiry=dict.fromkeys(enquiry_store.ENQUIRY_COLUMNS),
        dispatches=[],
        event=dict.fromkeys(enquiry_store.EVENT_COLUMNS),
    )
    with pytest.raises(Exception, match=r"(?i)not.?null") as caught:
        await enquiry_store.store_new_enquiry(engine, new)
    assert not isinstance(caught.value, enquiry_store.ReferenceTaken)


async def test_migrations_and_models_agree(engine):
    def differences(sync_conn):
        context = MigrationContext.configure(sync_conn, opts={"compare_type": False})
        return compare_metadata(context, SQLModel.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(differences) == []


@asynccontextmanager
async def another_writer(engine: AsyncEngine) -> AsyncIterator[None]:
    """Another process's write under way: SQLite's one write lock, or on PostgreSQL a lock that
    holds back every insert into the enquiry table."""
    if is_postgres(engine):
        async with engine.connect() as conn:
            await conn.execute(text("LOCK TABLE enquiry IN EXCLUSIVE MODE"))
            yield
            await conn.commit()
        return
    other = sqlite3.connect(engine.url.database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("COMMIT")
    finally:
        other.close()


async def answers_meanwhile(client: Any, waiting: asyncio.Task[Any]) -> None:
    """While `waiting` is held up by the lock, the gateway is not: a look-up is answered at
    once, not after SQLite's busy handler has given up (seconds, with the loop stopped)."""
    started = time.monotonic()
    await asyncio.sleep(0.3)
    assert not waiting.done()
    assert (await client.get("/v1/services/pothole")).status_code == 200
    assert not waiting.done()
    assert time.monotonic() - started < 2.0


async def test_an_enquiry_waits_out_another_writer_while_the_server_answers_others(client, engine):
    await client.post("/v1/enquiries", json=enquiry_body())  # the store is open
    async with another_writer(engine):
        waiting = asyncio.create_task(client.post("/v1/enquiries", json=enquiry_body()))
        await answers_meanwhile(client, waiting)
    answer = await asyncio.wait_for(waiting, timeout=10)
    assert answer.status_code == 201
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(enquiry_table)) == 2


async def test_any_write_waits_out_another_writer_while_the_server_answers_others(client, engine):
    """The same for writes through the engine (here a withdrawal): on SQLite the statement
    refused for the lock is tried again later, the server's loop never stopped behind it."""
    created = (await client.post("/v1/enquiries", json=enquiry_body())).json()
    async with another_writer(engine):
        waiting = asyncio.create_task(
            client.post(
                f"/v1/enquiries/{created['reference']}/withdraw", json={"reason": "Fixed already"}
            )
        )
        await answers_meanwhile(client, waiting)
    answer = await asyncio.wait_for(waiting, timeout=10)
    assert answer.status_code == 201, answer.text
