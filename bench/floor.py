"""The floor: the least an intake endpoint can do with the gateway's body and database.

FastAPI with the gateway's own body model (`app.schemas.EnquiryIn`) and one raw INSERT per
request: aiosqlite on one autocommit connection with the PRAGMAs of app/db.py, or an asyncpg
pool; served the way `iap serve` serves the gateway. The gateway is measured against this in
the same run (bench/run.py).

Run: python bench/floor.py --database-url URL --port PORT, with URL as the gateway takes it.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import aiosqlite
import asyncpg
import uvicorn
from fastapi import FastAPI, Request

from app.cli import tune_garbage_collector
from app.intake.schemas import EnquiryIn

# The same as app/db.py, so the floor pays for the same durability.
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000")
POSTGRES_POOL_SIZE = 20  # the gateway's pool_size
SQLITE_TABLE = """CREATE TABLE IF NOT EXISTS floor_enquiry (
    id TEXT PRIMARY KEY, service_code TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL
)"""
POSTGRES_TABLE = """CREATE TABLE IF NOT EXISTS floor_enquiry (
    id uuid PRIMARY KEY, service_code text NOT NULL, body json NOT NULL,
    created_at timestamptz NOT NULL
)"""


class Store(Protocol):
    async def insert(self, *, enquiry_id: uuid.UUID, enquiry: EnquiryIn) -> None: ...

    async def close(self) -> None: ...


class SqliteStore:
    """One connection in autocommit mode: each INSERT is its own transaction."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self.connection = connection

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        connection = await aiosqlite.connect(path, isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            await connection.execute(f"PRAGMA {pragma}")
        await connection.execute(SQLITE_TABLE)
        return cls(connection)

    async def insert(self, *, enquiry_id: uuid.UUID, enquiry: EnquiryIn) -> None:
        await self.connection.execute(
            "INSERT INTO floor_enquiry VALUES (?, ?, ?, datetime('now'))",
            (str(enquiry_id), enquiry.service_code, enquiry.model_dump_json()),
        )

    async def close(self) -> None:
        await self.connection.close()


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PostgresStore:
        pool = await asyncpg.create_pool(
            dsn, min_size=POSTGRES_POOL_SIZE, max_size=POSTGRES_POOL_SIZE
        )
        await pool.execute(POSTGRES_TABLE)
        return cls(pool)

    async def insert(self, *, enquiry_id: uuid.UUID, enquiry: EnquiryIn) -> None:
        await self.pool.execute(
            "INSERT INTO floor_enquiry VALUES ($1, $2, $3, now())",
            enquiry_id,
            enquiry.service_code,
            enquiry.model_dump_json(),
        )

    async def close(self) -> None:
        await self.pool.close()


async def open_store(database_url: str) -> Store:
    """A store for a URL in the gateway's form (sqlite+aiosqlite:///… or postgresql+asyncpg://…)."""
    if database_url.startswith("sqlite"):
        return await SqliteStore.open(database_url.split(":///", 1)[1])
    return await PostgresStore.open(database_url.replace("postgresql+asyncpg://", "postgresql://"))


def create_floor_app(database_url: str) -> FastAPI:
    """The floor application: POST /v1/enquiries and GET /healthz."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.store = await open_store(database_url)
        try:
            yield
        finally:
            await app.state.store.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None)

    @app.post("/v1/enquiries", status_code=201)
    async def create_enquiry(enquiry: EnquiryIn, request: Request) -> dict[str, str]:
        enquiry_id = uuid.uuid4()
        await request.app.state.store.insert(enquiry_id=enquiry_id, enquiry=enquiry)
        return {"id": str(enquiry_id)}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    """Serve the floor on loopback with one uvicorn worker, run as `iap serve` runs the gateway."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_floor_app(args.database_url)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_config=None, access_log=False
    )
    # The gateway's runtime (its garbage-collector settings, asyncio.run), so that the ratio
    # measures the work each request does rather than how the process is tuned.
    tune_garbage_collector()
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
