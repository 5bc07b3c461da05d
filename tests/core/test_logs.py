"""Logs without personal data when something goes wrong: a database error's log names its type,
route and request id, never the statement's parameters or the body; the console format for a
person; the request id every answer carries."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import Request
from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError

from app.core.db import create_engine, writing
from app.core.logs import configure_logging, describe, redacted_traceback
from app.core.models import enquiry_table
from app.core.settings import Settings
from app.intake.store import _postgres_pool, close_store
from app.main import create_app
from tests.conftest import ON_POSTGRES, free_port

ROOT = Path(__file__).resolve().parents[2]
NAME = "Philippa Wolstencroft"
DESCRIPTION = "Call Philippa on 01865 402977 about the broken lamp"
TRACES = ("philippa", "wolstencroft", "402977")


def python(code: str, *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("IAP_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**inherited, **env},
        timeout=60,
        cwd=ROOT,
        check=True,
    )


def failing_statement(description: str) -> Any:
    """An insert the database refuses (required columns missing), carrying the citizen."""
    values = {"id": uuid.uuid4(), "reference": "K7QM4XPB6", "description": description}
    return insert(enquiry_table).values(**values, citizen_sealed=NAME)


def serve_a_failing_route() -> None:
    """In a child process: the gateway on loopback, logging at DEBUG, with one more route whose
    statement fails carrying the body's personal data; prints what the client was answered."""
    settings = Settings()
    configure_logging("DEBUG", settings.log_renderer)
    app = create_app(settings, run_dispatcher=False)

    async def fails(request: Request) -> None:
        body = await request.json()
        async with writing(request.app.state.iap.engine) as conn:
            await conn.execute(failing_statement(body["description"]))

    app.add_api_route("/v1/failing/{kind}", fails, methods=["POST"])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )

    async def main() -> None:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            answer = await http.post(
                "/v1/failing/insert?token=abc", json={"description": DESCRIPTION}
            )
        print(json.dumps({"status": answer.status_code, **answer.headers}))
        server.should_exit = True
        await serving

    asyncio.run(main())


def test_an_unhandled_database_error_logs_its_type_route_and_request_id_only(
    database_url: str,
) -> None:
    run = python(
        "from tests.core.test_logs import serve_a_failing_route as s; s()",
        env={"IAP_ENV": "test", "IAP_DATABASE_URL": database_url, "IAP_MIGRATE_ON_START": "0"},
    )
    answer = json.loads(run.stdout.splitlines()[-1])
    assert answer["status"] == 500
    assert answer["content-type"] == "application/problem+json"
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    unhandled = [e for e in lines if e["event"] == "http.unhandled"]
    assert len(unhandled) == 1
    (entry,) = unhandled
    assert entry["level"] == "error"
    assert entry["error"] == "sqlalchemy.exc.IntegrityError"
    assert entry["route"] == "/v1/failing/{kind}"
    assert entry["request_id"] == answer["x-request-id"]
    assert "Traceback" in entry["exception"]
    assert "IntegrityError" in entry["exception"]
    # The server's own report of the same error is left out; the request is logged once.
    assert not any("Exception in ASGI application" in e["event"] for e in lines)
    (request,) = [e for e in lines if e["event"] == "http.request"]
    assert request["status"] == 500
    found = [trace for trace in TRACES if trace in run.stderr.lower()]
    assert found == [], f"the log shows the citizen's details: {found}"


async def test_a_failing_statement_never_shows_its_parameters(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with pytest.raises(DBAPIError) as caught:
            async with writing(engine) as conn:
                await conn.execute(failing_statement(DESCRIPTION))
        assert "[SQL parameters hidden" in str(caught.value)
        logged = redacted_traceback(caught.value)
        assert "IntegrityError" in logged
        assert [trace for trace in TRACES if trace in logged.lower()] == []
        if ON_POSTGRES:
            # The intake's own pool: asyncpg quotes a value it cannot send, and PostgreSQL's
            # DETAIL quotes the failing row; neither reaches the log.
            pool = await _postgres_pool(engine)
            with pytest.raises(asyncpg.DataError) as refused:
                await pool.execute("SELECT $1::int", NAME)
            assert NAME in str(refused.value)
            assert NAME not in redacted_traceback(refused.value)
    finally:
        await close_store(engine)
        await engine.dispose()


@pytest.mark.parametrize(
    ("error", "logged"),
    [
        (ValueError(f"invalid literal for int(): {NAME}"), "(message withheld"),
        (KeyError("pip@example.org"), "builtins.KeyError: '…'"),
        (OSError("cannot reach pip@example.org"), "builtins.OSError: cannot reach …"),
        (TypeError("'NoneType' object is not callable"), "TypeError: '…' object is not callable"),
        (OverflowError("date value out of range"), "OverflowError: date value out of range"),
        (OSError("call 01865 402977"), "builtins.OSError: call …"),
    ],
)
def test_an_exceptions_message_is_logged_without_what_it_quotes(
    error: BaseException, logged: str
) -> None:
    assert logged in describe(error)
    assert [trace for trace in (*TRACES, "pip@") if trace in describe(error).lower()] == []


def test_the_console_format_is_plain_text_for_a_pipe_and_covers_library_records() -> None:
    run = python(
        "import logging, structlog; from app.core.logs import configure_logging;"
        "from app.core.settings import LogFormat; configure_logging('INFO', LogFormat.console);"
        "structlog.get_logger().info('dispatch.delivered', organisation='cherwell');"
        "logging.getLogger('uvicorn.error').info('Application startup complete.');"
        "logging.getLogger('sqlalchemy.engine').info('SELECT secret')",
        env={},
    )
    first, second = run.stderr.splitlines()
    assert "\x1b[" not in run.stderr  # no colours on a pipe
    assert "[info" in first
    assert "dispatch.delivered" in first
    assert "organisation=cherwell" in first
    assert first[:4].isdigit()  # the timestamp
    assert second.endswith("[uvicorn]")
    assert "Application startup complete." in second


async def test_every_answer_carries_a_request_id_and_a_clients_own_is_not_trusted(
    anonymous: httpx.AsyncClient,
) -> None:
    seen = set()
    for path in ("/v1/services", "/nowhere", "/v1/enquiries"):
        answer = await anonymous.get(path, headers={"X-Request-ID": "client-chosen-id"})
        assert len(answer.headers["x-request-id"]) == 32
        seen.add(answer.headers["x-request-id"])
    assert len(seen) == 3
    assert "client-chosen-id" not in seen
