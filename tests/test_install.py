"""What a fresh install relies on: production code paths never load the sandbox (or aiosmtpd),
the fresh-machine check runs the README's command as written, and the lock files pin every
package without naming where it comes from."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from app.core.crypto import new_key
from app.core.settings import SHIPPED_CONFIG_DIR
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
# Runs `iap` as if the sandbox and aiosmtpd were not installed: importing either fails, as it
# did on a fresh machine, and says so on stderr.
WITHOUT_SANDBOX = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "aiosmtpd" or (name + ".").startswith("app.sandbox."):
            sys.stderr.write(f"imported {name}\\n")
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NotInstalled())
from app.cli import main
main()
"""
STRONG_SECRETS = {
    "county": "k3J9vQ2mZr7WpL5aN8cT4bHf",
    "open311": "Rb7dKq2WzX9mLp4sVn6tHc3Y",
    "lookup": "Zq8vN3kLw7Rt2mXc9Pb4Hs6J",
}


def production_config(folder: Path) -> Path:
    """A configuration production accepts, whose back-offices are internal loopback addresses
    (listed as allowed), so that nothing off this machine is ever named or resolved."""
    folder.mkdir(parents=True)
    county = "http://127.0.0.1:9/county"
    organisations = [
        {
            "id": "oxfordshire-county",
            "name": "Oxfordshire County Council",
            "kind": "county",
            "areas": ["E10000025"],
            "adapter": {
                "type": "rest-json",
                "base_url": f"{county}/api",
                "token_url": f"{county}/oauth/token",
                "client_id": "iap-gateway",
                "client_secret": "${IAP_COUNTY_CLIENT_SECRET}",
            },
        },
        {
            "id": "cherwell",
            "name": "Cherwell District Council",
            "kind": "district",
            "areas": ["E07000177"],
            "adapter": {
                "type": "open311",
                "base_url": "http://127.0.0.1:9/cherwell/v2",
                "api_key": "${IAP_OPEN311_KEY_CHERWELL}",
            },
        },
        {
            "id": "contact-centre",
            "name": "Contact centre",
            "kind": "triage",
            "adapter": {"type": "triage"},
        },
    ]
    (folder / "organisations.yaml").write_text(yaml.safe_dump({"organisations": organisations}))
    for name in ("services.yaml", "postcode_areas.csv"):
        (folder / name).write_bytes((SHIPPED_CONFIG_DIR / name).read_bytes())
    return folder


def production_environment(config: Path) -> dict[str, str]:
    """What production needs besides IAP_ENV and the database (docs/deployment.md)."""
    return {
        "IAP_CONFIG_DIR": str(config),
        "IAP_PRIVACY__KEYS": f'["{new_key()}"]',
        "IAP_PRIVACY__LOOKUP_KEY": STRONG_SECRETS["lookup"],
        "IAP_COUNTY_CLIENT_SECRET": STRONG_SECRETS["county"],
        "IAP_OPEN311_KEY_CHERWELL": STRONG_SECRETS["open311"],
        "IAP_OUTBOUND__ALLOWED_PRIVATE": '["127.0.0.1"]',
        "IAP_OUTBOUND__ALLOWED_PLAINTEXT": '["127.0.0.1"]',
    }


def wait_until_ready(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    """Until `url` answers 200; fails at once, with its output, if the process ends first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            _, errors = process.communicate()
            pytest.fail(f"exited {process.returncode} before it was ready:\n{errors}")
        assert time.monotonic() < deadline, f"{url} did not answer 200 in {seconds} s"
        time.sleep(0.1)


def iap_without_sandbox(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WITHOUT_SANDBOX, *args],
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "args", [["--help"], ["serve", "--help"], ["worker", "--help"], ["migrate"]]
)
def test_commands_run_without_the_sandbox_installed(args, tmp_path):
    env = {"IAP_ENV": "test", "IAP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/iap.db"}
    process = iap_without_sandbox(*args, env=env, cwd=tmp_path)
    output, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    assert "imported" not in errors
    assert "Usage" in output or "up to date" in output


def test_production_serve_starts_without_the_sandbox_installed(database_url, tmp_path):
    port = free_port()
    env = {
        "IAP_ENV": "production",
        "IAP_DATABASE_URL": database_url,
        **production_environment(production_config(tmp_path / "config")),
    }
    process = iap_without_sandbox("serve", "--port", str(port), env=env, cwd=tmp_path)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", process)
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert "imported" not in errors


def test_development_serve_still_runs_the_embedded_sandbox(tmp_path):
    """The lazy import is still made where the sandbox runs: the same probe sees it."""
    env = {
        "IAP_ENV": "development",
        "IAP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/iap.db",
        "IAP_SANDBOX_URL": f"http://127.0.0.1:{free_port()}",
    }
    process = iap_without_sandbox("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    _, errors = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "imported app.sandbox" in errors


def readme_run_command() -> str:
    """The one command of the README's "Run the gateway" section."""
    section = (ROOT / "README.md").read_text().split("## Run the gateway", 1)[1]
    return re.search(r"```sh\n(.*?)\n```", section, re.S).group(1)


def test_the_fresh_machine_check_runs_the_readme_command_as_written():
    extracted = subprocess.run(
        [str(ROOT / "scripts" / "fresh-machine"), "--print-command"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert extracted == readme_run_command()
    assert extracted == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/iap serve"


@pytest.mark.parametrize("lock", ["dev.lock", "runtime.lock"])
def test_the_lock_files_pin_every_package_and_name_no_index(lock):
    lines = (ROOT / "requirements" / lock).read_text().splitlines()
    requirements = [line for line in lines if line and not line.startswith((" ", "#"))]
    assert requirements, "empty lock"
    assert all(
        re.fullmatch(r"[A-Za-z0-9._-]+(\[[a-z,-]+\])?==[^\s]+( ; .+)?", r) for r in requirements
    )
    text = "\n".join(lines)
    assert not re.search(r"--(extra-)?index-url|--find-links|://|\.org|\.io", text)
    names = {re.split(r"[=\[ ]", r)[0].lower() for r in requirements}
    assert "aiosmtpd" in names
    assert ("pytest" in names) is (lock == "dev.lock")


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(lock: str) -> set[str]:
    lines = (ROOT / "requirements" / lock).read_text().splitlines()
    return {normalised(re.split(r"[=\[ ]", line)[0]) for line in lines if "==" in line}


def test_the_lock_files_hold_every_dependency_of_pyproject():
    """A dependency added to pyproject.toml without ./scripts/lock would install unpinned."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {normalised(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}

    runtime = names(project["dependencies"])
    assert runtime <= pinned("runtime.lock"), "run ./scripts/lock"
    assert runtime | names(project["optional-dependencies"]["dev"]) <= pinned("dev.lock")
