"""The supervisor of the background loops (dispatcher, poller, webhook sender, retention): it
runs them together, restarts one that raises, and tells /readyz how each is doing.

A loop that raises something unexpected is logged under its name and restarted after a
backoff (restart_min_seconds, doubled for each failure in a row, at most restart_max_seconds);
the process goes on. Stopping the process instead was the other choice, and is worse here:
`iap serve` runs the loops beside the API, so one poller bug would cut off intake and every
delivery in flight in the other loops, and a failure that comes back at each start (one row
that trips a bug) would make the orchestrator restart the whole process again and again, which
is this backoff made coarser. What must never happen is a loop that stops quietly while intake
goes on accepting: so each crash is logged with its loop's name and error type, the loop is
reported down (`restarting`) until it runs again, and a loop whose turns keep failing, or that
has hung, goes stale; either way /readyz answers 503 and names it, for the orchestrator's
readiness probe and the operator's alert.

A loop reports each successful turn with `beat()`; a turn that ends in a wait which ends
normally (a timer, or a NOTIFY waking it) counts, so an idle loop stays alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from app.core.logs import error_type
from app.core.settings import LoopSettings

log = structlog.get_logger()


class LoopState(enum.StrEnum):
    running = "running"
    restarting = "restarting"  # it raised; waiting out the backoff before it runs again
    finished = "finished"  # it returned by itself: nothing to do (the poller with none to poll)
    stopped = "stopped"  # stop() was called


@dataclass(frozen=True)
class Supervised:
    """One loop: its name, how to run it, and the longest it waits between two turns when idle
    (so that waiting is not mistaken for hanging)."""

    name: str
    run: Callable[[], Awaitable[None]]
    idle_seconds: float


@dataclass
class Liveness:
    """What the supervisor knows of one loop: times are monotonic seconds."""

    loop: Supervised
    state: LoopState = LoopState.running
    started: float = field(default_factory=time.monotonic)
    last_turn: float | None = None
    last_turn_at: datetime | None = None
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str | None = None

    def beat(self) -> None:
        self.last_turn = time.monotonic()
        self.last_turn_at = datetime.now(UTC)
        self.failures_in_a_row = 0

    def seconds_since_turn(self, now: float) -> float:
        return now - (self.last_turn if self.last_turn is not None else self.started)


_current: ContextVar[Liveness | None] = ContextVar("iap_supervised_loop", default=None)


def beat() -> None:
    """Record a successful turn of the loop this is called from (nothing when unsupervised,
    as in a test's run_until_idle)."""
    liveness = _current.get()
    if liveness is not None:
        liveness.beat()


@dataclass(frozen=True)
class LoopReport:
    """One loop as /readyz shows it."""

    name: str
    state: LoopState
    alive: bool
    last_turn_at: datetime | None
    seconds_since_turn: float
    restarts: int
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "alive": self.alive,
            "last_turn_at": self.last_turn_at.isoformat() if self.last_turn_at else None,
            "seconds_since_turn": round(self.seconds_since_turn, 1),
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


class Supervisor:
    """Runs every loop in one TaskGroup until stop(); see the module's docstring."""

    def __init__(self, loops: list[Supervised], settings: LoopSettings) -> None:
        self.settings = settings
        self.loops = [Liveness(loop) for loop in loops]
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Run the loops until each has stopped or finished."""
        async with asyncio.TaskGroup() as group:
            for liveness in self.loops:
                group.create_task(self._keep_running(liveness), name=liveness.loop.name)

    def stop(self) -> None:
        """Restart nothing from now on (the loops themselves are stopped by their owner)."""
        self._stopping.set()

    def report(self) -> list[LoopReport]:
        now = time.monotonic()
        return [self._report(liveness, now) for liveness in self.loops]

    def _report(self, liveness: Liveness, now: float) -> LoopReport:
        since = liveness.seconds_since_turn(now)
        stale = since > liveness.loop.idle_seconds + self.settings.stale_seconds
        alive = liveness.state is LoopState.finished or (
            liveness.state is LoopState.running and not stale
        )
        return LoopReport(
            name=liveness.loop.name,
            state=liveness.state,
            alive=alive,
            last_turn_at=liveness.last_turn_at,
            seconds_since_turn=since,
            restarts=liveness.restarts,
            last_error=liveness.last_error,
        )

    async def _keep_running(self, liveness: Liveness) -> None:
        _current.set(liveness)  # this task's own context: beat() in the loop finds it
        while not self._stopping.is_set():
            liveness.state = LoopState.running
            try:
                await liveness.loop.run()
            except Exception as exc:
                if self._stopping.is_set():
                    log.error(
                        "supervisor.loop_failed_stopping",
                        loop=liveness.loop.name,
                        error=error_type(exc),
                        exc_info=exc,
                    )
                    break
                await self._backoff(liveness, exc)
            else:
                if not self._stopping.is_set():
                    liveness.state = LoopState.finished
                    log.info("supervisor.loop_finished", loop=liveness.loop.name)
                    return
        liveness.state = LoopState.stopped

    async def _backoff(self, liveness: Liveness, error: Exception) -> None:
        """Log the failure (its type and redacted traceback: a message may quote a row), then
        wait before the next run, longer for each failure in a row."""
        liveness.state = LoopState.restarting
        liveness.restarts += 1
        liveness.failures_in_a_row += 1
        liveness.last_error = error_type(error)
        delay = min(
            self.settings.restart_min_seconds * 2 ** (liveness.failures_in_a_row - 1),
            self.settings.restart_max_seconds,
        )
        log.error(
            "supervisor.loop_failed",
            loop=liveness.loop.name,
            error=liveness.last_error,
            restarts=liveness.restarts,
            restart_in_seconds=delay,
            exc_info=error,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
