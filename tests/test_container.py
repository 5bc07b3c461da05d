"""The container image's command line, run as the image runs it: no container engine runs on
this machine (docs/deployment.md), so the Dockerfile's final stage is read and acted out: the
package installed from a built wheel (not editable) into an environment the gateway cannot
write, a non-root user, the Dockerfile's environment, CMD and HEALTHCHECK. compose.yaml is
checked for what docs/deployment.md promises of it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.test_install import production_config, production_environment, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def final_stage() -> list[tuple[str, str]]:
    """The Dockerfile's last stage as (instruction, argument) pairs, continuations joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return [(word, rest) for word, rest in instructions[last_from:]]


def instruction(name: str) -> str:
    found = [rest for word, rest in final_stage() if word == name]
    assert len(found) == 1, f"one {name} in the final stage"
    return found[0]


def image_environment() -> dict[str, str]:
    return {
        key: value
        for word, rest in final_stage()
        if word == "ENV"
        for key, value in (pair.split("=", 1) for pair in shlex.split(rest))
    }


def image_command() -> list[str]:
    return [*json.loads(instruction("ENTRYPOINT")), *json.loads(instruction("CMD"))]


def healthcheck() -> list[str]:
    exec_form = instruction("HEALTHCHECK").split("CMD", 1)[1]
    return json.loads(exec_form)


@pytest.fixture(scope="module")
def image() -> Iterator[Path]:
    """A world-readable folder, as the image's file system: a virtual environment with the
    package installed from its wheel at the locked versions, owned by whoever runs the tests."""
    root = Path(tempfile.mkdtemp(prefix="iap-image-"))
    root.chmod(0o755)
    try:
        built = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", root / "wheels", ROOT],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert built.returncode == 0, built.stderr
        assert "deprecat" not in (built.stdout + built.stderr).lower()
        (wheel,) = (root / "wheels").glob("iap-*.whl")
        subprocess.run([interpreter(), "-m", "venv", root / "venv"], check=True)
        pip = [root / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet"]
        lock = ROOT / "requirements" / "runtime.lock"
        subprocess.run([*pip, "-c", lock, wheel], check=True, timeout=900)
        yield root
    finally:
        shutil.rmtree(root)


def interpreter() -> str:
    """A Python the image's user may run: ours, unless it lies where only we may look."""
    candidates = [sys._base_executable, "/usr/local/bin/python3", "/usr/bin/python3"]
    if os.geteuid() != 0:
        return candidates[0]
    return next(c for c in candidates if Path(c).exists() and open_to_all(Path(c).resolve()))


def open_to_all(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(path.stat().st_mode & 0o005)


def as_the_image_user(command: list[str]) -> list[str]:
    """Run as a user other than the one who owns the code (nobody, when the tests are root)."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *command]


@pytest.fixture
def data(image) -> Path:
    """The image's /data: the one place the gateway may write."""
    folder = image / f"data-{free_port()}"
    folder.mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody", "nogroup")
    return folder


def run_as_image(image: Path, data: Path, command: list[str], extra: dict[str, str]):
    environment = {
        "PATH": f"{image / 'venv' / 'bin'}:/usr/bin:/bin",
        "HOME": str(data),
        **{k: v.replace("/data", str(data)) for k, v in image_environment().items()},
        **extra,
    }
    return subprocess.Popen(
        as_the_image_user(command),
        env=environment,
        cwd=data,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_image_starts_in_production_as_a_user_who_cannot_change_its_code(image, data):
    assert image_environment()["IAP_ENV"] == "production"
    config = production_config(image / f"config-{data.name}")
    port = str(free_port())
    command = [arg.replace("8000", port) for arg in image_command()]
    assert command[:2] == ["iap", "serve"]
    process = run_as_image(image, data, command, production_environment(config))
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", process)
        check = [arg.replace("8000", port) for arg in healthcheck()]
        assert check[0] == "python"
        answered = subprocess.run(
            as_the_image_user(check), env={"PATH": f"{image / 'venv' / 'bin'}:/usr/bin"}
        )
        assert answered.returncode == 0
        assert (data / "iap.db").exists()
        package = next((image / "venv" / "lib").glob("python*/site-packages/app"))
        assert "site-packages" in str(package), "installed, not editable"
        tried = subprocess.run(as_the_image_user(["touch", str(package / "main.py")]))
        assert tried.returncode != 0, "the gateway's user can change its own code"
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_the_healthcheck_fails_when_nothing_answers(image):
    port = str(free_port())
    check = [arg.replace("8000", port) for arg in healthcheck()]
    answered = subprocess.run(
        check, env={"PATH": f"{image / 'venv' / 'bin'}:/usr/bin"}, capture_output=True
    )
    assert answered.returncode != 0


def test_the_same_image_runs_the_sandbox(image, data):
    port, smtp = str(free_port()), str(free_port())
    command = ["iap", "sandbox", "--host", "127.0.0.1", "--port", port, "--smtp-port", smtp]
    process = run_as_image(image, data, command, {})
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/mail.json", process)
        assert httpx.get(f"http://127.0.0.1:{port}/mail.json").json() is not None
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def test_the_same_image_runs_the_worker(image, data):
    environment = production_environment(production_config(image / f"config-w-{data.name}"))
    process = run_as_image(image, data, ["iap", "worker"], environment)
    try:
        deadline = time.monotonic() + 60
        while not migrated(data / "iap.db"):
            if process.poll() is not None:
                pytest.fail(f"the worker exited {process.returncode}: {process.communicate()}")
            assert time.monotonic() < deadline, "the worker did not migrate its database"
            time.sleep(0.1)
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def migrated(database: Path) -> bool:
    """Whether the worker has brought the database to a revision (it migrates as it starts)."""
    if not database.exists():
        return False
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        try:
            return conn.execute("SELECT version_num FROM alembic_version").fetchone() is not None
        except sqlite3.OperationalError:
            return False


def test_compose_runs_postgres_two_gateways_two_workers_and_a_demo_sandbox():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    commands = {name: service.get("command", [""])[0] for name, service in services.items()}
    assert sorted(n for n, c in commands.items() if c == "serve") == ["api-1", "api-2"]
    assert sorted(n for n, c in commands.items() if c == "worker") == ["worker-1", "worker-2"]
    assert services["sandbox"]["profiles"] == ["demo"]
    assert commands["sandbox"] == "sandbox"
    assert [n for n, s in services.items() if "profiles" in s] == ["sandbox"]
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("api-1", "api-2", "worker-1", "worker-2"):
        service = services[name]
        assert service["environment"]["IAP_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["build"] == "."
    # A worker answers the image's HEALTHCHECK on its own health port.
    workers = [s for n, s in services.items() if "worker" in n]
    assert all(s["command"] == ["worker", "--health-port", "8000"] for s in workers)
    assert all("healthcheck" not in s for s in workers)
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in published)
    demo = (ROOT / "deploy" / "demo.env").read_text()
    assert "IAP_ENV=development" in demo
    assert "IAP_SANDBOX_URL=http://sandbox:8090" in demo
