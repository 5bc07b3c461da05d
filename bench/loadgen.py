"""Load: wrk with bench/intake.lua, or a slower httpx generator when wrk cannot be had."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from harness import API_HEADERS, BENCH_DIR, LOAD_CPU, Processes, run_checked

BODY = {
    "service_code": "pothole",
    "description": "Deep pothole by the bus stop",
    "channel": "web",
    "location": {"postcode": "OX4 1AA"},
    "attributes": {"road_or_pavement": "road"},
}
CONNECTIONS = 32
MAX_ERROR_SHARE = 0.001  # a run with more non-2xx or socket errors than this is invalid


@dataclass
class LoadResult:
    """One timed load run against one server."""

    tool: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx/3xx responses plus socket errors
    raw: str = ""
    other_cpu: float = 0.0  # see harness.OtherCpu
    peak_rss_mb: float | None = None  # the server's peak resident memory (VmHWM)

    @property
    def valid(self) -> bool:
        return self.requests > 0 and self.errors <= MAX_ERROR_SHARE * self.requests


def ensure_wrk() -> bool:
    """wrk on PATH, installed with apt-get if need be; False if it cannot be had."""
    if shutil.which("wrk"):
        return True
    if shutil.which("apt-get") is None:
        return False
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if _quietly(install) != 0:
        _quietly(["apt-get", "update", "-q"])
        _quietly(install)
    return shutil.which("wrk") is not None


def _quietly(argv: list[str]) -> int:
    out = subprocess.DEVNULL
    try:
        return subprocess.run(argv, stdout=out, stderr=out, timeout=300, check=False).returncode
    except subprocess.TimeoutExpired:
        return 1


class Load:
    """Drives a URL with CONNECTIONS connections: wrk, or a slower httpx loop without it."""

    def __init__(self, procs: Processes, *, use_wrk: bool) -> None:
        self.procs = procs
        self.use_wrk = use_wrk

    @property
    def tool(self) -> str:
        if self.use_wrk:
            return "wrk"
        return "httpx in bench/run.py, not wrk (it caps req/s far below what wrk reaches)"

    async def run(self, url: str, seconds: float) -> LoadResult:
        if self.use_wrk:
            return await self.run_wrk(url, seconds)
        return await run_httpx(url, seconds)

    async def run_split(self, urls: Sequence[str], seconds: float) -> LoadResult:
        """CONNECTIONS split evenly between the urls, all driven at once: their req/s and
        requests summed, p50 weighted by requests, p99 the worst of them."""
        if not self.use_wrk:
            raise RuntimeError("a load split between several API processes needs wrk")
        share = CONNECTIONS // len(urls)
        results = await asyncio.gather(
            *(self.run_wrk(url, seconds, connections=share) for url in urls)
        )
        requests = sum(r.requests for r in results)
        return LoadResult(
            tool="wrk",
            requests=requests,
            seconds=max(r.seconds for r in results),
            rps=sum(r.rps for r in results),
            p50_ms=sum(r.p50_ms * r.requests for r in results) / max(requests, 1),
            p99_ms=max(r.p99_ms for r in results),
            errors=sum(r.errors for r in results),
            raw="\n".join(r.raw for r in results),
        )

    async def run_wrk(
        self, url: str, seconds: float, *, connections: int = CONNECTIONS
    ) -> LoadResult:
        argv = [
            *self.procs.pinned(LOAD_CPU),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "--latency",
            *[arg for name, value in API_HEADERS.items() for arg in ("-H", f"{name}: {value}")],
            "-s",
            str(BENCH_DIR / "intake.lua"),
            url,
            "--",
            json.dumps(BODY),
        ]
        output = await run_checked(argv, env=dict(os.environ), timeout=seconds + 30)
        return parse_wrk(output)


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _wrk_ms(output: str, label: str) -> float:
    match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if match is None:
        raise ValueError(f"no {label} latency in wrk output:\n{output}")
    return float(match[1]) * _WRK_UNITS[match[2]]


def parse_wrk(output: str) -> LoadResult:
    """Requests, req/s, p50 and p99 and errors from `wrk --latency` output."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if total is None or rps is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = (int(non_2xx[1]) if non_2xx else 0) + (
        sum(map(int, sockets.groups())) if sockets else 0
    )
    return LoadResult(
        tool="wrk",
        requests=int(total[1]),
        seconds=float(total[2]) * _WRK_UNITS[total[3]] / 1000,
        rps=float(rps[1]),
        p50_ms=_wrk_ms(output, "50%"),
        p99_ms=_wrk_ms(output, "99%"),
        errors=errors,
        raw=output,
    )


async def run_httpx(url: str, seconds: float) -> LoadResult:
    """The fallback generator: CONNECTIONS closed loops in this process, pinned to LOAD_CPU."""
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=CONNECTIONS)
    started = time.monotonic()
    deadline = started + seconds

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            try:
                response = await client.post(url, json=BODY)
                errors += response.status_code >= 400
            except httpx.HTTPError:
                errors += 1
            latencies.append((time.perf_counter() - sent) * 1000)

    try:
        async with httpx.AsyncClient(timeout=10, limits=limits, headers=API_HEADERS) as client:
            await asyncio.gather(*(loop(client) for _ in range(CONNECTIONS)))
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    elapsed = time.monotonic() - started
    return LoadResult(
        tool="httpx",
        requests=len(latencies),
        seconds=elapsed,
        rps=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        errors=errors,
    )


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


async def submit(client: httpx.AsyncClient, url: str) -> None:
    """One enquiry; it must be accepted with 201."""
    response = await client.post(url, json=BODY)
    if response.status_code != 201:
        raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:500]}")


async def submit_many(url: str, count: int, concurrency: int) -> None:
    """`count` enquiries, `concurrency` at a time."""
    queue = iter(range(count))
    # Idle connections are dropped before uvicorn's 5 s keep-alive closes them under us.
    limits = httpx.Limits(max_connections=concurrency, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=API_HEADERS) as client:

        async def loop() -> None:
            for _ in queue:
                for attempt in range(3):
                    try:
                        await submit(client, url)
                        break
                    except httpx.TransportError:
                        # A connection the server closed as it was reused (seen as ReadError
                        # in the drain phase): queueing goes on; the drain counts the rows.
                        if attempt == 2:
                            raise

        await asyncio.gather(*(loop() for _ in range(concurrency)))
