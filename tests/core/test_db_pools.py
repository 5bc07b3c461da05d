"""Connection pools: their sizes are settings, and intake's own PostgreSQL pool is made once."""

from __future__ import annotations

import asyncio
from typing import Any

from app.core.db import create_engine
from app.core.settings import DatabaseSettings, Settings
from app.intake import store

# Never connected to: the engine and the pool are made, no statement is sent.
UNREACHED = "postgresql+asyncpg://iap@127.0.0.1:9/iap"


def test_pool_sizes_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("IAP_DATABASE__POOL_SIZE", "7")
    monkeypatch.setenv("IAP_DATABASE__MAX_OVERFLOW", "3")
    assert Settings().database == DatabaseSettings(pool_size=7, max_overflow=3)


async def test_the_engine_has_the_configured_pool_and_todays_defaults_without():
    configured = create_engine(UNREACHED, DatabaseSettings(pool_size=7, max_overflow=3))
    default = create_engine(UNREACHED)
    try:
        assert (configured.pool.size(), configured.pool._max_overflow) == (7, 3)
        assert (default.pool.size(), default.pool._max_overflow) == (20, 10)
    finally:
        await configured.dispose()
        await default.dispose()


async def test_first_enquiries_arriving_together_open_one_intake_pool(monkeypatch):
    engine = create_engine(UNREACHED, DatabaseSettings(pool_size=5))
    opened: list[dict[str, Any]] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_create_pool(dsn: str, **options: Any) -> object:
        opened.append(options)
        entered.set()
        await release.wait()  # the other first request arrives while this pool is being made
        return object()

    monkeypatch.setattr(store.asyncpg, "create_pool", slow_create_pool)
    try:
        first = asyncio.create_task(store._postgres_pool(engine))
        second = asyncio.create_task(store._postgres_pool(engine))
        await entered.wait()
        release.set()
        pools = await asyncio.gather(first, second)
        assert pools[0] is pools[1]
        assert [o["max_size"] for o in opened] == [5]
        assert await store._postgres_pool(engine) is pools[0]
    finally:
        store._POOLS.pop(engine.sync_engine, None)
        await engine.dispose()
