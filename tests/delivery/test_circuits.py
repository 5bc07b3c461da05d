"""The circuit breaker's counting, on the test database: failures over a window, outweighed by
successes, and a ramp after it closes."""

from datetime import timedelta

import pytest

from app.core.db import reading, writing
from app.core.models import utcnow
from app.core.settings import DispatchSettings
from app.delivery import circuits

ORGANISATION = "oxfordshire-county"
SETTINGS = DispatchSettings(
    circuit_failures=3, circuit_window_seconds=60, circuit_cooldown_seconds=30
)


@pytest.fixture
async def count(engine):
    await circuits.ensure(engine, [ORGANISATION])
    start = utcnow()

    async def record(failed: bool, *, at: float) -> str | None:
        async with writing(engine) as conn:
            return await circuits.record(
                conn,
                ORGANISATION,
                failed=failed,
                error="HTTP 503" if failed else None,
                settings=SETTINGS,
                now=start + timedelta(seconds=at),
            )

    return record


async def troubled(engine) -> circuits.Troubled:
    async with reading(engine) as conn:
        return await circuits.troubled(conn)


async def state(engine) -> str:
    return (await circuits.states(engine))[ORGANISATION].state


async def test_failures_older_than_the_window_do_not_count(engine, count):
    assert [await count(True, at=0), await count(True, at=1)] == [None, None]
    assert await count(True, at=62) is None  # a new window: one failure, not three
    assert await state(engine) == "closed"
    assert await count(True, at=63) is None
    assert await count(True, at=64) == "opened"


async def test_successes_in_the_window_outweigh_failures_between_them(engine, count):
    # Calls in flight together end together: failures interleaved with more successes are a
    # back-office that mostly answers, not one that is down.
    outcomes = [True, False, False, True, False, False, True]
    assert [await count(failed, at=i) for i, failed in enumerate(outcomes)] == [None] * 7
    assert await state(engine) == "closed"
    assert await count(True, at=8) == "opened"  # four failures to four successes
    assert await state(engine) == "open"


async def test_after_a_trial_succeeds_calls_ramp_up_one_two_four(engine, count):
    for second in range(3):
        await count(True, at=second)
    assert await count(False, at=40) == "closed"  # the trial, after the cool-down
    ramps = []
    for second in range(41, 50):
        ramps.append((await troubled(engine)).ramps.get(ORGANISATION))
        await count(False, at=second)
    assert ramps == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert (await troubled(engine)).ramps == {}  # fully open again


async def test_a_failure_while_ramping_slows_nothing_until_the_circuit_trips(engine, count):
    for second in range(3):
        await count(True, at=second)
    await count(False, at=40)
    await count(False, at=41)
    assert await count(True, at=42) is None
    assert (await troubled(engine)).ramps == {ORGANISATION: 2}
