"""Benchmark the gateway against a floor measured in the same run, on SQLite and PostgreSQL.

For each database, one after the other on loopback:
  intake   the floor (bench/floor.py) then `iap serve --no-worker --no-sandbox`, each on a fresh
           database, warmed up then driven by wrk (32 connections) for --duration seconds;
  drain    N enquiries queued with no worker, then a sandbox and one `iap worker`: dispatches/s
           until every dispatch is delivered;
  latency  `iap serve` with its in-process worker and a sandbox, one request at a time:
           accepted→delivered (dispatch.delivered_at - dispatch.created_at);
  pages    the console's take-a-call form and an enquiry page, signed in, one request at a
           time: each answer's server time from the gateway's own request log.

Run: .venv/bin/python bench/run.py [--duration 15] [--db sqlite|postgres|both]
                                    [--phases floor,gateway,drain,latency,pages]
                                    [--workers N] [--api N] [--write docs/performance.md]

A phase that fails is reported with its error (in the output and the results page) and the
run goes on. --workers N drains with N `iap worker` processes on one database (dispatches/s in
all and per worker); --api N runs the gateway's intake as N API processes, each on its own port
and core in turn, with wrk's connections split between them (req/s summed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness import (
    API_HEADERS,
    BENCH_DIR,
    IAP,
    LOAD_CPU,
    ROOT,
    SERVER_CPU,
    Databases,
    Processes,
    accepted_to_delivered_ms,
    cpu_seconds,
    database_version,
    dispatch_counts,
    free_port,
    iap_env,
    other_cpu,
    run_checked,
    wait_until_delivered,
    wait_until_ready,
)
from loadgen import (
    BODY,
    CONNECTIONS,
    Load,
    LoadResult,
    ensure_wrk,
    percentile,
    submit,
    submit_many,
)
from results import (
    DRAIN_ENQUIRIES,
    LATENCY_ENQUIRIES,
    PAGE_REQUESTS,
    PHASES,
    DatabaseFigures,
    DrainResult,
    LatencyResult,
    PagesResult,
    Run,
    machine,
    report,
    save_raw,
    write_report,
)

# An enquiry with a caller's details, so its page shows (and audits) them as for real.
PAGE_ENQUIRY = {
    **BODY,
    "citizen": {"name": "Sam Caller", "email": "sam@example.org"},
    "consent": {"share_contact_details": True},
}


@dataclass
class Bench:
    """The phases for one kind of database, each on a fresh database of its own."""

    procs: Processes
    databases: Databases
    load: Load
    duration: float
    warm_up: float
    phases: Sequence[str] = PHASES
    workers: int = 1  # `iap worker` processes in the drain
    apis: int = 1  # API processes in the gateway's intake
    py_spy: Path | None = None  # where the gateway's and drain workers' profiles go
    peak_rss_mb: dict[str, float | None] = field(default_factory=dict)  # by server name

    @property
    def kind(self) -> str:
        return self.databases.kind

    @contextlib.asynccontextmanager
    async def server(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        port: int,
        cpu: str,
        ready_path: str = "/healthz",
        profiled: bool = False,
    ) -> AsyncIterator[str]:
        """A started server that answers on ready_path; its base URL. Stopped on the way out.
        Profiled (with --py-spy) from when it is ready until it stops."""
        name = f"{self.kind}-{name}"
        proc = self.procs.start(name, argv, env=env, cpu=cpu)
        profiler = None
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_until_ready(self.procs, name, proc, base + ready_path)
            profiler = self.profile(name, proc) if profiled else None
            yield base
        finally:
            self.peak_rss_mb[name] = peak_rss_mb(proc.pid)
            await self.procs.stop(proc)
            await self.procs.wait(profiler)

    def gateway(
        self,
        name: str,
        env: dict[str, str],
        *,
        worker: bool,
        cpu: str = SERVER_CPU,
        profiled: bool = False,
    ) -> AsyncContextManager[str]:
        port = free_port()
        argv = [IAP, "serve", "--no-sandbox", "--port", str(port)]
        argv += [] if worker else ["--no-worker"]
        return self.server(name, argv, env=env, port=port, cpu=cpu, profiled=profiled)

    def sandbox(self, name: str, env: dict[str, str]) -> AsyncContextManager[str]:
        port = int(env["IAP_SANDBOX_URL"].rsplit(":", 1)[1])
        argv = [IAP, "sandbox", "--port", str(port)]
        return self.server(
            name, argv, env=env, port=port, cpu=LOAD_CPU, ready_path="/_sandbox/stats"
        )

    async def intake(self, name: str, server: AsyncContextManager[str]) -> LoadResult:
        """Check that one enquiry gets 201, warm up, then measure."""
        async with server as base, httpx.AsyncClient(timeout=10, headers=API_HEADERS) as client:
            url = f"{base}/v1/enquiries"
            await submit(client, url)
            await self.load.run(url, self.warm_up)
            with other_cpu() as other:
                result = await self.load.run(url, self.duration)
        result.other_cpu = other.share
        result.peak_rss_mb = self.peak_rss_mb.get(f"{self.kind}-{name}")
        print(
            f"  {name:8} {result.rps:9.1f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}",
            flush=True,
        )
        return result

    async def floor_intake(self) -> LoadResult:
        url, port = await self.databases.fresh("floor"), free_port()
        argv = [sys.executable, str(BENCH_DIR / "floor.py"), "--database-url", url]
        argv += ["--port", str(port)]
        floor = self.server("floor", argv, env=iap_env(url), port=port, cpu=SERVER_CPU)
        return await self.intake("floor", floor)

    async def gateway_intake(self) -> LoadResult:
        env = iap_env(await self.databases.fresh("gateway"))
        if self.apis == 1:
            gateway = self.gateway("gateway", env, worker=False, profiled=True)
            return await self.intake("gateway", gateway)
        return await self.intake_split(env)

    async def intake_split(self, env: dict[str, str]) -> LoadResult:
        """`apis` API processes, each on a port of its own and a core in turn, one database;
        the load split evenly between them, run at once."""
        async with contextlib.AsyncExitStack() as stack:
            bases = [
                await stack.enter_async_context(
                    self.gateway(f"gateway-{n}", env, worker=False, cpu=self.cpu(n), profiled=True)
                )
                for n in range(self.apis)
            ]
            client = await stack.enter_async_context(
                httpx.AsyncClient(timeout=10, headers=API_HEADERS)
            )
            urls = [f"{base}/v1/enquiries" for base in bases]
            for url in urls:
                await submit(client, url)
            await self.load.run_split(urls, self.warm_up)
            with other_cpu() as other:
                result = await self.load.run_split(urls, self.duration)
        result.other_cpu = other.share
        peaks = [self.peak_rss_mb.get(f"{self.kind}-gateway-{n}") for n in range(self.apis)]
        result.peak_rss_mb = max((p for p in peaks if p is not None), default=None)
        print(
            f"  gateway  {result.rps:9.1f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}  ({self.apis} API processes)",
            flush=True,
        )
        return result

    async def drain(self) -> DrainResult:
        """Queue DRAIN_ENQUIRIES with no worker; time `workers` `iap worker`s delivering them."""
        url = await self.databases.fresh("drain")
        env = iap_env(url, free_port())
        async with self.gateway("drain-gateway", env, worker=False) as base:
            await submit_many(f"{base}/v1/enquiries", DRAIN_ENQUIRIES, CONNECTIONS)
        expected = sum((await dispatch_counts(url)).values())
        async with self.sandbox("drain-sandbox", env):
            names = [f"{self.kind}-drain-worker-{n}" for n in range(self.workers)]
            workers = [
                self.procs.start(name, [IAP, "worker"], env=env, cpu=self.cpu(n))
                for n, name in enumerate(names)
            ]
            profilers: list[subprocess.Popen[bytes] | None] = []
            try:
                started = [
                    await self.wait_for_log(name, worker, "dispatcher.started")
                    for name, worker in zip(names, workers, strict=True)
                ]
                profilers = [self.profile(n, w) for n, w in zip(names, workers, strict=True)]
                pids = [worker.pid for worker in workers]
                with other_cpu() as other:
                    finished = await wait_until_delivered(url, expected, timeout=300)
                    # Idle between the first start-up and its first claim, so counted whole.
                    cpu = cpu_seconds(pids)
            finally:
                for worker in workers:
                    await self.procs.stop(worker)
                for profiler in profilers:
                    await self.procs.wait(profiler)
        result = DrainResult(expected, finished - min(started), other.share, self.workers, cpu)
        print(
            f"  drain    {result.rate:9.1f} dispatches/s ({expected} in {result.seconds:.1f} s, "
            f"{self.workers} worker(s): {result.per_worker:.1f} per worker; "
            f"{result.per_cpu_second:.0f} per worker CPU second)",
            flush=True,
        )
        return result

    def profile(self, name: str, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes] | None:
        """With --py-spy DIR: py-spy samples the process until it exits, its stacks folded
        into DIR/NAME.txt (flame-graph input: one stack and its sample count a line)."""
        if self.py_spy is None:
            return None
        out = self.py_spy / f"{name}.txt"
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        argv = [py_spy, "record", "--pid", str(proc.pid), "--format", "raw", "-o", str(out)]
        return self.procs.start(f"{name}-py-spy", argv, env=dict(os.environ), cpu=LOAD_CPU)

    def cpu(self, n: int) -> str:
        """The core of the n-th of several processes of one kind: the first on SERVER_CPU,
        the others spread over the machine's cores."""
        cores = sorted(os.sched_getaffinity(0))
        return str(cores[(cores.index(int(SERVER_CPU)) + n) % len(cores)])

    async def wait_for_log(self, name: str, proc: subprocess.Popen[bytes], event: str) -> float:
        """The monotonic time `event` first shows in the process's log."""
        path = self.procs.logs / f"{name}.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if event in path.read_text(errors="replace"):
                return time.monotonic()
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.procs.log_tail(name)}")
            await asyncio.sleep(0.01)
        raise RuntimeError(f"{name} did not log {event} within 30 s")

    async def latency(self) -> LatencyResult:
        """`iap serve` with its worker; LATENCY_ENQUIRIES one at a time; accepted→delivered."""
        url = await self.databases.fresh("latency")
        env = iap_env(url, free_port())
        async with (
            self.sandbox("latency-sandbox", env),
            self.gateway("latency-gateway", env, worker=True) as base,
            httpx.AsyncClient(timeout=10, headers=API_HEADERS) as client,
        ):
            with other_cpu() as other:
                # Each is delivered before the next is sent, so no delay is a queue's.
                for sent in range(1, LATENCY_ENQUIRIES + 1):
                    await submit(client, f"{base}/v1/enquiries")
                    await wait_until_delivered(url, sent, timeout=30)
        delays = await accepted_to_delivered_ms(url)
        p50, p99 = percentile(delays, 50), percentile(delays, 99)
        result = LatencyResult(len(delays), p50, p99, other.share)
        print(
            f"  accepted→delivered  p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms",
            flush=True,
        )
        return result

    async def pages(self) -> PagesResult:
        """An agent signed in; the take-a-call form and an enquiry page fetched PAGE_REQUESTS
        times each, one at a time; the server time of each from the request log."""
        url = await self.databases.fresh("pages")
        env = iap_env(url, free_port())
        password, email = "bench only password", "bench@council.example.org"
        agent = ["Bench Agent", "--email", email, "--role", "agent", "--password-stdin"]
        await run_checked([IAP, "staff", "create", *agent], env=env, stdin=password + "\n")
        name = "pages-gateway"
        async with (
            self.gateway(name, env, worker=False) as base,
            httpx.AsyncClient(base_url=base, timeout=10) as browser,
            httpx.AsyncClient(timeout=10, headers=API_HEADERS) as client,
        ):
            created = await client.post(f"{base}/v1/enquiries", json=PAGE_ENQUIRY)
            reference = created.json()["reference"]
            form = await browser.get("/console/sign-in")
            field = html.unescape(re.findall(r'name="csrf" value="([^"]+)"', form.text)[0])
            signed = await browser.post(
                "/console/sign-in",
                data={"csrf": field, "email": email, "password": password},
            )
            if signed.status_code != 303:
                raise RuntimeError(f"sign-in answered {signed.status_code}")
            paths = {"take-a-call form": "/console/calls/new?service=missed-bin"}
            paths["enquiry page"] = f"/console/enquiries/{reference}"
            for path in paths.values():
                for _ in range(PAGE_REQUESTS + 20):  # the first 20 warm it up, and are dropped
                    answer = await browser.get(path)
                    if answer.status_code != 200:
                        raise RuntimeError(f"GET {path} answered {answer.status_code}")
        routes = {"take-a-call form": "/console/calls/new"}
        routes["enquiry page"] = "/console/enquiries/{reference}"
        log = (self.procs.logs / f"{self.kind}-{name}.log").read_text(errors="replace")
        times: dict[str, list[float]] = {page: [] for page in routes}
        for line in log.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                for page, route in routes.items():
                    if entry.get("route") == route and entry.get("method") == "GET":
                        times[page].append(float(entry["duration_ms"]))
        result = PagesResult(
            {page: (percentile(t[20:], 50), percentile(t[20:], 95)) for page, t in times.items()}
        )
        for page, (p50, p95) in result.pages.items():
            print(f"  {page:18} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms (server time)", flush=True)
        return result

    async def measure(self) -> DatabaseFigures:
        """Every phase asked for; one that fails is reported with its error and the run goes
        on with the next."""
        print(f"{self.kind}:", flush=True)
        figures = DatabaseFigures(database=self.kind, version=await database_version(self.kind))
        steps: dict[str, Callable[[], Awaitable[object]]] = {
            "floor": self.floor_intake,
            "gateway": self.gateway_intake,
            "drain": self.drain,
            "latency": self.latency,
            "pages": self.pages,
        }
        for phase, step in steps.items():
            if phase not in self.phases:
                continue
            try:
                setattr(figures, phase, await step())
            except Exception as exc:  # any failure: reported, and the next phase still runs
                error = f"{type(exc).__name__}: {exc}".strip()
                figures.errors[phase] = error
                print(f"  {phase:8} FAILED {error}", flush=True)
                await self.procs.stop_all()
        return figures


def peak_rss_mb(pid: int) -> float | None:
    """A running process's peak resident memory so far (Linux's VmHWM), in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found[1]) / 1024 if found else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per timed intake run")
    parser.add_argument("--warm-up", type=float, default=3.0, help="seconds of warm-up per server")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--write", type=Path, help="write the results page here (Markdown)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--httpx", action="store_true", help="use the httpx generator, not wrk")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated, of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="`iap worker` processes in the drain (scale)"
    )
    parser.add_argument(
        "--api", type=int, default=1, help="API processes in the gateway's intake, load split"
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="profile the gateway's intake and the drain's workers with py-spy (installed "
        "apart), folded stacks in DIR",
    )
    args = parser.parse_args(argv)
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
        args.py_spy = args.py_spy.resolve()
    if not 1 <= args.duration <= 120 or not 0 <= args.warm_up <= 60:
        parser.error("--duration must be 1-120 s and --warm-up 0-60 s")
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(args.phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    if not 1 <= args.workers <= 16 or not 1 <= args.api <= 16:
        parser.error("--workers and --api must be 1-16")
    if args.api > CONNECTIONS:
        parser.error(f"--api must be at most {CONNECTIONS}, the connections split between them")
    return args


async def bench_database(
    kind: str, run: Run, procs: Processes, load: Load, workdir: Path, args: argparse.Namespace
) -> None:
    databases = Databases(kind, workdir)
    try:
        bench = Bench(
            procs,
            databases,
            load,
            run.duration,
            run.warm_up,
            phases=args.phases,
            workers=args.workers,
            apis=args.api,
            py_spy=args.py_spy,
        )
        run.figures.append(await bench.measure())
    finally:
        await procs.stop_all()
        await databases.drop_all()


async def main(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    pin = (
        not args.no_pin
        and shutil.which("taskset") is not None
        and len(os.sched_getaffinity(0)) >= 2
    )
    load_with_wrk = not args.httpx and ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="iap-bench-") as tmp:
        procs = Processes(Path(tmp), pin=pin)
        load = Load(procs, use_wrk=load_with_wrk)
        run = Run(args.duration, args.warm_up, load.tool, pin, machine(), args.workers, args.api)
        print(
            f"load generator: {load.tool}; {run.machine['cpus']} CPUs; pinned: {pin}; "
            f"load average {run.machine['load']}",
            flush=True,
        )
        kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
        for kind in kinds:
            await bench_database(kind, run, procs, load, Path(tmp), args)
    text = report(run)
    raw = save_raw(run)
    if args.write:
        write_report(args.write, text)
    print("\n" + text)
    print(f"raw results: {raw.relative_to(ROOT)}" + (f"; wrote {args.write}" if args.write else ""))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
