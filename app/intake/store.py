"""Writes a new enquiry, its dispatches, its first event and its idempotent answer at once.

This is the intake's hot path, so it skips SQLAlchemy's per-statement cost and talks to the
driver: on PostgreSQL one statement (data-modifying CTEs, with the NOTIFY that wakes the
dispatchers, sent on commit); on SQLite a group commit, from the event loop, of what has
queued up since its last turn. The tables are those of app/models.py; values are stored in the
form SQLAlchemy gives them, so everything else reads these rows through the models as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from weakref import WeakKeyDictionary

import asyncpg
from sqlalchemy import JSON, Integer, Uuid
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

# Every statement here is built from the column constants below, never from input (S608).
from app.core.db import (
    BUSY_RETRY_SECONDS,
    BUSY_TIMEOUT_SECONDS,
    DISPATCH_CHANNEL,
    SQLITE_PRAGMAS,
    is_busy,
    is_postgres,
)
from app.core.models import UTCDateTime, dispatch_table, enquiry_table, event_table
from app.core.settings import DatabaseSettings


class ReferenceTaken(Exception):
    """The random reference is already in use; draw another."""


@dataclass(frozen=True)
class NewEnquiry:
    enquiry: dict[str, Any]
    dispatches: list[dict[str, Any]]
    event: dict[str, Any]
    # (client_id, key, status, body) of the Idempotency-Key answer to store, if any.
    idempotency: tuple[str, str, int, dict[str, Any]] | None = None


# Every column of each table, from the models: a new column is written (NULL unless the intake
# gives it a value) with no edit here.
ENQUIRY_COLUMNS = tuple(enquiry_table.columns.keys())
DISPATCH_COLUMNS = tuple(dispatch_table.columns.keys())
EVENT_COLUMNS = tuple(event_table.columns.keys())
JSON_COLUMNS = frozenset(c.name for c in enquiry_table.columns if isinstance(c.type, JSON))


async def store_new_enquiry(engine: AsyncEngine, new: NewEnquiry) -> None:
    """Write it all in one transaction; ReferenceTaken if the reference is in use."""
    if is_postgres(engine):
        await _store_postgres(engine, new)
    else:
        await _store_sqlite(engine, new)


# --- PostgreSQL: one statement ---------------------------------------------------------------


def _postgres_type(name: str) -> str:
    """The PostgreSQL type of a dispatch column, for the array it is sent in."""
    kind = dispatch_table.c[name].type
    if isinstance(kind, Uuid):
        return "uuid"
    if isinstance(kind, Integer):
        return "int"
    return "timestamptz" if isinstance(kind, UTCDateTime) else "text"


def _postgres_statement(with_idempotency: bool) -> str:
    enquiry_values = ", ".join(
        f"${i}::json" if c in JSON_COLUMNS else f"${i}"
        for i, c in enumerate(ENQUIRY_COLUMNS, start=1)
    )
    n = len(ENQUIRY_COLUMNS)
    dispatch_arrays = ", ".join(
        f"${n + i}::{_postgres_type(name)}[]" for i, name in enumerate(DISPATCH_COLUMNS, start=1)
    )
    n += len(DISPATCH_COLUMNS)
    event_values = ", ".join(f"${n + i}" for i in range(1, len(EVENT_COLUMNS) + 1))
    n += len(EVENT_COLUMNS)
    # S608 below: the SQL text holds only our column names and placeholders, never input.
    idempotency = (
        f", i AS (UPDATE idempotency_record SET state = 'completed', response_status = ${n + 3}, "  # noqa: S608
        f"response_body = ${n + 4}::json WHERE client_id = ${n + 1} AND key = ${n + 2})"
        if with_idempotency
        else ""
    )
    return (
        f"WITH e AS (INSERT INTO enquiry ({', '.join(ENQUIRY_COLUMNS)}) "  # noqa: S608
        f"VALUES ({enquiry_values})), "
        f"d AS (INSERT INTO dispatch ({', '.join(DISPATCH_COLUMNS)}) "
        f"SELECT * FROM unnest({dispatch_arrays})), "
        f"v AS (INSERT INTO event ({', '.join(EVENT_COLUMNS)}) VALUES ({event_values}))"
        f"{idempotency} SELECT pg_notify('{DISPATCH_CHANNEL}', '')"
    )


_POSTGRES_STATEMENTS = {flag: _postgres_statement(flag) for flag in (False, True)}


def _postgres_arguments(new: NewEnquiry) -> list[Any]:
    enquiry = [
        _json(new.enquiry.get(c)) if c in JSON_COLUMNS else new.enquiry.get(c)
        for c in ENQUIRY_COLUMNS
    ]
    dispatches = [[d.get(c) for d in new.dispatches] for c in DISPATCH_COLUMNS]
    event = [new.event.get(c) for c in EVENT_COLUMNS]
    arguments = [*enquiry, *dispatches, *event]
    if new.idempotency is not None:
        client_id, key, status, body = new.idempotency
        arguments += [client_id, key, status, json.dumps(body)]
    return arguments


async def _store_postgres(engine: AsyncEngine, new: NewEnquiry) -> None:
    pool = await _postgres_pool(engine)
    try:
        await pool.execute(
            _POSTGRES_STATEMENTS[new.idempotency is not None], *_postgres_arguments(new)
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "enquiry_reference_key":
            raise ReferenceTaken from exc
        raise


_POOLS: WeakKeyDictionary[Engine, asyncpg.Pool] = WeakKeyDictionary()
_POOL_LOCKS: WeakKeyDictionary[Engine, asyncio.Lock] = WeakKeyDictionary()


async def _postgres_pool(engine: AsyncEngine) -> asyncpg.Pool:
    """A pool of the intake's own, as large as the engine's: its one autocommit statement
    changes no session state, so a connection goes back without the reset query (or
    SQLAlchemy's ping and rollback) each checkout would otherwise cost.

    Made by the first enquiry, under a lock: first requests arriving together must not each
    open a pool (all but one would never be closed)."""
    pool = _POOLS.get(engine.sync_engine)
    if pool is not None:
        return pool
    async with _POOL_LOCKS.setdefault(engine.sync_engine, asyncio.Lock()):
        pool = _POOLS.get(engine.sync_engine)
        if pool is None:
            dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            size = _pool_size(engine)
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, reset=_no_reset)
            _POOLS[engine.sync_engine] = pool
    return pool


def _pool_size(engine: AsyncEngine) -> int:
    """The engine's pool size (IAP_DATABASE__POOL_SIZE)."""
    pool = engine.sync_engine.pool
    return pool.size() if isinstance(pool, QueuePool) else DatabaseSettings().pool_size


async def _no_reset(connection: asyncpg.Connection) -> None:
    return None


# --- SQLite: group commit on the event loop ----------------------------------------------------


Rows = list[tuple[str, list[list[Any]]]]
_BATCH = 64
_CHECKPOINT_SECONDS = 0.5
# While another process holds the write lock, the loop is never made to wait for it: the
# batch is tried again after these delays (doubling), for as long as the engine's busy timeout.
_FIRST_RETRY_SECONDS, _LONGEST_RETRY_SECONDS = BUSY_RETRY_SECONDS


class _SqliteWriter:
    """Commits intake transactions in groups, from the event loop itself.

    A request's rows wait for the next turn of the loop, when every enquiry that arrived in
    the meantime is written in one transaction, each inside its own savepoint, so one that
    fails (a taken reference) rolls back alone; each caller is answered after the commit that
    holds its enquiry. A commit here is short (WAL, synchronous=NORMAL: no fsync), and it
    costs less on the loop than a hand-over to a thread: every hand-over is a wait for the
    interpreter lock, on both sides. When another process holds the write lock the batch is
    tried again a little later rather than waited for (busy_timeout 0). A thread copies the log
    into the database (checkpoints), so commits never do.
    """

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in SQLITE_PRAGMAS:
            self._connection.execute(f"PRAGMA {pragma}")
        self._connection.execute("PRAGMA wal_autocheckpoint=0")
        self._pending: list[tuple[Rows, asyncio.Future[None]]] = []
        self._scheduled = False
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint, args=(path,), name="iap-sqlite-checkpointer", daemon=True
        )
        self._checkpointer.start()

    async def run(self, new: NewEnquiry) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((_sqlite_rows(new), future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop, _FIRST_RETRY_SECONDS, loop.time())
        await future

    def close(self) -> None:
        self._stop.set()
        self._checkpointer.join(timeout=10)
        for _, future in self._pending:
            _settle(future, RuntimeError("the intake store was closed"))
        self._pending.clear()
        self._connection.close()

    def _flush(self, loop: asyncio.AbstractEventLoop, retry: float, since: float) -> None:
        batch, rest = self._pending[:_BATCH], self._pending[_BATCH:]
        if not batch:
            self._scheduled = False
            return
        outcomes: list[BaseException | None]
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc) and loop.time() - since < BUSY_TIMEOUT_SECONDS:
                delay = min(retry * 2, _LONGEST_RETRY_SECONDS)
                loop.call_later(retry, self._flush, loop, delay, since)
                return
            outcomes = [exc] * len(batch)
        else:
            outcomes = self._commit(batch)
        self._pending = rest
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            _settle(future, outcome)
        # What came while this batch was written goes in the next, after the loop's next turn.
        loop.call_soon(self._flush, loop, _FIRST_RETRY_SECONDS, loop.time())

    def _commit(self, batch: list[tuple[Rows, asyncio.Future[None]]]) -> list[BaseException | None]:
        connection = self._connection
        try:
            outcomes = [_write_one(connection, rows) for rows, _ in batch]
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            return [exc] * len(batch)
        return outcomes

    def _checkpoint(self, path: str) -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA busy_timeout=1000")
        try:
            while not self._stop.wait(_CHECKPOINT_SECONDS):
                with contextlib.suppress(sqlite3.OperationalError):
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            connection.close()


def _write_one(connection: sqlite3.Connection, rows: Rows) -> BaseException | None:
    connection.execute("SAVEPOINT enquiry")
    try:
        for statement, parameters in rows:
            connection.executemany(statement, parameters)
    except sqlite3.IntegrityError as exc:
        connection.execute("ROLLBACK TO enquiry")
        connection.execute("RELEASE enquiry")
        return ReferenceTaken() if "enquiry.reference" in str(exc) else exc
    connection.execute("RELEASE enquiry")
    return None


def _settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    if future.cancelled():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


def _sqlite_rows(new: NewEnquiry) -> Rows:
    rows = [
        (_SQLITE_ENQUIRY, [[_sqlite(c, new.enquiry.get(c)) for c in ENQUIRY_COLUMNS]]),
        (
            _SQLITE_DISPATCH,
            [[_sqlite(c, d.get(c)) for c in DISPATCH_COLUMNS] for d in new.dispatches],
        ),
        (_SQLITE_EVENT, [[_sqlite(c, new.event.get(c)) for c in EVENT_COLUMNS]]),
    ]
    if new.idempotency is not None:
        client_id, key, status, body = new.idempotency
        rows.append((_SQLITE_IDEMPOTENCY, [[status, json.dumps(body), client_id, key]]))
    return rows


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608


_SQLITE_ENQUIRY = _insert("enquiry", ENQUIRY_COLUMNS)
_SQLITE_DISPATCH = _insert("dispatch", DISPATCH_COLUMNS)
_SQLITE_EVENT = _insert("event", EVENT_COLUMNS)
_SQLITE_IDEMPOTENCY = (
    "UPDATE idempotency_record SET state = 'completed', response_status = ?, response_body = ? "
    "WHERE client_id = ? AND key = ?"
)


def _sqlite(column: str, value: Any) -> Any:
    """A value as SQLAlchemy stores it on SQLite: UUIDs as hex, times as naive UTC text."""
    if value is None:
        return None
    if column in JSON_COLUMNS:
        return json.dumps(value)
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


_WRITERS: WeakKeyDictionary[Engine, _SqliteWriter] = WeakKeyDictionary()


def _writer(engine: AsyncEngine) -> _SqliteWriter:
    writer = _WRITERS.get(engine.sync_engine)
    if writer is None:
        path = engine.url.database or ""
        writer = _WRITERS[engine.sync_engine] = _SqliteWriter(path)
    return writer


async def _store_sqlite(engine: AsyncEngine, new: NewEnquiry) -> None:
    await _writer(engine).run(new)


async def close_store(engine: AsyncEngine) -> None:
    """Close this engine's SQLite writer thread or PostgreSQL pool, whichever it has."""
    writer = _WRITERS.pop(engine.sync_engine, None)
    if writer is not None:
        writer.close()
    pool = _POOLS.pop(engine.sync_engine, None)
    if pool is not None:
        await pool.close()
