"""End-to-end harness: `iap` processes on loopback against the test database and the sandbox
back-offices (which count every create call per dedupe key), with bounded waits that fail
instead of hanging."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.catalogue.catalogue import load_catalogue
from app.clients.service import Scope
from app.core.db import create_engine, reading
from app.core.models import attempt_table, dispatch_table, enquiry_table
from app.core.reference import display
from app.core.settings import SHIPPED_CONFIG_DIR
from app.sandbox import BackOffice
from tests.conftest import (
    UNREACHABLE_RATE,
    ThreadedServer,
    bearer,
    enquiry_body,
    free_port,
    make_key,
)

IAP = str(Path(sys.executable).parent / "iap")
T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, within: float, what: str, every: float = 0.02
) -> T:
    """Poll `check` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within} s waiting for {what}")
        await asyncio.sleep(every)


# How each shipped organisation is reached, to know what its back-office deduplicates on.
ADAPTER_TYPE = {
    o.id: o.adapter.type
    for o in load_catalogue(
        SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": "http://x"}
    ).organisations.values()
}


def create_key(dispatch: dict[str, Any]) -> str:
    """The key a back-office deduplicates a dispatch's create on: the Idempotency-Key (county),
    our reference (Open311 attribute, FHIR identifier), or the Message-ID (email)."""
    kind = ADAPTER_TYPE[dispatch["organisation_id"]]
    if kind == "rest-json":
        return str(dispatch["id"])
    if kind == "email":
        return f"{dispatch['id']}@iap.invalid"
    return str(dispatch["reference"])


class Calls:
    """What the sandbox back-offices were asked: create calls per (organisation, dedupe key),
    counted as they arrive (before any delay or failure), and requests still being answered."""

    def __init__(self, sandbox: ThreadedServer) -> None:
        self.state = sandbox.app.state  # type: ignore[attr-defined]

    @property
    def creates(self) -> Counter[tuple[str, str]]:
        return Counter(self.state.office.posts_by_key)

    def creates_for(self, dispatch: dict[str, Any]) -> int:
        return self.creates[(dispatch["organisation_id"], create_key(dispatch))]

    def case_for(self, dispatch: dict[str, Any]) -> str | None:
        """The case id the back-office made for this dispatch, if it made one."""
        found: str | None = self.state.office.by_key.get(
            (dispatch["organisation_id"], create_key(dispatch))
        )
        return found

    @property
    def in_flight(self) -> int:
        return int(self.state.sandbox.in_flight)


@pytest.fixture
def calls(sandbox: ThreadedServer, back_office: BackOffice) -> Iterator[Calls]:
    """The back-offices' calls for this test; teardown waits for the sandbox to answer them."""
    view = Calls(sandbox)
    yield view
    deadline = time.monotonic() + 10
    while view.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    back_office.behaviour.clear()


class IapProcess:
    """One `iap` command running as a child process, its output going to a log file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                [IAP, *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
            )
        except OSError:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The structured log lines so far, optionally only those with this event name."""
        lines = []
        for line in self.log_text().splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if name is None or entry.get("event") == name:
                lines.append(entry)
        return lines

    async def wait_for_event(self, name: str, *, within: float = 15) -> dict[str, Any]:
        async def logged() -> dict[str, Any] | None:
            found = self.events(name)
            if not found and self.process.poll() is not None:
                raise AssertionError(f"iap {self.args[0]} exited before logging {name}")
            return found[0] if found else None

        return await eventually(logged, within=within, what=f"{name} from iap {self.args[0]}")

    async def wait_exit(self, *, within: float) -> int:
        async def exited() -> bool:
            return self.process.poll() is not None

        await eventually(exited, within=within, what=f"iap {self.args[0]} to exit")
        return self.process.returncode

    def send(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def stop(self) -> None:
        """Terminate (then kill) if still running; always reap it and close the log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


class Launcher:
    """Starts `iap serve` and `iap worker` against this test's database and the sandbox."""

    def __init__(
        self, *, database_url: str, sandbox_url: str, smtp_port: int, log_dir: Path
    ) -> None:
        # The caller's own IAP_* settings would make runs differ; each test sets what it needs.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("IAP_")}
        self.base_env = {
            **inherited,
            "IAP_ENV": "test",
            "IAP_DATABASE_URL": database_url,
            "IAP_SANDBOX_URL": sandbox_url,
            "IAP_SANDBOX_SMTP_PORT": str(smtp_port),
            "IAP_MIGRATE_ON_START": "false",
            "IAP_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # The tests poll fast from one address; limits stay on, out of their reach.
            "IAP_API__RATE_LIMIT_CLIENT": UNREACHABLE_RATE,
            "IAP_API__RATE_LIMIT_ANONYMOUS": UNREACHABLE_RATE,
            "IAP_API__RATE_LIMIT_INBOUND": UNREACHABLE_RATE,
        }
        self.log_dir = log_dir
        self.started: list[IapProcess] = []
        self._admin_key: str | None = None

    def _start(self, args: list[str], env: dict[str, str]) -> IapProcess:
        log_path = self.log_dir / f"{len(self.started):02d}-{args[0]}.log"
        process = IapProcess(args, env={**self.base_env, **env}, log_path=log_path)
        self.started.append(process)
        return process

    @asynccontextmanager
    async def worker(self, **env: str) -> AsyncIterator[Worker]:
        """An `iap worker`, yielded once its dispatcher has started; stopped on the way out."""
        async with self.workers(1, **env) as (worker,):
            yield worker

    @asynccontextmanager
    async def workers(self, count: int, **env: str) -> AsyncIterator[tuple[Worker, ...]]:
        """`count` workers launched at the same moment, yielded once all have started."""
        processes = [self._start(["worker"], env) for _ in range(count)]
        try:
            started = await asyncio.gather(
                *(p.wait_for_event("dispatcher.started") for p in processes)
            )
            yield tuple(Worker(p, s["worker"]) for p, s in zip(processes, started, strict=True))
        finally:
            for process in processes:
                process.stop()

    @asynccontextmanager
    async def serve(
        self, *args: str, port: int | None = None, **env: str
    ) -> AsyncIterator[Gateway]:
        """An `iap serve` on a free loopback port (or `port`: one its settings name already),
        yielded once /readyz answers."""
        port = port or free_port()
        process = self._start(["serve", "--port", str(port), "--no-sandbox", *args], env)
        url = f"http://127.0.0.1:{port}"
        headers = bearer(await self.admin_key())
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5, headers=headers) as http:

                async def ready() -> bool:
                    if process.process.poll() is not None:
                        raise AssertionError("iap serve exited before it was ready")
                    try:
                        return (await http.get("/readyz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(ready, within=60, what="iap serve to be ready", every=0.05)
                yield Gateway(process, http)
        finally:
            process.stop()

    async def admin_key(self) -> str:
        """An admin API key in this test's database, made once."""
        if self._admin_key is None:
            engine = create_engine(self.base_env["IAP_DATABASE_URL"])
            try:
                self._admin_key = await make_key(engine, Scope.admin)
            finally:
                await engine.dispose()
        return self._admin_key

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


@dataclass(frozen=True)
class Worker:
    process: IapProcess
    id: str


@dataclass(frozen=True)
class Gateway:
    process: IapProcess
    http: httpx.AsyncClient


@pytest.fixture
def iap(database_url: str, sandbox: ThreadedServer, tmp_path: Path) -> Iterator[Launcher]:
    """Start `iap` processes; all are stopped at teardown and their logs printed (shown on
    failure)."""
    launcher = Launcher(
        database_url=database_url,
        sandbox_url=sandbox.url,
        smtp_port=sandbox.smtp_port,  # type: ignore[attr-defined]
        log_dir=tmp_path,
    )
    yield launcher
    launcher.stop_all()
    for process in launcher.started:
        print(f"----- iap {' '.join(process.args)} (pid {process.pid}) -----")
        print(process.log_text())


class Ledger:
    """Read-only view of the dispatch tables, as a contact-centre supervisor would query them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def dispatches(self) -> list[dict[str, Any]]:
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(dispatch_table, enquiry_table.c.reference)
                .join_from(dispatch_table, enquiry_table)
                .order_by(dispatch_table.c.id)
            )
            return [{**row, "reference": display(row["reference"])} for row in rows.mappings()]

    async def attempts(self) -> list[dict[str, Any]]:
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(attempt_table).order_by(attempt_table.c.dispatch_id, attempt_table.c.number)
            )
            return [dict(row) for row in rows.mappings()]

    async def states(self) -> Counter[str]:
        return Counter(row["state"] for row in await self.dispatches())


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    engine = create_engine(database_url)
    yield Ledger(engine)
    await engine.dispose()


# Places in each district, so a batch of enquiries spreads over every back-office.
POSTCODES = ("OX5 1AA", "OX1 1AA", "OX11 1AA", "OX14 1AA", "OX18 1AA")


def mixed_enquiry(number: int) -> dict[str, Any]:
    """Every third is anti-social behaviour (district and police); the rest are potholes."""
    postcode = POSTCODES[number % len(POSTCODES)]
    if number % 3 == 0:
        return enquiry_body(
            service_code="anti-social-behaviour",
            description=f"Youths kicking a ball at windows every evening ({number})",
            location={"postcode": postcode},
            attributes={"ongoing": "yes"},
        )
    return enquiry_body(description=f"Pothole number {number}", location={"postcode": postcode})
