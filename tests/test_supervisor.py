"""The background loops under their supervisor: a loop that raises is logged under its name and
restarted after a backoff while the others go on; /readyz shows each loop and answers 503
while one is down or stale; a worker answers the same /readyz on its health port."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from app.alerts import feed as alert_feed
from app.alerts.sender import AlertSender
from app.casework import stuck as stuck_service
from app.conversation.sender import FollowUpSender
from app.core.settings import LoopSettings, Settings
from app.delivery.dispatcher import Dispatcher
from app.main import create_app
from app.partners.sender import WebhookSender
from app.privacy import service as privacy_service
from app.updates.poller import Poller
from tests.cli.test_cli_start import start, wait_until_ready
from tests.conftest import free_port
from tests.sandbox.conftest import eventually

LOOP_NAMES = [
    "dispatcher",
    "poller",
    "webhooks",
    "retention",
    "stuck-summary",
    "follow-ups",
    "alert-feed",
    "alerts",
]
# What one turn of each loop calls first: making it raise is a bug in that loop's turn.
TURNS: dict[str, tuple[Any, str]] = {
    "dispatcher": (Dispatcher, "_turn"),
    "poller": (Poller, "_take_due"),
    "webhooks": (WebhookSender, "_turn"),
    "retention": (privacy_service, "run_retention"),
    "stuck-summary": (stuck_service, "write_daily_summary"),
    "follow-ups": (FollowUpSender, "_turn"),
    "alert-feed": (alert_feed, "feed"),
    "alerts": (AlertSender, "_turn"),
}


def break_turn(
    monkeypatch: pytest.MonkeyPatch, loop: str, *, times: int | None = None
) -> Callable[[], None]:
    """Make loop's turns raise RuntimeError (the first `times`, or every one until the
    returned function is called)."""
    owner, name = TURNS[loop]
    original = getattr(owner, name)
    calls: list[None] = []
    broken = [True]

    async def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(None)
        if broken[0] and (times is None or len(calls) <= times):
            raise RuntimeError("a bug in this turn, quoting ada@example.org")
        return await original(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
    return lambda: broken.__setitem__(0, False)


def hang_turn(monkeypatch: pytest.MonkeyPatch, loop: str, released: asyncio.Event) -> None:
    """Make loop's turns hang until `released` is set."""
    owner, name = TURNS[loop]
    original = getattr(owner, name)

    async def hanging(*args: Any, **kwargs: Any) -> Any:
        await released.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(owner, name, hanging)


def with_loops(settings: Settings, **values: float) -> Settings:
    return settings.model_copy(update={"loops": LoopSettings(**values)})


@asynccontextmanager
async def gateway(settings: Settings, *, loops: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """`iap serve` in this process: the API and, with `loops`, the supervised loops."""
    application: FastAPI = create_app(settings, run_dispatcher=loops)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://iap.test") as http:
            yield http


def by_name(answer: httpx.Response) -> dict[str, dict[str, Any]]:
    return {loop["name"]: loop for loop in answer.json()["loops"]}


async def readiness(
    http: httpx.AsyncClient, until: Callable[[httpx.Response], bool], what: str
) -> httpx.Response:
    async def check() -> httpx.Response | None:
        answer = await http.get("/readyz")
        return answer if until(answer) else None

    return await eventually(check, within=10, what=what)


def every_loop_has_turned(answer: httpx.Response) -> bool:
    return answer.status_code == 200 and all(
        loop["last_turn_at"] for loop in answer.json()["loops"]
    )


async def test_readyz_lists_each_loop_with_its_last_turn(settings):
    async with gateway(settings) as http:
        answer = await readiness(http, every_loop_has_turned, "a first turn of every loop")
    assert answer.json()["status"] == "ready"
    assert [loop["name"] for loop in answer.json()["loops"]] == LOOP_NAMES
    for loop in answer.json()["loops"]:
        assert set(loop) == {
            "name",
            "state",
            "alive",
            "last_turn_at",
            "seconds_since_turn",
            "restarts",
            "last_error",
        }
        assert (loop["state"], loop["alive"], loop["restarts"]) == ("running", True, 0)
        assert loop["last_error"] is None


async def test_an_api_only_gateway_runs_no_loops_and_is_ready(settings):
    async with gateway(settings, loops=False) as http:
        answer = await http.get("/readyz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ready"})


@pytest.mark.parametrize("loop", LOOP_NAMES)
async def test_a_loop_that_raises_is_logged_by_name_and_readyz_is_503_while_it_is_down(
    loop, settings, monkeypatch
):
    break_turn(monkeypatch, loop)
    # A long backoff: the loop stays down while we look.
    slow_restart = with_loops(settings, restart_min_seconds=60, restart_max_seconds=60)
    with capture_logs() as logs:
        async with gateway(slow_restart) as http:
            answer = await readiness(http, lambda a: a.status_code == 503, f"{loop} reported")
            others = await readiness(
                http,
                lambda a: all(by_name(a)[n]["last_turn_at"] for n in LOOP_NAMES if n != loop),
                "the other loops' turns",
            )
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/unavailable"
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["detail"] == f"Background loops not running: {loop}."
    down = by_name(answer)[loop]
    assert (down["state"], down["alive"], down["restarts"]) == ("restarting", False, 1)
    assert down["last_error"] == "builtins.RuntimeError"
    # The others go on.
    assert all(by_name(others)[n]["alive"] for n in LOOP_NAMES if n != loop)
    [failed] = [e for e in logs if e["event"] == "supervisor.loop_failed"]
    assert (failed["loop"], failed["error"], failed["restarts"]) == (
        loop,
        "builtins.RuntimeError",
        1,
    )
    assert failed["log_level"] == "error"
    assert "ada@example.org" not in str({k: v for k, v in failed.items() if k != "exc_info"})


@pytest.mark.parametrize("loop", LOOP_NAMES)
async def test_a_loop_that_raised_is_restarted_and_ready_again(loop, settings, monkeypatch):
    break_turn(monkeypatch, loop, times=1)
    quick_restart = with_loops(settings, restart_min_seconds=0.01)
    async with gateway(quick_restart) as http:
        answer = await readiness(
            http,
            lambda a: every_loop_has_turned(a) and by_name(a)[loop]["restarts"] == 1,
            f"{loop} restarted and turning",
        )
    restarted = by_name(answer)[loop]
    assert (restarted["state"], restarted["alive"]) == ("running", True)
    assert restarted["last_error"] == "builtins.RuntimeError"


async def test_failures_in_a_row_wait_longer_each_time(settings, monkeypatch):
    repair = break_turn(monkeypatch, "dispatcher")
    backoff = with_loops(settings, restart_min_seconds=0.01, restart_max_seconds=0.04)
    with capture_logs() as logs:
        async with gateway(backoff) as http:
            await readiness(http, lambda a: by_name(a)["dispatcher"]["restarts"] >= 4, "restarts")
            repair()
            await readiness(http, lambda a: a.status_code == 200, "the dispatcher back")
    waits = [e["restart_in_seconds"] for e in logs if e["event"] == "supervisor.loop_failed"]
    assert waits[:4] == [0.01, 0.02, 0.04, 0.04]


async def test_a_loop_that_hangs_goes_stale_and_readyz_is_503(settings, monkeypatch):
    released = asyncio.Event()
    hang_turn(monkeypatch, "dispatcher", released)
    try:
        async with gateway(with_loops(settings, stale_seconds=0.3)) as http:
            # The dispatcher's own staleness (on a loaded machine another loop can be a turn
            # late too, and readyz is 503 for that as well).
            answer = await readiness(
                http,
                lambda a: a.status_code == 503 and not by_name(a)["dispatcher"]["alive"],
                "the stale dispatcher",
            )
            released.set()
    finally:
        released.set()
    stale = by_name(answer)["dispatcher"]
    assert (stale["state"], stale["alive"], stale["restarts"]) == ("running", False, 0)
    assert stale["last_turn_at"] is None
    assert stale["seconds_since_turn"] >= 0.3 + settings.dispatch.poll_seconds


async def test_loops_waiting_for_work_or_a_timer_stay_alive(settings):
    # Retention waits an hour between runs, the poller up to 5 s: waiting is not hanging.
    async with gateway(with_loops(settings, stale_seconds=0.3)) as http:
        await readiness(http, every_loop_has_turned, "a first turn of every loop")
        await asyncio.sleep(1.0)  # well past stale_seconds: the point is that time passes
        answer = await http.get("/readyz")
    assert answer.status_code == 200, answer.json()
    assert all(loop["alive"] for loop in answer.json()["loops"])


# The worker, as if app.main (the API) and the sandbox were not there: it must load neither.
WORKER_WITHOUT_THE_API = """
import importlib.abc, sys

class Refused(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "app.main" or name.startswith("app.sandbox"):
            sys.stderr.write(f"imported {name}\\n")
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, Refused())
from app.cli import main
main()
"""


def test_a_worker_answers_readyz_on_its_health_port_and_loads_no_api(database_url, tmp_path):
    port = free_port()
    worker = [sys.executable, "-c", WORKER_WITHOUT_THE_API, "worker", "--health-port", str(port)]
    process = start(worker, database_url, tmp_path)
    try:
        wait_until_ready(process, f"http://127.0.0.1:{port}/readyz")
        answer = httpx.get(f"http://127.0.0.1:{port}/readyz")
        missing = httpx.get(f"http://127.0.0.1:{port}/v1/enquiries")
        alive = httpx.get(f"http://127.0.0.1:{port}/healthz")
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, errors
    assert "imported" not in errors
    assert [loop["name"] for loop in answer.json()["loops"]] == LOOP_NAMES
    assert alive.json() == {"status": "ok"}
    assert (missing.status_code, missing.headers["content-type"]) == (
        404,
        "application/problem+json",
    )
