"""Starting and stopping `iap` as an operator does: database URLs as people write them, a
database that cannot be opened, wrong settings, Ctrl-C and SIGTERM, and the development key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from app.cli import cli
from tests.conftest import POSTGRES_URL, free_port

ROOT = Path(__file__).resolve().parents[2]
IAP = [sys.executable, "-c", "from app.cli import main; main()"]


def environment(**values: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("IAP_")}
    return {**inherited, "IAP_ENV": "test", "PYTHONUNBUFFERED": "1", **values}


def run(*args: str, **values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IAP, *args],
        capture_output=True,
        text=True,
        env=environment(**values),
        timeout=60,
        cwd=ROOT,
    )


def start(
    command: list[str], database_url: str, cwd: Path, stderr: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """A long-running `iap` process on the test database; its sandbox URL is a free port, so a
    stray delivery fails instead of reaching a sandbox that another test started."""
    return subprocess.Popen(
        command,
        env=environment(
            IAP_DATABASE_URL=database_url, IAP_SANDBOX_URL=f"http://127.0.0.1:{free_port()}"
        ),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=cwd,
    )


def wait_until_ready(process: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, "iap exited before it was ready"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no answer from {url}"
        time.sleep(0.05)


def assert_stops_cleanly(
    process: subprocess.Popen[str], sig: int, ready: Callable[[], object]
) -> None:
    """Once `ready()` returns, `sig` ends the process with status 0 and no traceback."""
    try:
        ready()
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    output = stdout if stderr is None else stderr
    assert "Traceback" not in output, output
    assert process.returncode == 0, output


def logged(process: subprocess.Popen[str], event: str) -> None:
    """Read the process's output until a line names `event`."""
    assert process.stdout is not None
    for line in process.stdout:
        if event in line:
            break


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_stops_cleanly_on_a_signal(sig, database_url, tmp_path):
    port = free_port()
    process = start([*IAP, "serve", "--port", str(port), "--no-sandbox"], database_url, tmp_path)
    assert_stops_cleanly(
        process, sig, lambda: wait_until_ready(process, f"http://127.0.0.1:{port}/readyz")
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_worker_stops_cleanly_on_a_signal(sig, database_url, tmp_path):
    process = start([*IAP, "worker"], database_url, tmp_path, stderr=subprocess.STDOUT)
    assert_stops_cleanly(process, sig, lambda: logged(process, "dispatcher.started"))


# Every command that opens the database, as an operator would type it.
DATABASE_COMMANDS = {
    "serve": ["serve", "--no-sandbox", "--port", "0"],
    "worker": ["worker"],
    "migrate": ["migrate"],
    "clients": ["clients", "list"],
    "privacy": ["privacy", "rotate-keys"],
    "retention": ["retention", "run"],
    "gazetteer": ["gazetteer", "import", str(ROOT / "pyproject.toml")],
    "routes": ["routes", "explain", "--service", "pothole", "--postcode", "OX4 1AA"],
}
PASSWORD = "s3cret-pw"


def refused(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The command failed in one or two lines that say `expected`, no traceback, no password."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    return result.stderr


@pytest.mark.parametrize("command", DATABASE_COMMANDS.values(), ids=DATABASE_COMMANDS.keys())
def test_a_sqlite_database_in_a_missing_folder_is_named_with_the_fix(command, tmp_path):
    missing = tmp_path / "no-such-folder" / "iap.db"
    result = run(*command, IAP_DATABASE_URL=f"sqlite:///{missing}")
    refused(result, f"cannot open the SQLite database {missing}", "IAP_DATABASE_URL")
    assert result.returncode == 1


SERVER = "127.0.0.1:5432"
UNREACHABLE = {
    "no such database": (
        f"postgresql://postgres:{PASSWORD}@{SERVER}/iap_no_such_database",
        'database "iap_no_such_database" does not exist',
    ),
    "no such user": (
        f"postgresql://iap_no_such_role:{PASSWORD}@{SERVER}/postgres",
        'role "iap_no_such_role" does not exist',
    ),
    "nothing listening": (
        f"postgres://postgres:{PASSWORD}@127.0.0.1:{{port}}/iap",
        "cannot reach PostgreSQL at 127.0.0.1:{port}",
    ),
}


@pytest.mark.parametrize(
    ("command", "case"),
    [
        ("serve", "no such database"),
        ("worker", "no such user"),
        ("migrate", "nothing listening"),
        ("clients", "no such user"),
    ],
)
def test_a_postgresql_database_it_cannot_open_is_named_with_the_fix(command, case):
    port = free_port()
    url, said = (text.format(port=port) for text in UNREACHABLE[case])
    result = run(*DATABASE_COMMANDS[command], IAP_DATABASE_URL=url)
    refused(result, said, "IAP_DATABASE_URL")
    assert result.returncode == 1


def spelled(url: str, scheme: str) -> str:
    return scheme + "://" + url.split("://", 1)[1]


SPELLINGS = (
    ["postgresql", "postgres", "postgresql+asyncpg"]
    if POSTGRES_URL
    else ["sqlite", "sqlite+aiosqlite"]
)


@pytest.mark.parametrize("scheme", SPELLINGS)
def test_database_urls_are_taken_as_sqlalchemy_users_write_them(scheme, database_url):
    url = spelled(database_url, scheme)
    assert run("migrate", IAP_DATABASE_URL=url).stdout == "database is up to date\n"
    made = run(
        "clients",
        "create",
        f"kiosk-{scheme.replace('+', '-')}",
        "--scope",
        "enquiries:submit",
        IAP_DATABASE_URL=url,
    )
    assert made.returncode == 0, made.stderr
    listed = run("clients", "list", IAP_DATABASE_URL=database_url)
    assert f"kiosk-{scheme.replace('+', '-')}\t" in listed.stdout


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (f"postgresql+psycopg2://iap:{PASSWORD}@{SERVER}/iap", "names the driver 'psycopg2'"),
        (f"postgresql+psycopg://iap:{PASSWORD}@{SERVER}/iap", "names the driver 'psycopg'"),
        (f"mysql://iap:{PASSWORD}@{SERVER}/iap", "'mysql' is not a database IAP runs on"),
        ("iap.db", "is not a database URL"),
        (f"postgresql://iap:{PASSWORD}@{SERVER[:-5]}:port/iap", "cannot be read as a database URL"),
    ],
    ids=["psycopg2", "psycopg", "mysql", "a path", "a bad port"],
)
def test_a_bad_database_url_is_a_configuration_error(url, said):
    result = run("migrate", IAP_DATABASE_URL=url)
    refused(result, "configuration error", f"IAP_DATABASE_URL: {said}")
    assert result.returncode == 2


def test_bad_settings_are_named_by_their_variables(database_url):
    result = run(
        "migrate",
        IAP_DATABASE_URL=database_url,
        IAP_DISPATCH__BATCH_SIZE="0",
        IAP_API__RATE_LIMIT_CLIENT="lots",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "IAP_DISPATCH__BATCH_SIZE: Input should be greater than or equal to 1" in result.stderr
    assert "IAP_API__RATE_LIMIT_CLIENT: must read like '600/minute'" in result.stderr
    assert "lots" not in result.stderr.replace("'lots'", "")


@pytest.mark.parametrize("command", ["serve", "worker", "routes"])
def test_bad_yaml_in_the_configuration_is_a_configuration_error(command, database_url, tmp_path):
    (tmp_path / "organisations.yaml").write_text("organisations: [\n  - id: county\n")
    (tmp_path / "services.yaml").write_text("services: []\n")
    result = run(
        *DATABASE_COMMANDS[command], IAP_DATABASE_URL=database_url, IAP_CONFIG_DIR=str(tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "configuration error" in result.stderr
    assert "organisations.yaml: not valid YAML" in result.stderr


def test_the_development_key_follows_the_developer_to_a_new_database(database_url, tmp_path):
    """The key in .iap-dev-key works on every database serve has been pointed at."""
    keys = []
    for url in (database_url, f"sqlite:///{tmp_path / 'another.db'}"):
        port = free_port()
        process = subprocess.Popen(
            [*IAP, "serve", "--port", str(port), "--no-sandbox", "--no-worker"],
            env=environment(IAP_ENV="development", IAP_DATABASE_URL=url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        try:
            wait_until_ready(process, f"http://127.0.0.1:{port}/readyz")
            key = (tmp_path / ".iap-dev-key").read_text().strip()
            answer = httpx.get(
                f"http://127.0.0.1:{port}/v1/enquiries",
                headers={"Authorization": f"Bearer {key}"},
                timeout=5,
            )
            assert answer.status_code == 200, answer.text
            keys.append(key)
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert keys[0] == keys[1]


def every_command(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += every_command(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_help_names_values_plainly_and_shows_defaults():
    commands = every_command(typer.main.get_command(cli))  # type: ignore[arg-type]
    assert ("gazetteer", "import") in commands
    assert len(commands) > 15
    for command in commands:
        result = run(*command, "--help") if command in {(), ("serve",)} else None
        text = result.stdout if result else CliRunner().invoke(cli, [*command, "--help"]).output
        assert text.startswith("Usage: "), (command, text)
        assert not {"<", ">"} & set(text), (command, text)
    serve = run("serve", "--help").stdout
    assert "--port PORT" in serve
    assert "[default: 8000]" in serve
    assert "--no-worker  " in serve
