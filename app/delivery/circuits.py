"""A circuit breaker per organisation, kept in the database so every dispatcher shares it.

Attempts are counted over a window (`circuit_window_seconds`): `circuit_failures` failed ones,
if no fewer than those that succeeded, open it. Counting per window rather than consecutive
outcomes keeps calls that were in flight together from tripping it on one bad moment. While
open, that organisation's dispatches are not claimed (they wait instead of spending attempts);
after the cool-down one trial delivery is let through, and its outcome closes the circuit or
opens it again. Once closed, calls ramp up: one at a time, then two, four, ... as each
succeeds, so the backlog does not land on a back-office that has only just recovered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.db import reading, writing
from app.core.models import circuit_table, utcnow
from app.core.settings import DispatchSettings
from app.core.vocabulary import BreakerChange, BreakerState

c = circuit_table.c
# A ramp past this many calls at once is no ramp.
RAMP_CEILING = 256


@dataclass(frozen=True)
class CircuitState:
    state: str  # a BreakerState
    failures: int
    open_until: datetime | None
    last_error: str | None


def open_now(now: datetime) -> Select[tuple[str]]:
    """The organisations whose circuit is open at this moment."""
    return select(c.organisation_id).where(c.opened_until > now)


async def ensure(engine: AsyncEngine, organisation_ids: list[str]) -> None:
    """One closed circuit for every organisation that has none yet."""
    async with reading(engine) as conn:
        known = set((await conn.execute(select(c.organisation_id))).scalars())
    missing = [o for o in organisation_ids if o not in known]
    if not missing:
        return
    now = utcnow()
    try:
        async with writing(engine) as conn:
            await conn.execute(
                circuit_table.insert(),
                [{"organisation_id": o, "failures": 0, "updated_at": now} for o in missing],
            )
    except IntegrityError:
        pass  # another dispatcher made them first


@dataclass(frozen=True)
class Troubled:
    """Organisations whose outcomes are counted (failures in the window, or ramping up), those
    whose circuit has opened and not closed since (their deliveries go through take_trial), and
    the calls allowed at once to those ramping up. Others need no bookkeeping."""

    counted: set[str]
    tripped: set[str]
    ramps: dict[str, int]


_TROUBLED = select(c.organisation_id, c.opened_until, c.ramp).where((c.failures > 0) | (c.ramp > 0))


async def troubled(conn: AsyncConnection) -> Troubled:
    """The organisations that need bookkeeping, as the database has them now."""
    rows = (await conn.execute(_TROUBLED)).all()
    return Troubled(
        counted={r.organisation_id for r in rows},
        tripped={r.organisation_id for r in rows if r.opened_until is not None},
        ramps={r.organisation_id: r.ramp for r in rows if r.ramp > 0},
    )


async def take_trial(
    engine: AsyncEngine, organisation_id: str, settings: DispatchSettings
) -> datetime | None:
    """None when a delivery may go ahead; else when to try again (another is the trial)."""
    async with reading(engine) as conn:
        opened_until = await conn.scalar(
            select(c.opened_until).where(c.organisation_id == organisation_id)
        )
    if opened_until is None:
        return None  # closed
    now = utcnow()
    until = now + timedelta(seconds=settings.circuit_cooldown_seconds)
    async with writing(engine) as conn:
        taken = await conn.execute(
            update(circuit_table)
            .where(c.organisation_id == organisation_id, c.opened_until <= now)
            .values(opened_until=until, updated_at=now)  # no one else while the trial runs
        )
    return None if taken.rowcount else max(opened_until, now)


async def record(
    conn: AsyncConnection,
    organisation_id: str,
    *,
    failed: bool,
    error: str | None,
    settings: DispatchSettings,
    now: datetime,
) -> BreakerChange | None:
    """Count a delivered or failed attempt, and say how the circuit changed, if it did."""
    # Locked (on PostgreSQL) so concurrent outcomes for one organisation count one by one.
    row = (
        await conn.execute(
            select(c.failures, c.successes, c.window_started_at, c.opened_until, c.ramp)
            .where(c.organisation_id == organisation_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        return None
    window = timedelta(seconds=settings.circuit_window_seconds)
    fresh = row.window_started_at is None or now - row.window_started_at > window
    counts = _Counts(
        failures=0 if fresh else row.failures,
        successes=0 if fresh else row.successes,
        started=now if fresh else row.window_started_at,
        was_open=row.opened_until is not None,
        ramp=row.ramp,
    )
    values, change = _failed(counts, error, settings, now) if failed else _succeeded(counts)
    await conn.execute(
        update(circuit_table)
        .where(c.organisation_id == organisation_id)
        .values(**values, updated_at=now)
    )
    return change


@dataclass(frozen=True)
class _Counts:
    failures: int
    successes: int
    started: datetime
    was_open: bool
    ramp: int


def _failed(
    counts: _Counts, error: str | None, settings: DispatchSettings, now: datetime
) -> tuple[dict[str, Any], BreakerChange | None]:
    failures = counts.failures + 1
    values: dict[str, Any] = {
        "failures": failures,
        "successes": counts.successes,
        "window_started_at": counts.started,
        "last_error": error,
    }
    # A failed trial (or a call still in flight when it opened) opens it again.
    tripped = failures >= settings.circuit_failures and failures >= counts.successes
    if not (counts.was_open or tripped):
        return values, None
    values |= {
        "opened_until": now + timedelta(seconds=settings.circuit_cooldown_seconds),
        "ramp": 0,
    }
    return values, None if counts.was_open else BreakerChange.opened


def _succeeded(counts: _Counts) -> tuple[dict[str, Any], BreakerChange | None]:
    if counts.was_open:  # the trial went through: closed, and ramping up from one call
        closed = {"failures": 0, "successes": 0, "window_started_at": None}
        return {**closed, "opened_until": None, "last_error": None, "ramp": 1}, BreakerChange.closed
    ramp = counts.ramp * 2 if counts.ramp else 0
    ramp = 0 if ramp > RAMP_CEILING else ramp
    if counts.failures == 0:  # nothing in the window to remember
        return {"failures": 0, "successes": 0, "window_started_at": None, "ramp": ramp}, None
    values = {
        "successes": counts.successes + 1,
        "failures": counts.failures,
        "window_started_at": counts.started,
        "ramp": ramp,
    }
    return values, None


async def states(engine: AsyncEngine) -> dict[str, CircuitState]:
    """Every organisation's circuit as it stands now."""
    now = utcnow()
    async with reading(engine) as conn:
        rows = (await conn.execute(select(circuit_table))).all()
    return {
        row.organisation_id: CircuitState(
            state=_state(row.opened_until, now),
            failures=row.failures,
            open_until=row.opened_until if row.opened_until and row.opened_until > now else None,
            last_error=row.last_error,
        )
        for row in rows
    }


def _state(opened_until: datetime | None, now: datetime) -> BreakerState:
    """A circuit that opened stays open until its cool-down ends, then is half open until a
    delivery succeeds (which clears opened_until)."""
    if opened_until is None:
        return BreakerState.closed
    return BreakerState.open if opened_until > now else BreakerState.half_open
