"""Processes and databases for the benchmark: every one started here is stopped here."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import func, select

from app.core.db import create_engine, reading
from app.core.models import dispatch_table

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
IAP = str(Path(sys.executable).parent / "iap")
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
# The server and the load generator on different cores; PostgreSQL floats.
SERVER_CPU, LOAD_CPU = "0", "1"
# Sent with every request: the API key of the database the current phase runs on (phases run
# one after another, each on a fresh database, so one at a time is enough).
API_HEADERS: dict[str, str] = {}


class Processes:
    """Every process this run starts; each is stopped by its own pid, whatever happens."""

    def __init__(self, logs: Path, *, pin: bool) -> None:
        self.logs = logs
        self.pin = pin
        self.running: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    def start(
        self, name: str, argv: Sequence[str], *, env: dict[str, str], cpu: str | None
    ) -> subprocess.Popen[bytes]:
        """Start argv with its output in logs/NAME.log, on one core when pinning."""
        command = [*self.pinned(cpu), *argv]
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.running[proc.pid] = (name, proc)
        return proc

    def pinned(self, cpu: str | None) -> list[str]:
        return ["taskset", "-c", cpu] if self.pin and cpu is not None else []

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        self.running.pop(proc.pid, None)
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    async def wait(self, proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
        """Let a process end by itself (stopped after timeout)."""
        if proc is None:
            return
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.stop(proc)

    async def stop_all(self) -> None:
        for _, proc in list(self.running.values()):
            await self.stop(proc, grace=5.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def iap_env(database_url: str, sandbox_port: int | None = None) -> dict[str, str]:
    """The environment of an `iap` process: ours without any IAP_ settings, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IAP_")}
    env["IAP_DATABASE_URL"] = database_url
    # Logged as production logs (one JSON line per request), not as a developer's console.
    env["IAP_LOG_FORMAT"] = "json"
    env["IAP_SANDBOX_URL"] = f"http://127.0.0.1:{sandbox_port or free_port()}"
    env["IAP_SANDBOX_SMTP_PORT"] = str(free_port())
    # One client at full speed: its rate limit is still checked (that cost is measured) but
    # never reached.
    env["IAP_API__RATE_LIMIT_CLIENT"] = "100000000/minute"
    return env


async def wait_until_ready(
    procs: Processes, name: str, proc: subprocess.Popen[bytes], url: str
) -> None:
    """Poll url until it answers 200; fail if the process exits or 30 s pass."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{procs.log_tail(name)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{name} was not ready within 30 s:\n{procs.log_tail(name)}")


async def run_checked(
    argv: Sequence[str], *, env: dict[str, str], timeout: float = 60, stdin: str | None = None
) -> str:
    """Run a short command to completion (given stdin, if any); its output, or an error that
    shows it."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE if stdin is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        given = stdin.encode() if stdin is not None else None
        output, _ = await asyncio.wait_for(proc.communicate(given), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{output.decode(errors='replace')}")
    return output.decode(errors="replace")


@dataclass
class OtherCpu:
    """The share of the machine's CPU taken, while measuring, by anything but this run,
    its children, PostgreSQL and kernel threads (hypervisor steal included)."""

    share: float = 0.0


@contextlib.contextmanager
def other_cpu() -> Iterator[OtherCpu]:
    """Measure OtherCpu over the body of the with-block."""
    result = OtherCpu()
    machine, ours, started = _machine_ticks(), _our_ticks(), time.monotonic()
    yield result
    others = (_machine_ticks() - machine) - (_our_ticks() - ours)
    available = (time.monotonic() - started) * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    result.share = max(0.0, others / available)


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time (user and system) used so far by these processes: on a shared machine the
    work done per CPU second is steadier than per second of wall clock."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> int:
    """Busy clock ticks of all CPUs: user, nice, system, irq, softirq and steal."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return user + nice + system + irq + softirq + steal


def _our_ticks() -> int:
    """Clock ticks used by this process, its descendants (reaped ones too), PostgreSQL and
    the kernel's threads."""
    table: dict[int, tuple[str, int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            head, _, rest = stat.read_text().rpartition(")")
            fields = rest.split()
            ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
            table[int(stat.parent.name)] = (head.partition("(")[2], int(fields[1]), ticks)
    # Kernel threads (children of kthreadd, pid 2) mostly flush our writes and carry our packets.
    ours = _descendants(os.getpid(), table) | _descendants(2, table)
    return sum(
        ticks for pid, (name, _, ticks) in table.items() if pid in ours or name == "postgres"
    )


def _descendants(root: int, table: dict[int, tuple[str, int, int]]) -> set[int]:
    family = {root}
    while True:
        children = {pid for pid, (_, parent, _) in table.items() if parent in family}
        if children <= family:
            return family
        family |= children


class Databases:
    """A fresh, migrated database for every phase: a SQLite file, or a PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.created: list[str] = []

    async def fresh(self, label: str) -> str:
        """The URL of a new database, migrated with `iap migrate`."""
        if self.kind == "sqlite":
            url = f"sqlite+aiosqlite:///{self.workdir / f'{label}.db'}"
        else:
            name = f"iap_bench_{uuid.uuid4().hex[:8]}_{label}"
            await pg_admin(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            url = PG_URL.format(name=name)
        await run_checked([IAP, "migrate"], env=iap_env(url))
        made = await run_checked(
            [IAP, "clients", "create", "bench", "--scope", "enquiries:submit"],
            env={**iap_env(url), "IAP_MIGRATE_ON_START": "false"},
        )
        API_HEADERS["Authorization"] = f"Bearer {made.strip().splitlines()[-1]}"
        return url

    async def drop_all(self) -> None:
        while self.created:
            await pg_admin(f'DROP DATABASE IF EXISTS "{self.created.pop()}" WITH (FORCE)')


async def pg_admin(statement: str) -> str:
    connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        return str(await connection.execute(statement))
    finally:
        await connection.close()


async def database_version(kind: str) -> str:
    if kind == "sqlite":
        return f"SQLite {sqlite3.sqlite_version}"
    connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
    try:
        return f"PostgreSQL {await connection.fetchval('SHOW server_version')}"
    finally:
        await connection.close()


async def dispatch_counts(database_url: str) -> dict[str, int]:
    """How many dispatches are in each state."""
    engine = create_engine(database_url)
    try:
        async with reading(engine) as conn:
            rows = await conn.execute(
                select(dispatch_table.c.state, func.count()).group_by(dispatch_table.c.state)
            )
            return {str(state): int(count) for state, count in rows.all()}
    finally:
        await engine.dispose()


async def wait_until_delivered(database_url: str, expected: int, timeout: float) -> float:
    """Poll until `expected` dispatches are delivered; the monotonic time it was seen."""
    engine = create_engine(database_url)
    delivered = dispatch_table.c.state == "delivered"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            async with reading(engine) as conn:
                count = await conn.scalar(select(func.count()).where(delivered))
            if count == expected:
                return time.monotonic()
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    counts = await dispatch_counts(database_url)
    raise RuntimeError(f"not all {expected} dispatches delivered in {timeout:.0f} s: {counts}")


async def accepted_to_delivered_ms(database_url: str) -> list[float]:
    """delivered_at - created_at of every delivered dispatch, in milliseconds."""
    engine = create_engine(database_url)
    d = dispatch_table.c
    try:
        async with reading(engine) as conn:
            rows = (await conn.execute(select(d.created_at, d.delivered_at))).all()
    finally:
        await engine.dispose()
    return [(done - made).total_seconds() * 1000 for made, done in rows if done is not None]
