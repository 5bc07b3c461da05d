"""A circuit breaker per organisation, kept in the database so every dispatcher shares it.

Consecutive failed attempts open it; while open, that organisation's dispatches are not claimed
(they wait instead of spending attempts); after the cool-down one trial delivery is let through,
and its outcome closes the circuit or opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import reading, writing
from app.models import circuit_table, utcnow
from app.settings import DispatchSettings

c = circuit_table.c


@dataclass(frozen=True)
class CircuitState:
    state: str  # closed | open | half_open
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


async def troubled(engine: AsyncEngine) -> tuple[set[str], set[str]]:
    """Organisations with failures counted, and of those the ones whose circuit has opened and
    not closed since (their deliveries go through take_trial). Others need no bookkeeping."""
    async with reading(engine) as conn:
        rows = (
            await conn.execute(select(c.organisation_id, c.opened_until).where(c.failures > 0))
        ).all()
    return {r.organisation_id for r in rows}, {
        r.organisation_id for r in rows if r.opened_until is not None
    }


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
) -> str | None:
    """Count a delivered or failed attempt; 'opened' or 'closed' when the circuit changes."""
    # Locked (on PostgreSQL) so concurrent outcomes for one organisation count one by one.
    row = (
        await conn.execute(
            select(c.failures, c.opened_until)
            .where(c.organisation_id == organisation_id)
            .with_for_update()
        )
    ).first()
    failures, was_open = (row.failures, row.opened_until is not None) if row else (0, False)
    if not failed:
        if failures == 0:
            return None
        await conn.execute(
            update(circuit_table)
            .where(c.organisation_id == organisation_id)
            .values(failures=0, opened_until=None, last_error=None, updated_at=now)
        )
        return "closed" if was_open else None
    failures += 1
    values: dict[str, Any] = {"failures": failures, "last_error": error, "updated_at": now}
    opens = failures >= settings.circuit_failures
    if opens:
        values["opened_until"] = now + timedelta(seconds=settings.circuit_cooldown_seconds)
    await conn.execute(
        update(circuit_table).where(c.organisation_id == organisation_id).values(**values)
    )
    return "opened" if opens and not was_open else None


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


def _state(opened_until: datetime | None, now: datetime) -> str:
    """A circuit that opened stays open until its cool-down ends, then is half open until a
    delivery succeeds (which clears opened_until)."""
    if opened_until is None:
        return "closed"
    return "open" if opened_until > now else "half_open"
