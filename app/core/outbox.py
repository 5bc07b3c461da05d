"""The outbox: durable work kept as rows, delivered by workers that claim them under a lease.

One lease queue for every kind of durable work. A claim is one UPDATE (on PostgreSQL over rows
taken with FOR UPDATE SKIP LOCKED); an attempt's result is written only while the lease is
still this worker's for this claim (the fence), so a worker that lost its lease cannot overwrite
the one that took it over; a worker killed at any moment leaves leased rows behind, claimed
again when the lease runs out; one stopping hands back what it still holds. Its users (the
dispatcher, the webhook sender) say only what is delivered and how an attempt's outcome is
classified.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import socket
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar

import asyncpg
import structlog
from sqlalchemy import ColumnElement, Row, Table, Update, and_, bindparam, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.db import is_postgres, reading, writing
from app.core.errors import LeaseLost
from app.core.logs import error_type
from app.core.models import utcnow
from app.core.settings import LeaseQueueSettings
from app.core.supervisor import beat
from app.core.vocabulary import OutboxState, Outcome

log = structlog.get_logger()


def new_row(*, now: datetime, **columns: Any) -> dict[str, Any]:
    """A new outbox row, due at once; `columns` are what the kind of work adds (its target)."""
    return {
        "id": uuid.uuid4(),
        **columns,
        "state": OutboxState.pending,
        "attempts": 0,
        "claims": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def redriven(*, now: datetime) -> dict[str, Any]:
    """The columns that send a given-up row again after its cause was fixed: due at once, its
    attempts counted afresh, no lease, no error (the attempt log keeps the old ones)."""
    return {
        "state": OutboxState.pending,
        "attempts": 0,
        "claims": 0,
        "next_attempt_at": now,
        "lease_owner": None,
        "lease_until": None,
        "last_error": None,
        "updated_at": now,
    }


# Where an attempt's outcome leaves its row; any other outcome is tried again.
_STATE_AFTER = {
    Outcome.delivered: OutboxState.delivered,
    Outcome.dead: OutboxState.dead,
    Outcome.cancelled: OutboxState.cancelled,
    Outcome.disable: OutboxState.dead,
}


def finished(
    outcome: Outcome,
    *,
    attempt: int,
    now: datetime,
    error: str | None,
    retry_in: Callable[[], timedelta],
) -> dict[str, Any]:
    """A row's values once an attempt has ended: its lease let go, the attempt counted, and
    its new state; pending again, due after `retry_in()`."""
    state = _STATE_AFTER.get(outcome, OutboxState.pending)
    values: dict[str, Any] = {
        "state": state,
        "attempts": attempt,
        "lease_owner": None,
        "lease_until": None,
        "last_error": error,
        "updated_at": now,
    }
    if state is OutboxState.delivered:
        values["delivered_at"] = now
    elif state is OutboxState.pending:
        values["next_attempt_at"] = now + retry_in()
    return values


def new_worker_id() -> str:
    """Unique per process and start: host, pid and a random tail."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A row claimed by this worker, and which claim of that row it is: a lease that ran out
    and was taken again has a higher number (the fence)."""

    row_id: uuid.UUID
    claims: int


@dataclass(frozen=True)
class Result:
    """How one attempt ended; each kind of work adds what it learnt."""

    kind: Outcome
    error: str | None = None
    retry_after: float | None = None  # the other side asked us to wait this long


ClaimT = TypeVar("ClaimT", bound=Claim)


class LeaseQueue(ABC, Generic[ClaimT]):
    """Claims due rows of `table` under a lease and delivers each in a task of its own, until
    stopped; any number of workers may share one database."""

    table: ClassVar[Table]
    name: ClassVar[str]  # of its log events: `dispatcher.started`
    # The columns a claim holds besides row_id and claims, named as its fields.
    claim_columns: ClassVar[tuple[ColumnElement[Any], ...]]
    # The PostgreSQL channel whose NOTIFY wakes every worker's queue (app.core.db); None: the
    # queue finds new rows at its next poll.
    channel: ClassVar[str | None] = None

    def __init__(
        self, *, engine: AsyncEngine, settings: LeaseQueueSettings, worker_id: str | None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.worker_id = worker_id or new_worker_id()
        self._stopping = asyncio.Event()
        self._pool = WorkPool(concurrency=settings.concurrency, name=self.name)
        self._listener = (
            Listener(engine, self.channel, self.wake, name=self.name) if self.channel else None
        )

    # --- what each kind of work says ----------------------------------------------------------

    async def _claimable(self, now: datetime) -> list[ColumnElement[bool]]:
        """What a due row must also meet to be claimed now: nothing more, by default."""
        return []

    async def _claim_limit(self, wanted: int) -> int:
        """How many rows to claim now, of the `wanted` this worker has room for: all of them,
        by default."""
        return wanted

    def _waiting(self) -> list[ColumnElement[bool]]:
        """What a pending row must meet to count for the next due time: nothing more."""
        return []

    @abstractmethod
    async def _claimed(self, rows: Sequence[Row[Any]], lease_until: datetime) -> list[ClaimT]:
        """The claims of the rows just claimed (row_id, claims and `claim_columns`), less any
        handed back at once."""

    @abstractmethod
    async def _deliver(self, claim: ClaimT) -> None:
        """Make one attempt and record its outcome."""

    @abstractmethod
    def _grace_seconds(self) -> float:
        """How long deliveries in flight may finish once stop() is called."""

    def _released(self, now: datetime) -> dict[str, Any]:
        """What a row handed back at shutdown is given besides being pending and unleased:
        when it is next due, and whether the claim cut off still counts. By default it is due
        at once and the claim cut off is not counted as an attempt."""
        return {"claims": self.table.c.claims - 1, "next_attempt_at": now}

    async def _starting(self) -> None:
        """Before the first claim of run(): listen on the queue's channel."""
        if self._listener is not None:
            await self._listener.start()

    async def _stopped(self) -> None:
        """After run() has handed its leases back."""
        if self._listener is not None:
            await self._listener.stop()

    async def _prepare(self) -> None:
        """Before each claim of run(): listen again if the connection was lost."""
        if self._listener is not None:
            await self._listener.keep()

    def _longest_sleep(self) -> float:
        """The longest run() sleeps with no work due."""
        return self.settings.poll_seconds

    # --- the loop -----------------------------------------------------------------------------

    def wake(self) -> None:
        """New work is waiting: claim it now rather than at the next poll."""
        self._pool.wake()

    async def stop(self) -> None:
        """Stop claiming; in-flight deliveries get the grace period, then their leases go back."""
        self._stopping.set()
        self._pool.wake()

    async def run(self) -> None:
        """Claim and deliver until stop() is called."""
        await self._starting()
        log.info(f"{self.name}.started", worker=self.worker_id)
        try:
            while not self._stopping.is_set():
                try:
                    await self._turn()
                    beat()
                except (SQLAlchemyError, OSError) as exc:
                    # The database is unreachable: nothing is lost, try again after a pause.
                    log.warning(f"{self.name}.claim_failed", error=type(exc).__name__)
                    await self._pool.sleep(self.settings.poll_seconds)
        finally:
            await self._pool.drain(self._grace_seconds())
            await self._release_leases()
            await self._stopped()
            log.info(f"{self.name}.stopped", worker=self.worker_id)

    async def run_until_idle(self) -> None:
        """Deliver everything due now, waiting for each attempt (for tests and one-off runs)."""
        while claimed := await self._claim(self.settings.batch_size):
            await asyncio.gather(*(self._deliver(c) for c in claimed))

    async def _turn(self) -> None:
        await self._prepare()
        wanted = self._pool.room(self.settings.batch_size)
        if wanted > 0:
            wanted = await self._claim_limit(wanted)
        claimed = await self._claim(wanted) if wanted > 0 else []
        for claim in claimed:
            self._pool.start(claim.row_id, self._deliver(claim))
        if wanted == 0:
            await self._pool.sleep(self.settings.poll_seconds)  # a finished delivery wakes us
        elif len(claimed) < wanted:
            await self._pool.sleep(await self._seconds_until_due())

    # --- the lease ----------------------------------------------------------------------------

    async def _claim(self, limit: int) -> list[ClaimT]:
        c, now = self.table.c, utcnow()
        due = (
            select(c.id)
            .where(
                or_(
                    and_(c.state == OutboxState.pending, c.next_attempt_at <= now),
                    and_(c.state == OutboxState.delivering, c.lease_until < now),
                )
            )
            .order_by(c.next_attempt_at)
            .limit(limit)
        )
        if holding := self._pool.holding():
            # Our own call may outlive its lease; it must not be sent a second time alongside.
            due = due.where(c.id.not_in(holding))
        due = due.where(*await self._claimable(now))
        if is_postgres(self.engine):
            due = due.with_for_update(of=self.table, skip_locked=True)
        lease_until = now + timedelta(seconds=self.settings.lease_seconds)
        claim = (
            update(self.table)
            .where(c.id.in_(due.scalar_subquery()))
            .values(
                state=OutboxState.delivering,
                lease_owner=self.worker_id,
                lease_until=lease_until,
                claims=c.claims + 1,
                updated_at=now,
            )
            .returning(c.id.label("row_id"), c.claims, *self.claim_columns)
        )
        async with writing(self.engine) as conn:
            rows = (await conn.execute(claim)).all()
        return await self._claimed(rows, lease_until) if rows else []

    async def _settle(self, conn: AsyncConnection, claim: ClaimT, values: dict[str, Any]) -> bool:
        """Write an attempt's result while the lease is still ours; False if it is not."""
        parameters: dict[str, Any] = {f"set_{name}": value for name, value in values.items()}
        parameters |= {
            "fence_row": claim.row_id,
            "fence_owner": self.worker_id,
            "fence_claims": claim.claims,
        }
        updated = await conn.execute(_fenced_update(self.table, tuple(values)), parameters)
        return bool(updated.rowcount)

    async def _extend(self, claim: ClaimT, now: datetime) -> datetime | None:
        """Hold this claim's lease for another lease_seconds; None if it is no longer ours."""
        until = now + timedelta(seconds=self.settings.lease_seconds)
        async with writing(self.engine) as conn:
            extended = await self._settle(conn, claim, {"lease_until": until})
        return until if extended else None

    async def extend_lease(self, claim: ClaimT, now: datetime) -> datetime:
        """Hold this claim's lease for another lease_seconds, or raise LeaseLost."""
        until = await self._extend(claim, now)
        if until is None:
            raise LeaseLost("the lease ran out and another worker took this work")
        return until

    async def _hand_back(self, when: datetime, *claims: ClaimT) -> None:
        """Give claims back unattempted, due at `when`: they spend no attempt. One
        transaction for them all."""
        values = {"state": OutboxState.pending, "lease_owner": None, "lease_until": None}
        async with writing(self.engine) as conn:
            for claim in claims:
                # The fence holds claims at this claim's number: one less is the last one's.
                again = {"claims": claim.claims - 1, "next_attempt_at": when}
                await self._settle(conn, claim, values | again)

    async def _release_leases(self) -> None:
        """Hand back what we still hold at shutdown, so another worker can take it without
        waiting for the lease to run out."""
        c, now = self.table.c, utcnow()
        async with writing(self.engine) as conn:
            released = await conn.execute(
                update(self.table)
                .where(c.lease_owner == self.worker_id, c.state == OutboxState.delivering)
                .values(
                    state=OutboxState.pending,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                    **self._released(now),
                )
            )
        if released.rowcount:
            log.info(f"{self.name}.leases_released", count=released.rowcount)

    async def _seconds_until_due(self) -> float:
        """Until the next row falls due or a lease runs out, at most _longest_sleep()."""
        c = self.table.c
        async with reading(self.engine) as conn:
            next_due = await conn.scalar(
                select(func.min(c.next_attempt_at)).where(
                    c.state == OutboxState.pending, *self._waiting()
                )
            )
            next_expiry = await conn.scalar(
                select(func.min(c.lease_until)).where(c.state == OutboxState.delivering)
            )
        due: list[datetime] = [t for t in (next_due, next_expiry) if t is not None]
        longest = self._longest_sleep()
        if not due:
            return longest
        wait = (min(due) - utcnow()).total_seconds()
        return max(0.0, min(wait + 0.01, longest))

    # --- retries ------------------------------------------------------------------------------

    def _gave_up(self, result: Result, attempt: int) -> str | None:
        """The error to mark a row dead with when its retry would pass max_attempts."""
        if result.kind is Outcome.retry and attempt >= self.settings.max_attempts:
            return f"gave up after {attempt} attempts: {result.error}"
        return None

    def _backoff(
        self, attempt: int, retry_after: float | None, max_retry_after: float | None = None
    ) -> timedelta:
        """The wait after failed attempt number `attempt`: the schedule's, jittered, or longer
        if the other side asked (Retry-After, capped at `max_retry_after`)."""
        schedule, jitter = self.settings.retry_schedule, self.settings.jitter
        delay = schedule[min(attempt, len(schedule)) - 1] * random.uniform(1 - jitter, 1 + jitter)
        asked = retry_after or 0.0
        if max_retry_after is not None:
            asked = min(asked, max_retry_after)
        return timedelta(seconds=max(delay, asked))


@functools.cache
def _fenced_update(table: Table, columns: tuple[str, ...]) -> Update:
    """UPDATE `columns` of a row (bound as set_<column>) while its lease is still the
    claim's: this worker's, at this claim's number (which fences off a lease that ran out and
    was taken again). Built once per table and set of columns."""
    c = table.c
    return (
        update(table)
        .where(
            c.id == bindparam("fence_row"),
            c.lease_owner == bindparam("fence_owner"),
            c.claims == bindparam("fence_claims"),
            c.state == OutboxState.delivering,
        )
        .values({name: bindparam(f"set_{name}") for name in columns})
    )


class LeaseFence(Generic[ClaimT]):
    """Checked before every call that may make something at the other side (a case, an
    update): the lease must still be ours with room for the call to end and the other side to
    settle before it runs out, so that a worker that takes the work over after the lease looks
    up what is already there. Within that room no query is needed; past it the lease is
    extended, or LeaseLost is raised."""

    def __init__(
        self,
        queue: LeaseQueue[ClaimT],
        claim: ClaimT,
        *,
        lease_until: datetime,
        room_seconds: float,
    ) -> None:
        self.queue = queue
        self.claim = claim
        self.until = lease_until
        self.room = timedelta(seconds=room_seconds)

    async def check(self) -> None:
        """Raise LeaseLost unless this worker may make a call now."""
        now = utcnow()
        if self.until - now < self.room:
            self.until = await self.queue.extend_lease(self.claim, now)


class Listener:
    """On PostgreSQL, LISTEN on `channel` and call `on_notify` at each NOTIFY (new work was
    committed somewhere); reconnected when its connection drops. On SQLite, nothing: polling
    finds the work."""

    RELISTEN_SECONDS = 5.0

    def __init__(
        self, engine: AsyncEngine, channel: str, on_notify: Callable[[], None], *, name: str
    ) -> None:
        self.engine = engine
        self.channel = channel
        self.on_notify = on_notify
        self.name = name
        self._connection: asyncpg.Connection | None = None
        self._listened_at = 0.0

    async def start(self) -> None:
        """Listen from now on."""
        await self._listen()
        self._listened_at = asyncio.get_running_loop().time()

    async def keep(self) -> None:
        """Reconnect LISTEN if its connection dropped (at most every few seconds)."""
        if not is_postgres(self.engine):
            return
        if self._connection is not None and not self._connection.is_closed():
            return
        now = asyncio.get_running_loop().time()
        if now - self._listened_at < self.RELISTEN_SECONDS:
            return
        self._listened_at = now
        await self.stop()
        await self._listen()

    async def stop(self) -> None:
        """Stop listening."""
        if self._connection is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await self._connection.close()
            self._connection = None

    async def _listen(self) -> None:
        if not is_postgres(self.engine):
            return
        url = self.engine.url.set(drivername="postgresql")
        try:
            self._connection = await asyncpg.connect(url.render_as_string(hide_password=False))
            await self._connection.add_listener(self.channel, lambda *_: self.on_notify())
        except (OSError, asyncpg.PostgresError) as exc:
            # Polling still finds the work; only the instant wake-up is lost.
            log.warning(f"{self.name}.listen_failed", error=type(exc).__name__)
            self._connection = None


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
            # Its traceback, redacted (app.core.logs): an exception's repr may quote a row.
            log.error(f"{self.name}.task_failed", error=error_type(error), exc_info=error)
