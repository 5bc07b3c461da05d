"""The database engine, transactions that behave alike on SQLite and PostgreSQL, and migrations."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import aiosqlite
from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.core.crypto import Sealer

if TYPE_CHECKING:
    from app.core.settings import DatabaseSettings

MIGRATIONS_DIR = Path(__file__).parent.parent / "migrations"
DISPATCH_CHANNEL = "iap_dispatch"
FOLLOW_UP_CHANNEL = "iap_follow_up"
_READ_ONLY = "iap_read_only"
# Any constant will do: it only has to be the same for every process running migrations.
_MIGRATION_LOCK_ID = 0x1A9_2026
# busy_timeout 0: no connection of ours waits in SQLite's busy handler, which would stop the
# event loop; a statement refused for another process's write lock is tried again by an
# asyncio sleep (LoopConnection, and the intake's store), for up to BUSY_TIMEOUT_SECONDS.
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=0", "foreign_keys=ON")
BUSY_TIMEOUT_SECONDS = 10.0
BUSY_RETRY_SECONDS = (0.0005, 0.008)  # the first delay, doubling to the longest


# The async driver IAP uses for each database, by what SQLAlchemy users write before "://".
_ASYNC_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
# PostgreSQL's SQLSTATEs for the connection failures an operator can fix in the URL.
_MISSING_DATABASE, _REFUSED_LOGIN, _WRONG_PASSWORD = "3D000", "28000", "28P01"


class DatabaseUnavailable(Exception):
    """The database cannot be opened; the message says why and what to do."""


def async_database_url(url: str) -> str:
    """The URL with the async driver IAP runs on: `sqlite:///x.db` → `sqlite+aiosqlite:///x.db`,
    `postgres://…` or `postgresql://…` → `postgresql+asyncpg://…`.

    Another driver named explicitly (psycopg, pg8000, pysqlite) is refused rather than swapped,
    since its query options need not mean the same to asyncpg or aiosqlite."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        raise ValueError(
            "is not a database URL; write e.g. sqlite:///./iap.db or postgresql://user@host/db"
        )
    chosen = _ASYNC_SCHEMES.get(scheme.lower())
    if chosen is None:
        backend, _, driver = scheme.partition("+")
        if backend.lower() in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                f"names the driver '{driver}'; IAP drives {backend} itself: write "
                f"{backend.lower()}://… (or {_ASYNC_SCHEMES[backend.lower()]}://…)"
            )
        raise ValueError(
            f"'{scheme}' is not a database IAP runs on: use sqlite:// or postgresql://"
        )
    normalised = f"{chosen}://{rest}"
    try:
        _ = make_url(normalised).port
    except (ArgumentError, ValueError):
        raise ValueError(
            "cannot be read as a database URL; write e.g. postgresql://user:password@host:5432/db"
        ) from None
    return normalised


def safe_url(url: str) -> str:
    """The URL as it may be shown: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable database URL)"


def describe_database_error(error: BaseException, url: str) -> str | None:
    """What an operator reads when the database cannot be opened: the problem and the fix, the
    password never shown. None when the error is not about reaching the database."""
    if isinstance(error, DatabaseUnavailable):
        return str(error)
    parsed = make_url(url)
    shown = safe_url(url)
    if parsed.get_backend_name() == "sqlite":
        if isinstance(error, DBAPIError) and "unable to open database file" in str(error.orig):
            return _sqlite_unopenable(Path(parsed.database or ""), "is not writable")
        return None
    address = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    if isinstance(error, OSError):
        reason = error.strerror or type(error).__name__
        return (
            f"cannot reach PostgreSQL at {address} ({reason}); start it, or fix the host and "
            f"port in IAP_DATABASE_URL ({shown})"
        )
    if not isinstance(error, DBAPIError):
        return None
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    said = str(error.orig).splitlines()[0] if str(error.orig) else type(error.orig).__name__
    if state == _MISSING_DATABASE:
        return (
            f"PostgreSQL at {address} says: {said}; create it (createdb {parsed.database}) "
            f"or fix the database name in IAP_DATABASE_URL ({shown})"
        )
    if state in (_REFUSED_LOGIN, _WRONG_PASSWORD):
        return (
            f"PostgreSQL at {address} refused the login: {said}; fix the user or password in "
            f"IAP_DATABASE_URL ({shown})"
        )
    return None


def _sqlite_unopenable(path: Path, why: str) -> str:
    return (
        f"cannot open the SQLite database {path}: its folder {path.parent} {why}; "
        "create it, or point IAP_DATABASE_URL elsewhere"
    )


def is_postgres(engine: AsyncEngine | AsyncConnection) -> bool:
    """Whether this engine or connection talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"


async def wake_dispatchers(conn: AsyncConnection) -> None:
    """New dispatches are due: on PostgreSQL every worker's dispatcher hears it when this
    transaction commits; on SQLite they find them at their next poll."""
    if is_postgres(conn):
        await conn.execute(text(f"NOTIFY {DISPATCH_CHANNEL}"))


async def wake_follow_ups(conn: AsyncConnection) -> None:
    """New follow-ups are due: as wake_dispatchers, for every worker's follow-up sender."""
    if is_postgres(conn):
        await conn.execute(text(f"NOTIFY {FOLLOW_UP_CHANNEL}"))


def is_busy(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused a statement for another connection's lock (nothing was done)."""
    return "database is locked" in str(error) or "database is busy" in str(error)


class _RunHere:
    """aiosqlite's queue to its thread, each call run on the spot (SQLAlchemy's adapter puts
    some calls on it directly)."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the caller, as aiosqlite's thread does
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class LoopConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs SQLite on the event loop's own thread.

    aiosqlite hands every statement to a thread of its own and back: two waits for the
    interpreter lock and a wake-up of the loop per statement, which cost more than the
    statements themselves (the drain spent most of its time there). SQLite's work is short
    here (WAL, indexed look-ups), so it is done on the spot; the one wait that could be long,
    for another process's write lock, is an asyncio sleep between tries instead."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _RunHere()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, LoopConnection]:
        return self._open().__await__()

    async def _open(self) -> LoopConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        delay, longest = BUSY_RETRY_SECONDS
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


def create_engine(database_url: str, pools: DatabaseSettings | None = None) -> AsyncEngine:
    """An async engine; SQLite gets WAL, write-first transactions and its statements run on
    the event loop (LoopConnection), PostgreSQL the pool sizes of IAP_DATABASE__* (the
    defaults without `pools`).

    Its errors never quote a statement's parameters: they carry citizens' details, and an
    unexpected error is logged."""
    from app.core.settings import DatabaseSettings  # settings reads its URL rules from here

    pools = pools or DatabaseSettings()
    database_url = async_database_url(database_url)
    if database_url.startswith("sqlite"):
        # Said before connecting: aiosqlite's thread outlives a failed connect and complains
        # on the way out.
        path = Path(make_url(database_url).database or ":memory:")
        if str(path) != ":memory:" and not path.parent.is_dir():
            raise DatabaseUnavailable(_sqlite_unopenable(path, "does not exist"))
        args, options = SQLiteDialect_aiosqlite().create_connect_args(make_url(database_url))
        connector = functools.partial(sqlite3.connect, *args, **options)

        async def connect() -> LoopConnection:
            return await LoopConnection(connector)

        engine = create_async_engine(
            database_url,
            pool_size=8,
            max_overflow=0,
            hide_parameters=True,
            async_creator=connect,
        )
        _tune_sqlite(engine)
        return engine
    return create_async_engine(
        database_url,
        pool_size=pools.pool_size,
        max_overflow=pools.max_overflow,
        pool_pre_ping=True,
        hide_parameters=True,
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


def _without_chatter(record: logging.LogRecord) -> bool:
    """Alembic says which dialect it uses every time it looks at the schema; only the upgrades
    it runs are news."""
    return not str(record.msg).startswith(("Context impl ", "Will assume "))


def _upgrade(sync_conn: Connection, database_url: str, sealer: Sealer | None) -> None:
    logging.getLogger("alembic.runtime.migration").addFilter(_without_chatter)
    config = alembic_config(database_url)
    config.attributes["connection"] = sync_conn
    config.attributes["sealer"] = sealer
    command.upgrade(config, "head")
