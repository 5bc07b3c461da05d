"""What the dispatcher and the webhook sender share: a pool of in-flight sends woken by new
work or a finished send, drained on stop, and the retry delay after a failed attempt."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import structlog

from app.core.logs import error_type

log = structlog.get_logger()


class WorkPool:
    """Tasks in flight, each sending one claimed row, and the wake-up the claim loop sleeps on."""

    def __init__(self, *, concurrency: int, name: str) -> None:
        self.concurrency = concurrency
        self.name = name
        self._wakeup = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], uuid.UUID] = {}

    def room(self, batch_size: int) -> int:
        """How many rows to claim now. Clears the wake-up first, so one that lands during the
        claim is not lost."""
        self._wakeup.clear()
        return min(self.concurrency - len(self._in_flight), batch_size)

    def holding(self) -> list[uuid.UUID]:
        """The ids of the rows in flight (a worker must not claim its own again)."""
        return list(self._in_flight.values())

    def start(self, row_id: uuid.UUID, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._in_flight[task] = row_id
        task.add_done_callback(self._finished)

    def wake(self) -> None:
        self._wakeup.set()

    async def sleep(self, seconds: float) -> None:
        """Until `seconds` pass, new work is announced, or a send finishes."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), seconds)

    async def drain(self, grace_seconds: float) -> None:
        """Let the sends in flight finish within the grace period; cancel the rest."""
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(list(self._in_flight), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wakeup.set()
        error = None if task.cancelled() else task.exception()
        if error is not None:
            # Its traceback, redacted (app.logs): an exception's repr may quote a row.
            log.error(f"{self.name}.task_failed", error=error_type(error), exc_info=error)


def retry_delay(
    schedule: list[float],
    attempt: int,
    *,
    jitter: float,
    retry_after: float | None,
    max_retry_after: float | None = None,
) -> timedelta:
    """The wait before the attempt after `attempt`: the schedule's, jittered, or longer if
    the other side asked (Retry-After, capped at `max_retry_after`)."""
    delay = schedule[min(attempt, len(schedule)) - 1] * random.uniform(1 - jitter, 1 + jitter)
    asked = retry_after or 0.0
    if max_retry_after is not None:
        asked = min(asked, max_retry_after)
    return timedelta(seconds=max(delay, asked))
