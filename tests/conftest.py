"""Shared fixtures: a real database (SQLite file, or PostgreSQL when IAP_TEST_DATABASE_URL says
so) with the schema built by the migrations, a real sandbox back-office on loopback, and the app
driven in-process through httpx's ASGI transport with its lifespan running."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.catalogue.catalogue import load_catalogue
from app.clients.service import Scope, create_client
from app.clients.staff import StaffRole, create_staff
from app.core.audit import Actor
from app.core.db import create_engine, migrate
from app.core.settings import (
    SHIPPED_CONFIG_DIR,
    ApiSettings,
    AttachmentSettings,
    DispatchSettings,
    Environment,
    Settings,
    WebhookSettings,
)
from app.delivery.dispatcher import Dispatcher
from app.main import create_app
from app.sandbox import create_sandbox_app

# Fuzzing (tests/api/test_fuzz.py). Each test's app and client are made once and shared by its
# examples, which compare stored rows before and after their own request: hence the
# function-scoped fixtures. No deadline: a database round trip varies too much to time.
# "ci", the default, runs the same examples every time and keeps no example database, so the
# test command gives the same answer on every machine; HYPOTHESIS_PROFILE=dev explores anew
# each run and replays a failure from .hypothesis/ (not in git).
hypothesis_settings.register_profile(
    "dev",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
hypothesis_settings.register_profile(
    "ci", hypothesis_settings.get_profile("dev"), derandomize=True, database=None, print_blob=True
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

POSTGRES_URL = os.environ.get("IAP_TEST_DATABASE_URL", "")
ON_POSTGRES = POSTGRES_URL.startswith("postgresql")
UNREACHABLE_RATE = "1000000/minute"
TABLES = (
    "alert",
    "feed_cursor",
    "follow_up",
    "attachment",
    "message",
    "event",
    "dispatch_attempt",
    "dispatch",
    "enquiry",
    "idempotency_record",
    "gazetteer_postcode",
    "circuit",
    "status_update",
    "inbound_message",
    "poll_state",
    "api_client",
    "audit_log",
    "webhook_delivery",
    "webhook_subscription",
    "staff",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThreadedServer:
    """A real uvicorn server on a loopback port, in a thread of the test process."""

    def __init__(self, app: Any, port: int | None = None, *, lifespan: str = "off") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan=lifespan,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Recorder(Protocol):
    """A loopback stand-in that records what it is sent: its app, where it listens, a reset."""

    app: Any
    url: str

    def reset(self) -> None: ...


R = TypeVar("R", bound=Recorder)


@contextmanager
def serving(recorder: R) -> Iterator[R]:
    """`recorder` on a loopback port until the block ends, its `url` set: one server for a module
    or a session, with `reset()` between tests (starting a server per test is slow)."""
    server = ThreadedServer(recorder.app).start()
    recorder.url = server.url
    try:
        yield recorder
    finally:
        server.stop()


def start_sandbox(wrap: Any = None) -> ThreadedServer:
    """The sandbox back-offices of the shipped configuration on loopback ports, SMTP sink
    included; `wrap` may put ASGI middleware around it."""
    port, smtp_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    catalogue = load_catalogue(
        SHIPPED_CONFIG_DIR,
        variables={"IAP_SANDBOX_URL": url, "IAP_SANDBOX_SMTP_PORT": str(smtp_port)},
    )
    app = create_sandbox_app(catalogue, smtp_port=smtp_port)
    server = ThreadedServer(wrap(app) if wrap else app, port, lifespan="on").start()
    server.app = app  # type: ignore[attr-defined]
    server.smtp_port = smtp_port  # type: ignore[attr-defined]
    return server


@pytest.fixture(scope="session")
def sandbox() -> Iterator[ThreadedServer]:
    """The sandbox back-offices, shared by the session; reset before each test that uses it."""
    server = start_sandbox()
    yield server
    server.stop()


@pytest.fixture
def back_office(sandbox: ThreadedServer) -> Iterator[Any]:
    """The sandbox's record of cases and posts, emptied for this test once the requests an
    earlier test left behind (a delayed one still makes its case) have been answered; its
    misbehaviour is forgotten afterwards, so that a later test that never asks for the back
    office (and so never empties it) still meets one that works."""
    state = sandbox.app.state  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while state.sandbox.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    office = state.office
    office.__init__()  # every field back to empty
    yield office
    office.behaviour.clear()


@pytest.fixture(scope="session")
def template_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database migrated once per session; each test gets a clean copy of it."""
    if not ON_POSTGRES:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'template.db'}"
        asyncio.run(_migrate(url))
        yield url
        return
    name = f"iap_test_{uuid.uuid4().hex[:8]}"
    asyncio.run(_postgres_admin(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_postgres_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _postgres_admin(statement: str) -> None:
    engine = create_engine(POSTGRES_URL)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(statement))
    await engine.dispose()


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    await migrate(engine)
    await engine.dispose()


@pytest.fixture
def database_url(template_database: str, tmp_path: Path) -> str:
    if ON_POSTGRES:
        asyncio.run(_truncate(template_database))
        return template_database
    source = Path(template_database.removeprefix("sqlite+aiosqlite:///"))
    target = tmp_path / "iap.db"
    shutil.copy(source, target)
    return f"sqlite+aiosqlite:///{target}"


async def _truncate(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        # The audit log refuses TRUNCATE; a test database is the one place it may be emptied.
        await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
        await conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
    await engine.dispose()


def make_settings(
    database_url: str, sandbox_url: str, smtp_port: int = 8025, **overrides: Any
) -> Settings:
    """Settings for a test: fast retries, loopback sandbox, no migrations (already done)."""
    values: dict[str, Any] = {
        "env": Environment.test,
        "database_url": database_url,
        "sandbox_url": sandbox_url,
        "sandbox_smtp_port": smtp_port,
        "migrate_on_start": False,
        "dispatch": DispatchSettings(
            retry_schedule=[0.05, 0.05], jitter=0.0, poll_seconds=0.2, lease_seconds=30
        ),
        # Keys checked every time, so a key revoked by `iap clients revoke` fails at once.
        # Rate limits counted as in production, but too high for any test to reach by chance
        # (tests/api/test_abuse.py sets small ones); the test client's base_url host is trusted.
        "api": ApiSettings(
            key_cache_seconds=0,
            rate_limit_client=UNREACHABLE_RATE,
            rate_limit_anonymous=UNREACHABLE_RATE,
            rate_limit_inbound=UNREACHABLE_RATE,
            trusted_hosts=["iap.test", "127.0.0.1", "localhost"],
        ),
        # Webhook retries at once, so a test sees the next attempt without waiting for it.
        "webhooks": WebhookSettings(retry_schedule=[0.0, 0.0], jitter=0.0, poll_seconds=0.1),
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str, sandbox: ThreadedServer, tmp_path: Path) -> Settings:
    # Attachments (app/attachments) in the test's own directory, gone with it.
    attachments = AttachmentSettings(directory=tmp_path / "attachments")
    return make_settings(database_url, sandbox.url, sandbox.smtp_port, attachments=attachments)  # type: ignore[attr-defined]


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The gateway with its lifespan running and no dispatcher (tests deliver explicitly)."""
    application = create_app(settings, run_dispatcher=False)
    async with application.router.lifespan_context(application):
        yield application


async def make_key(
    engine: AsyncEngine, *scopes: Scope, channel: str | None = None, name: str | None = None
) -> str:
    """A new API client's key with these scopes."""
    _, key = await create_client(
        engine, name=name or f"test-{uuid.uuid4().hex[:8]}", scopes=list(scopes), channel=channel
    )
    return key


async def make_person(
    app: FastAPI,
    role: StaffRole | str,
    *,
    organisation: str | None = None,
    name: str = "Alex Agent",
    email: str | None = None,
    password: str | None = None,
) -> str:
    """A new member of staff's personal API token (app/clients/staff.py); with a password,
    they can sign in to the console."""
    state = app.state.iap
    _, token = await create_staff(
        state.engine,
        state.catalogue,
        name=name,
        email=email or f"{uuid.uuid4().hex[:8]}@staff.example.org",
        role=StaffRole(role),
        organisation_id=organisation,
        password=password,
        by=Actor("tests"),
    )
    return token


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def another_worker(app: FastAPI, worker_id: str) -> Dispatcher:
    """A second dispatcher on the app's database, catalogue, adapters and keys: to the leases,
    another worker process."""
    state = app.state.iap
    return Dispatcher(
        engine=state.engine,
        catalogue=state.catalogue,
        adapters=app.state.runtime.dispatcher.adapters,
        sealer=state.sealer,
        settings=state.settings.dispatch,
        worker_id=worker_id,
    )


@asynccontextmanager
async def started(
    application: FastAPI, *scopes: Scope, base_url: str = "http://iap.test"
) -> AsyncIterator[httpx.AsyncClient]:
    """`application` with its lifespan running, called with a new key of these scopes: for the
    tests that build their own app (other settings) instead of the `app` fixture's."""
    async with application.router.lifespan_context(application):
        key = await make_key(application.state.iap.engine, *scopes)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(
            transport=transport, base_url=base_url, headers=bearer(key)
        ) as http:
            yield http


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with no API key."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://iap.test") as http:
        yield http


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app, called with an admin API key made for this test."""
    key = await make_key(app.state.iap.engine, Scope.admin)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://iap.test", headers=bearer(key)
    ) as http:
        yield http


@pytest.fixture
def engine(app: FastAPI) -> AsyncEngine:
    engine: AsyncEngine = app.state.iap.engine
    return engine


def enquiry_body(**overrides: Any) -> dict[str, Any]:
    """A valid pothole enquiry; override any field."""
    body: dict[str, Any] = {
        "service_code": "pothole",
        "description": "A deep pothole by the bus stop",
        "channel": "web",
        "location": {"postcode": "OX4 1AA"},
        "attributes": {"road_or_pavement": "road"},
    }
    body.update(overrides)
    return body
