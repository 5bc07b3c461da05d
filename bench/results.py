"""Results, targets and the Markdown page (docs/performance.md) that shows them."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from harness import BENCH_DIR, ROOT
from loadgen import CONNECTIONS, MAX_ERROR_SHARE, LoadResult

DRAIN_ENQUIRIES = 2000
LATENCY_ENQUIRIES = 200
# Issue 16's targets, by database.
TARGET_THROUGHPUT = {"sqlite": 0.5, "postgres": 0.7}  # gateway req/s at least this x the floor's
TARGET_P99 = 3.0  # gateway p99 at most this times the floor's
TARGET_DRAIN_PER_WORKER = {"sqlite": 300.0, "postgres": 500.0}  # dispatches/s per worker
TARGET_DELIVERED_P50_MS = 10.0
TARGET_RSS_MB = 200.0  # an API process's peak resident memory under the intake load
PAGE_REQUESTS = 200
TARGET_PAGE_P95_MS = 50.0  # issue 13: the console's pages render in under 50 ms server time
NOTES_MARKER = "<!-- Everything below this line is kept when bench/run.py rewrites the file. -->"


# The phases of one database, in the order they run.
PHASES = ("floor", "gateway", "drain", "latency", "pages")


@dataclass
class DrainResult:
    dispatches: int
    seconds: float
    other_cpu: float = 0.0
    workers: int = 1
    worker_cpu_seconds: float = 0.0  # the workers' CPU time, start-up included

    @property
    def rate(self) -> float:
        return self.dispatches / self.seconds

    @property
    def per_cpu_second(self) -> float:
        """Dispatches per second of the workers' own CPU: what one worker would reach with a
        core to itself, if the database kept up."""
        return self.dispatches / self.worker_cpu_seconds if self.worker_cpu_seconds else 0.0

    @property
    def per_worker(self) -> float:
        return self.rate / self.workers


@dataclass
class LatencyResult:
    enquiries: int
    p50_ms: float
    p99_ms: float
    other_cpu: float = 0.0


@dataclass
class PagesResult:
    pages: dict[str, tuple[float, float]]  # page -> (p50 ms, p95 ms) server time


@dataclass
class DatabaseFigures:
    """What was measured on one database; a phase not run, or failed, is None (a failed
    one's error is in `errors`)."""

    database: str
    floor: LoadResult | None = None
    gateway: LoadResult | None = None
    drain: DrainResult | None = None
    latency: LatencyResult | None = None
    pages: PagesResult | None = None
    version: str = ""
    errors: dict[str, str] = field(default_factory=dict)  # phase -> what went wrong

    @property
    def rps_ratio(self) -> float | None:
        if self.gateway is None or self.floor is None:
            return None
        return self.gateway.rps / self.floor.rps

    @property
    def p99_ratio(self) -> float | None:
        if self.gateway is None or self.floor is None:
            return None
        return self.gateway.p99_ms / self.floor.p99_ms


@dataclass
class Run:
    duration: float
    warm_up: float
    tool: str
    pinned: bool
    machine: dict[str, str]
    workers: int = 1  # `iap worker` processes in the drain
    apis: int = 1  # API processes in the gateway's intake
    figures: list[DatabaseFigures] = field(default_factory=list)


def code_version() -> str:
    """The commit measured, and whether app/ differs from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    changed = subprocess.run([*git, "status", "--porcelain", "--", "app"], capture_output=True)
    dirty = " with uncommitted changes in app/" if changed.stdout.strip() else ""
    return f"commit {head.stdout.strip()}{dirty}"


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu": model[1].strip() if model else platform.processor() or "unknown",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": code_version(),
        # Other work on the machine skews every figure; this shows whether there was any.
        "load": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def targets(figures: DatabaseFigures) -> list[tuple[bool, str]]:
    """Each target of the phases run with whether it was met; a failed phase meets none,
    and a run with too many errors meets no intake target."""
    checks = intake_targets(figures)
    if (drain := figures.drain) is not None:
        floor = TARGET_DRAIN_PER_WORKER[figures.database]
        checks.append(
            (
                drain.per_worker >= floor,
                f"drain {drain.per_worker:.0f} dispatches/s per worker (target ≥ {floor:.0f})",
            )
        )
    if (latency := figures.latency) is not None:
        checks.append(
            (
                latency.p50_ms <= TARGET_DELIVERED_P50_MS,
                f"accepted→delivered p50 {latency.p50_ms:.1f} ms "
                f"(target ≤ {TARGET_DELIVERED_P50_MS:.0f} ms)",
            )
        )
    checks += [
        (
            p95 <= TARGET_PAGE_P95_MS,
            f"{page} p95 {p95:.1f} ms server time (target ≤ {TARGET_PAGE_P95_MS:.0f} ms)",
        )
        for page, (_, p95) in (figures.pages.pages.items() if figures.pages else [])
    ]
    checks += [(False, f"{phase} phase failed: {error}") for phase, error in figures.errors.items()]
    return checks


def intake_targets(figures: DatabaseFigures) -> list[tuple[bool, str]]:
    rps, p99 = figures.rps_ratio, figures.p99_ratio
    if figures.floor is None or figures.gateway is None or rps is None or p99 is None:
        return []
    valid = figures.floor.valid and figures.gateway.valid
    note = "" if valid else " (invalid run: errors over 0.1%)"
    floor = TARGET_THROUGHPUT[figures.database]
    rss = figures.gateway.peak_rss_mb
    memory = (
        []
        if rss is None
        else [
            (
                rss < TARGET_RSS_MB,
                f"API process peak RSS {rss:.0f} MB (target < {TARGET_RSS_MB:.0f})",
            )
        ]
    )
    return [
        *memory,
        (
            valid and rps >= floor,
            f"intake req/s {rps:.2f} x floor (target ≥ {floor}){note}",
        ),
        (
            valid and p99 <= TARGET_P99,
            f"intake p99 {p99:.2f} x floor (target ≤ {TARGET_P99}){note}",
        ),
    ]


def intake_rows(figures: DatabaseFigures) -> list[list[str]]:
    rps, p99 = figures.rps_ratio, figures.p99_ratio
    ratios = [f"{rps:.2f}", f"{p99:.2f}"] if rps is not None and p99 is not None else ["", ""]
    rows = [
        load_row(figures.database, server, result, ratios if server != "floor" else ["", ""])
        for server, result in (("floor", figures.floor), ("gateway", figures.gateway))
        if result is not None
    ]
    return rows + [
        [figures.database, phase, "failed", "", "", "", "", error, "", ""]
        for phase, error in figures.errors.items()
        if phase in ("floor", "gateway")
    ]


def load_row(database: str, server: str, result: LoadResult, ratios: list[str]) -> list[str]:
    figures = [f"{result.rps:.0f}", f"{result.p50_ms:.2f}", f"{result.p99_ms:.2f}"]
    errors = f"{result.errors} of {result.requests}"
    rss = f"{result.peak_rss_mb:.0f}" if result.peak_rss_mb is not None else ""
    return [database, server, *figures, *ratios, errors, rss, f"{result.other_cpu:.1%}"]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def report(run: Run) -> str:
    """The whole results page as Markdown (also what the console shows)."""
    lines = [
        "# Performance",
        "",
        "Written by `bench/run.py`; do not edit the figures by hand, run it again:",
        "",
        "    .venv/bin/python bench/run.py --db both --write docs/performance.md",
        "",
        *section("Machine", machine_lines(run)),
        *section("Method", method_lines(run)),
        *section("Intake", markdown_table(INTAKE_HEADER, rows(run, intake_rows))),
        *section("Delivery", markdown_table(DELIVERY_HEADER, rows(run, delivery_rows))),
        *section("Targets", target_lines(run)),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


INTAKE_HEADER = [
    "database",
    "server",
    "req/s",
    "p50 ms",
    "p99 ms",
    "req/s ÷ floor",
    "p99 ÷ floor",
    "errors",
    "peak RSS MB",
    "other CPU",
]
DELIVERY_HEADER = ["database", "measure", "figure", "over", "other CPU"]
BUSY_SHARE = 0.05  # other CPU above this makes a figure suspect


def rows(run: Run, of: Callable[[DatabaseFigures], list[list[str]]]) -> list[list[str]]:
    return [row for figures in run.figures for row in of(figures)]


def section(title: str, lines: list[str]) -> list[str]:
    return [f"## {title}", "", *lines, ""]


def machine_lines(run: Run) -> list[str]:
    m = run.machine
    versions = ", ".join(f.version for f in run.figures if f.version)
    return [
        f"- {m['cpus']} CPUs: {m['cpu']}",
        f"- Python {m['python']}, {m['os']}; {versions}",
        f"- Run on {m['date']}; load average before the run {m['load']} (1 / 5 / 15 min)",
        f"- Code: {m['code']}; load generator: {run.tool}",
    ]


def method_lines(run: Run) -> list[str]:
    pinning = (
        "the server on CPU 0, the load generator on CPU 1 (`taskset`), PostgreSQL on either"
        if run.pinned
        else "no CPU pinning"
    )
    return [
        "- Intake: the floor (`bench/floor.py`: FastAPI, the gateway's `EnquiryIn` body model, "
        "one raw INSERT per request; aiosqlite with the gateway's PRAGMAs on one connection, or "
        "an asyncpg pool), then the gateway (`iap serve --no-worker --no-sandbox`"
        f"{apis(run.apis)}); one uvicorn worker each, both run as `iap serve` runs (asyncio.run, "
        "its garbage-collector settings), one after the other, each on a fresh database "
        "migrated by `iap migrate`.",
        f"- Each server gets {run.warm_up:g} s of warm-up, then {run.duration:g} s of "
        f"{CONNECTIONS} connections POSTing a valid `pothole` enquiry; {pinning}.",
        f"- A run with over {MAX_ERROR_SHARE:.1%} non-2xx or socket errors fails the intake "
        "targets.",
        f"- Drain: {DRAIN_ENQUIRIES} enquiries queued with no worker, then a sandbox back-office "
        f"and {workers(run.workers)}; dispatches/s from the first worker's `dispatcher.started` "
        "log line until every dispatch is `delivered`.",
        "- Accepted→delivered: `iap serve` with its in-process worker and a sandbox; "
        f"{LATENCY_ENQUIRIES} enquiries one at a time, each delivered before the next is sent; "
        "`dispatch.delivered_at - created_at`.",
        f"- Console pages: an agent signed in (`iap staff create`, the sign-in form); the "
        f"take-a-call form and an enquiry page each fetched {PAGE_REQUESTS} times one at a "
        "time after 20 to warm up; the server time of each from the gateway's request log "
        "(`duration_ms`).",
        "- Other CPU: the share of all CPUs used during a timed part by anything but this run's "
        "processes, PostgreSQL and kernel threads, hypervisor steal included (from /proc). Above "
        f"{BUSY_SHARE:.0%} the figure is marked suspect.",
    ]


def apis(count: int) -> str:
    if count == 1:
        return ""
    return f", {count} processes on ports of their own, the connections split between them"


def workers(count: int) -> str:
    if count == 1:
        return "one `iap worker`"
    return f"{count} `iap worker` processes on one database, each on a core in turn"


def target_lines(run: Run) -> list[str]:
    verdicts = [
        f"- **{verdict(ok)}** {f.database}: {text}" for f in run.figures for ok, text in targets(f)
    ]
    return verdicts + busy_lines(run)


def delivery_rows(f: DatabaseFigures) -> list[list[str]]:
    rows: list[list[str]] = []
    if (drain := f.drain) is not None:
        workers = "" if drain.workers == 1 else f" by {drain.workers} workers"
        per = "" if drain.workers == 1 else f" ({drain.per_worker:.0f} per worker)"
        rows.append(
            [
                f.database,
                "drain",
                f"{drain.rate:.0f} dispatches/s{per}",
                f"{drain.dispatches} dispatches in {drain.seconds:.1f} s{workers}; "
                f"{drain.per_cpu_second:.0f} per worker CPU second",
                f"{drain.other_cpu:.1%}",
            ]
        )
    if (latency := f.latency) is not None:
        rows.append(
            [
                f.database,
                "accepted→delivered",
                f"p50 {latency.p50_ms:.1f} ms, p99 {latency.p99_ms:.1f} ms",
                f"{latency.enquiries} enquiries, one at a time",
                f"{latency.other_cpu:.1%}",
            ]
        )
    rows += [
        [
            f.database,
            f"console {page}",
            f"p50 {p50:.1f} ms, p95 {p95:.1f} ms server time",
            f"{PAGE_REQUESTS} requests, one at a time, signed in",
            "",
        ]
        for page, (p50, p95) in (f.pages.pages.items() if f.pages else [])
    ]
    return rows + [
        [f.database, phase, "failed", error, ""]
        for phase, error in f.errors.items()
        if phase in ("drain", "latency", "pages")
    ]


def busy_lines(run: Run) -> list[str]:
    """A warning for each figure taken while other work used the machine."""
    shares = {
        f"{f.database} {name}": result.other_cpu
        for f in run.figures
        for name, result in (
            ("floor", f.floor),
            ("gateway", f.gateway),
            ("drain", f.drain),
            ("accepted→delivered", f.latency),
        )
        if result is not None
    }
    return [
        f"- **Suspect**: other processes used {share:.0%} of the CPU during {name}; run again "
        "on a quiet machine."
        for name, share in shares.items()
        if share > BUSY_SHARE
    ]


def write_report(path: Path, text: str) -> None:
    """Write the page, keeping whatever follows NOTES_MARKER in the old one."""
    kept = ""
    if path.exists() and NOTES_MARKER in (old := path.read_text()):
        kept = old.split(NOTES_MARKER, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n{NOTES_MARKER}{kept or chr(10)}")


def save_raw(run: Run) -> Path:
    """Everything measured, with wrk's own output, in bench/results/ (not committed)."""
    folder = BENCH_DIR / "results"
    folder.mkdir(exist_ok=True)
    path = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(asdict(run), indent=2) + "\n")
    return path
