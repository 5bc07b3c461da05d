"""The database engine, transactions that behave alike on SQLite and PostgreSQL, and migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.crypto import Sealer

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DISPATCH_CHANNEL = "iap_dispatch"
_READ_ONLY = "iap_read_only"
# Any constant will do: it only has to be the same for every process running migrations.
_MIGRATION_LOCK_ID = 0x1A9_2026
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000", "foreign_keys=ON")


def is_postgres(engine: AsyncEngine | AsyncConnection) -> bool:
    """Whether this engine or connection talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"


def create_engine(database_url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and write-first transactions.

    Its errors never quote a statement's parameters: they carry citizens' details, and an
    unexpected error is logged."""
    if database_url.startswith("sqlite"):
        engine = create_async_engine(
            database_url, pool_size=8, max_overflow=0, hide_parameters=True
        )
        _tune_sqlite(engine)
        return engine
    return create_async_engine(
        database_url, pool_size=20, max_overflow=10, pool_pre_ping=True, hide_parameters=True
    )


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event own BEGIN so writers can take the lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads then writes can fail at once with SQLITE_BUSY
        # when another writer got in between; IMMEDIATE waits for the lock instead.
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


_WRITE_LOCKS: WeakKeyDictionary[Engine, asyncio.Lock] = WeakKeyDictionary()


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction: committed on exit, rolled back on error.

    On SQLite only one writer can hold the database; writers in this process queue here, in
    asyncio, rather than in SQLite's busy handler, which sleeps for milliseconds at a time.
    """
    if is_postgres(engine):
        async with engine.begin() as conn:
            yield conn
        return
    lock = _WRITE_LOCKS.setdefault(engine.sync_engine, asyncio.Lock())
    async with lock, engine.begin() as conn:
        yield conn


@asynccontextmanager
async def reading(
    engine: AsyncEngine, *, one_snapshot: bool = False
) -> AsyncIterator[AsyncConnection]:
    """A connection for reads only: on SQLite it does not take the write lock.

    With one_snapshot, every query sees the database as of the first one (PostgreSQL's
    REPEATABLE READ; a SQLite read transaction already does), so rows read one after another
    agree with each other.
    """
    async with engine.connect() as conn:
        options: dict[str, Any] = {_READ_ONLY: True}
        if one_snapshot and is_postgres(engine):
            options["isolation_level"] = "REPEATABLE READ"
        await conn.execution_options(**options)
        yield conn


def alembic_config(database_url: str) -> Config:
    """The Alembic configuration for this package's migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def migrate(engine: AsyncEngine, *, sealer: Sealer | None = None) -> None:
    """Bring the schema to the newest revision; safe to run from several processes at once.

    The sealer is for migrations that seal personal data stored by earlier versions."""
    async with writing(engine) as conn:
        if is_postgres(conn):
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})"))
        url = str(engine.url.render_as_string(hide_password=False))
        await conn.run_sync(_upgrade, url, sealer)


def _upgrade(sync_conn: Connection, database_url: str, sealer: Sealer | None) -> None:
    config = alembic_config(database_url)
    config.attributes["connection"] = sync_conn
    config.attributes["sealer"] = sealer
    command.upgrade(config, "head")
