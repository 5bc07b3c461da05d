"""Chaos run: does every enquiry reach each of its back-offices exactly once, whatever happens?

On loopback only: a sandbox whose Open311 councils follow the spec and no more (`plain`: a
repeat makes a second case), `iap serve --no-worker` for intake, and two `iap worker`s. While
they deliver, the back-offices misbehave (30 % of calls answered 503, one council holding its
answers past the adapter's timeout, one committing its cases only after the caller gave up, one
down for a while) and the workers are paused (SIGSTOP past their lease, then SIGCONT), killed
(SIGKILL) and stopped (SIGTERM mid-call), each once, and replaced. Then the faults end and
every dispatch is waited for. Printed per organisation: dispatches, delivered, dead, lost (a
delivery the back-office has no case for, or one never finished) and duplicated (a reference
with more than one case). Exits 1 if anything was lost or duplicated.

Run: .venv/bin/python bench/chaos.py [--enquiries 300] [--database-url URL]
A PostgreSQL URL names a database of yours: its schema is dropped and made again.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import func, select

from app.catalogue.catalogue import load_catalogue
from app.core.db import create_engine, reading
from app.core.models import attempt_table, dispatch_table, enquiry_table
from app.core.reference import display
from app.core.settings import SHIPPED_CONFIG_DIR
from harness import IAP, Processes, free_port, iap_env, run_checked, wait_until_ready

TIMEOUT = 2.0  # seconds per back-office call
LEASE = 6.0  # more than twice the call, as the settings require
SETTLE = 3.0  # the late-committing council commits 1 s after the caller gave up
WORKER_ENV = {
    "IAP_HTTP__TIMEOUT_SECONDS": str(TIMEOUT),
    "IAP_DISPATCH__LEASE_SECONDS": str(LEASE),
    "IAP_DISPATCH__SETTLE_SECONDS": str(SETTLE),
    "IAP_DISPATCH__SHUTDOWN_GRACE_SECONDS": "1",
    "IAP_DISPATCH__RETRY_SCHEDULE": str([0.5, 1, 2, 2, 3] + [4] * 14),
    "IAP_DISPATCH__CIRCUIT_COOLDOWN_SECONDS": "3",
    "IAP_DISPATCH__CIRCUIT_WINDOW_SECONDS": "20",
    "IAP_LOG_LEVEL": "INFO",
}
PLAIN = {"plain": True}
# What each back-office does during the storm; afterwards all are plain and well.
STORM: dict[str, dict[str, Any]] = {
    "*": {**PLAIN, "fail_rate": 0.3},
    # Makes the case at once, answers after the caller gave up.
    "cherwell": {**PLAIN, "timeout": True, "latency_ms": int(TIMEOUT * 1500)},
    # Makes the case only after the caller gave up (every call waits 3 s first).
    "oxford-city": {**PLAIN, "latency_ms": int(TIMEOUT * 1500)},
    "west-oxfordshire": {**PLAIN, "down_for_seconds": 20},
}
STORM_SECONDS = 40.0
SETTLE_DEADLINE = 300.0  # after the storm, for every dispatch to finish

ENQUIRIES = [
    {
        "service_code": "pothole",
        "description": "Deep pothole by the bus stop",
        "location": {"postcode": "OX4 1AA"},
        "attributes": {"road_or_pavement": "road"},
    },
    *(
        {
            "service_code": "missed-bin",
            "description": "Food waste caddy not emptied",
            "location": {"postcode": postcode},
            "attributes": {"bin_type": "food"},
        }
        for postcode in ("OX16 5QA", "OX1 1AA", "OX11 1AA", "OX14 1AA", "OX18 1AA")
    ),
    {
        "service_code": "anti-social-behaviour",
        "description": "Youths kicking a ball at windows every evening",
        "location": {"postcode": "OX16 5QA"},
        "attributes": {"ongoing": "yes"},
    },
    {
        "service_code": "health-enquiry",
        "description": "Which pharmacies open late on Sundays?",
        "attributes": {},
    },
]


@dataclass
class Figures:
    dispatches: int = 0
    delivered: int = 0
    dead: int = 0
    lost: int = 0
    duplicated: int = 0
    interrupted: int = 0


@dataclass
class Chaos:
    procs: Processes
    url: str
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: itertools.count[int] = field(default_factory=itertools.count)
    events: list[str] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = self.procs.start(
            f"worker-{next(self.names)}", [IAP, "worker"], env={**self.env, **WORKER_ENV}, cpu=None
        )
        self.workers.append(proc)
        return proc

    def note(self, started: float, what: str) -> None:
        line = f"  t={time.monotonic() - started:5.1f} s  {what}"
        self.events.append(line)
        print(line, flush=True)

    async def run_faults(self, sandbox: str, started: float) -> None:
        """The pause, the kill and the stop, one each, while the back-offices misbehave."""
        a, b = self.workers
        await asyncio.sleep(3)
        os.kill(a.pid, signal.SIGSTOP)
        self.note(started, f"SIGSTOP worker {a.pid} for {LEASE + 3:g} s (past its lease)")
        await asyncio.sleep(LEASE + 3)
        os.kill(a.pid, signal.SIGCONT)
        self.note(started, f"SIGCONT worker {a.pid}")
        await asyncio.sleep(3)
        b.kill()
        b.wait()
        self.note(started, f"SIGKILL worker {b.pid}; a new worker starts")
        self.start_worker()
        await asyncio.sleep(5)
        a.send_signal(signal.SIGTERM)
        a.wait(timeout=30)
        self.note(started, f"SIGTERM worker {a.pid} (exit {a.returncode}); a new worker starts")
        self.start_worker()
        await asyncio.sleep(max(0.0, STORM_SECONDS - (time.monotonic() - started)))
        await set_behaviours(sandbox, {"*": PLAIN})
        self.note(started, "the back-offices are well again")


async def set_behaviours(sandbox: str, behaviours: dict[str, dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=sandbox, timeout=5) as client:
        for organisation in ("*", *STORM):
            body = behaviours.get(organisation, behaviours["*"])
            answer = await client.put(
                "/_sandbox/behaviour", params={"organisation": organisation}, json=body
            )
            answer.raise_for_status()


async def fresh_database(url: str | None, workdir: Path) -> str:
    """The URL to run on, with an empty migrated schema."""
    if url is None:
        url = f"sqlite+aiosqlite:///{workdir / 'chaos.db'}"
    elif url.startswith("postgresql"):
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()
    await run_checked([IAP, "migrate"], env=iap_env(url))
    return url


async def submit_all(gateway: str, key: str, count: int) -> None:
    bodies = itertools.cycle(ENQUIRIES)
    queue = iter(range(count))
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=gateway, timeout=30, headers=headers) as client:

        async def loop() -> None:
            for _ in queue:
                body = {**next(bodies), "channel": "web"}
                answer = await client.post("/v1/enquiries", json=body)
                if answer.status_code != 201:
                    raise RuntimeError(f"intake answered {answer.status_code}: {answer.text}")

        await asyncio.gather(*(loop() for _ in range(8)))


async def unfinished(url: str) -> int:
    engine = create_engine(url)
    try:
        async with reading(engine) as conn:
            return int(
                await conn.scalar(
                    select(func.count()).where(
                        dispatch_table.c.state.in_(["pending", "delivering"])
                    )
                )
                or 0
            )
    finally:
        await engine.dispose()


async def wait_until_finished(url: str, deadline: float) -> None:
    while time.monotonic() < deadline and await unfinished(url):
        await asyncio.sleep(0.5)


async def figures(url: str, sandbox: str) -> dict[str, Figures]:
    """Per organisation, from our dispatch table and the back-offices' own records."""
    engine = create_engine(url)
    try:
        async with reading(engine) as conn:
            rows = (
                await conn.execute(
                    select(
                        dispatch_table.c.id,
                        dispatch_table.c.organisation_id,
                        dispatch_table.c.state,
                        enquiry_table.c.reference,
                    ).join_from(dispatch_table, enquiry_table)
                )
            ).all()
            interrupted = Counter(
                (
                    await conn.execute(
                        select(dispatch_table.c.organisation_id)
                        .join_from(attempt_table, dispatch_table)
                        .where(attempt_table.c.outcome == "interrupted")
                    )
                ).scalars()
            )
    finally:
        await engine.dispose()
    by_organisation: dict[str, Figures] = {}
    catalogue = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": sandbox})
    # The triage desk is the gateway's own queue: no back-office to hold a case.
    desks = {o.id for o in catalogue.organisations.values() if o.adapter.type == "triage"}
    async with httpx.AsyncClient(base_url=sandbox, timeout=10) as client:
        for organisation in sorted({r.organisation_id for r in rows} - desks):
            cases = (await client.get(f"/_sandbox/{organisation}/cases")).json()["cases"]
            held = Counter(str(c.get("reference")) for c in cases)
            mine = [r for r in rows if r.organisation_id == organisation]
            states = Counter(r.state for r in mine)
            delivered = [display(r.reference) for r in mine if r.state == "delivered"]
            by_organisation[organisation] = Figures(
                dispatches=len(mine),
                delivered=states["delivered"],
                dead=states["dead"],
                lost=sum(1 for ref in delivered if held[ref] == 0)
                + states["pending"]
                + states["delivering"],
                duplicated=sum(1 for n in held.values() if n > 1),
                interrupted=interrupted[organisation],
            )
    return by_organisation


def report(by_organisation: dict[str, Figures], seconds: float) -> bool:
    print(f"\n  after {seconds:.0f} s", flush=True)
    print(
        f"  {'organisation':24} {'dispatches':>10} {'delivered':>9} {'dead':>5} "
        f"{'lost':>5} {'duplicated':>10} {'interrupted':>11}"
    )
    for organisation, f in by_organisation.items():
        print(
            f"  {organisation:24} {f.dispatches:10} {f.delivered:9} {f.dead:5} "
            f"{f.lost:5} {f.duplicated:10} {f.interrupted:11}"
        )
    total = Figures(
        *(sum(getattr(f, n) for f in by_organisation.values()) for n in vars(Figures()))
    )
    print(
        f"  {'total':24} {total.dispatches:10} {total.delivered:9} {total.dead:5} "
        f"{total.lost:5} {total.duplicated:10} {total.interrupted:11}",
        flush=True,
    )
    return total.lost == 0 and total.duplicated == 0


async def main(args: argparse.Namespace) -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="iap-chaos-"))
    procs = Processes(workdir, pin=False)
    print(f"chaos run: {args.enquiries} enquiries, logs in {workdir}", flush=True)
    try:
        url = await fresh_database(args.database_url, workdir)
        made = await run_checked(
            [IAP, "clients", "create", "chaos", "--scope", "enquiries:submit"], env=iap_env(url)
        )
        key = made.strip().splitlines()[-1]
        sandbox_port, gateway_port = free_port(), free_port()
        env = {**iap_env(url, sandbox_port), "IAP_MIGRATE_ON_START": "false"}
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        gateway = f"http://127.0.0.1:{gateway_port}"
        argv = [IAP, "sandbox", "--port", str(sandbox_port), "--step-seconds", "0"]
        argv += ["--smtp-port", env["IAP_SANDBOX_SMTP_PORT"]]
        proc = procs.start("sandbox", argv, env=env, cpu=None)
        await wait_until_ready(procs, "sandbox", proc, f"{sandbox}/_sandbox/stats")
        argv = [IAP, "serve", "--no-worker", "--no-sandbox", "--port", str(gateway_port)]
        proc = procs.start("gateway", argv, env=env, cpu=None)
        await wait_until_ready(procs, "gateway", proc, f"{gateway}/readyz")
        await submit_all(gateway, key, args.enquiries)
        await set_behaviours(sandbox, STORM)
        chaos = Chaos(procs, url, env)
        chaos.start_worker()
        chaos.start_worker()
        started = time.monotonic()
        chaos.note(started, "two workers start; the back-offices misbehave")
        await chaos.run_faults(sandbox, started)
        await wait_until_finished(url, time.monotonic() + SETTLE_DEADLINE)
        return report(await figures(url, sandbox), time.monotonic() - started)
    finally:
        for pid, (_, proc) in list(procs.running.items()):
            if proc.poll() is None:
                os.kill(pid, signal.SIGCONT)
            await procs.stop(proc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enquiries", type=int, default=300)
    parser.add_argument("--database-url", help="default: a new SQLite file")
    ok = asyncio.run(main(parser.parse_args()))
    sys.exit(0 if ok else 1)
