"""The README's commands (the development key, the curls), run as written against a real
`iap serve` on loopback."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.adapters.factory import photo
from tests.conftest import UNREACHABLE_RATE, bearer, free_port

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def readme_curls() -> list[str]:
    return [b for b in readme_blocks() if b.startswith("curl")]


@pytest.fixture
def gateway(database_url, sandbox, tmp_path):
    """`iap serve` in the development default, run in an empty folder: it prints the
    development key and keeps it in ./.iap-dev-key there, as the README says."""
    port = free_port()
    env = {
        **os.environ,
        "IAP_ENV": "development",
        "IAP_DATABASE_URL": database_url,
        "IAP_SANDBOX_URL": sandbox.url,
        "IAP_SANDBOX_SMTP_PORT": str(sandbox.smtp_port),
        # Where Cherwell's back-office fetches a photo's signed link (port 8000 as written).
        "IAP_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "IAP_STATUS_POLL_SECONDS": "0.2",
        # The test polls faster than a person would; the limits stay on, out of its reach.
        "IAP_API__RATE_LIMIT_CLIENT": UNREACHABLE_RATE,
        "IAP_API__RATE_LIMIT_ANONYMOUS": UNREACHABLE_RATE,
    }
    env.pop("IAP_DEV_KEY_FILE", None)
    output = (tmp_path / "serve.out").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from app.cli import main; main()",
            "serve",
            "--port",
            str(port),
            "--no-sandbox",
        ],
        env=env,
        cwd=tmp_path,
        stdout=output,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(timeout=15)
    process.stderr.close()
    output.close()


@pytest.fixture
def key(gateway, tmp_path):
    """IAP_KEY as the README's export sets it, in the folder `iap serve` ran in."""
    export = next(b for b in readme_blocks() if b.startswith("export IAP_KEY"))
    result = subprocess.run(
        ["bash", "-c", export + 'printf %s "$IAP_KEY"'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    key = result.stdout
    assert key.startswith("iap_")
    assert (
        f"development API key (all scopes, kept in .iap-dev-key): {key}"
        in (tmp_path / "serve.out").read_text()
    )
    return key


def run(command: str, port: int, key: str = "", cwd: Path | None = None) -> dict:
    command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "IAP_KEY": key},
    )
    return json.loads(result.stdout)


def next_poll(port: int, key: str) -> str:
    organisations = httpx.get(
        f"http://127.0.0.1:{port}/v1/organisations", headers=bearer(key)
    ).json()
    return next(o for o in organisations if o["id"] == "cherwell")["status_updates"]["next_poll_at"]


@pytest.mark.e2e
def test_the_readme_core_flow_works_as_written(gateway, back_office, sandbox, key, tmp_path):
    curls = readme_curls()
    submit, read_back, citizen_read, open311, information, subject_access, history, triage = curls
    created = run(submit, gateway, key)
    assert created["status"] == "routed"
    assert created["destinations"][0]["organisation_id"] == "cherwell"
    read_command = read_back.replace("K7Q-M4X-PB6", created["reference"])
    deadline = time.monotonic() + 10
    while (enquiry := run(read_command, gateway, key))["status"] != "dispatched":
        assert time.monotonic() < deadline, enquiry
        time.sleep(0.05)
    case = enquiry["destinations"][0]["remote_reference"]
    assert case
    assert run(submit, gateway, key)["reference"] == created["reference"]  # same Idempotency-Key
    assert len(back_office.cases["cherwell"]) == 1
    # Cherwell's back-office moves the case on; the gateway polls it and shows it once.
    moved = httpx.post(
        f"{sandbox.url}/_sandbox/cherwell/cases/{case}/status", json={"status": "in_progress"}
    )
    assert moved.status_code < 300, moved.text
    deadline = time.monotonic() + 10
    while (enquiry := run(read_command, gateway, key))["status"] != "in_progress":
        assert time.monotonic() < deadline, enquiry
        time.sleep(0.1)
    for _ in range(2):  # two more polls: the update is still there, once
        polled_at = next_poll(gateway, key)
        while next_poll(gateway, key) == polled_at:
            assert time.monotonic() < deadline + 10, "the poller stopped"
            time.sleep(0.05)
    updates = [
        e for e in run(read_command, gateway, key)["timeline"] if e["type"] == "status.updated"
    ]
    assert [u["status"] for u in updates] == ["in_progress"]
    # The citizen follows it with the access token alone, their details masked.
    citizen_command = citizen_read.replace("K7Q-M4X-PB6", created["reference"]).replace(
        "THE-ACCESS-TOKEN", created["access_token"]
    )
    seen = run(citizen_command, gateway)
    assert seen["status"] == "in_progress"
    assert seen["citizen"] == {
        "name": "A*** E******",
        "phone": "********000",
        "preferred_contact": "phone",
    }
    # An Open311 app's pin in Banbury reaches Cherwell too, through the same intake.
    [made] = run(open311, gateway, key)
    assert set(made) == {"service_request_id", "token", "service_notice", "account_id"}
    deadline = time.monotonic() + 10
    while len(back_office.cases["cherwell"]) < 2:
        assert time.monotonic() < deadline, "the Open311 request never reached Cherwell"
        time.sleep(0.05)
    references = {c["reference"] for c in back_office.cases["cherwell"].values()}
    assert references == {created["reference"], made["service_request_id"]}
    # They add a photo from their phone: Cherwell's case gets it once, without its EXIF.
    (tmp_path / "bin.jpg").write_bytes(photo(exif=True))
    information_command = information.replace("K7Q-M4X-PB6", created["reference"]).replace(
        "THE-ACCESS-TOKEN", created["access_token"]
    )
    said = run(information_command, gateway, cwd=tmp_path)
    assert [a["content_type"] for a in said["attachments"]] == ["image/jpeg"]
    deadline = time.monotonic() + 10
    while not (follow_ups := back_office.cases["cherwell"][case].get("follow_ups")):
        assert time.monotonic() < deadline, "the information never reached Cherwell"
        time.sleep(0.05)
    [forwarded] = follow_ups
    assert forwarded["text"] == "It is the green food bin by the gate"
    assert [f["exif"] for f in forwarded["attachments"]] == [False]
    # The data-protection officer's export finds it by the phone number, however it is typed.
    export = run(subject_access, gateway, key)
    [exported] = export["enquiries"]
    assert exported["reference"] == created["reference"]
    assert exported["citizen"]["phone"] == "01295 000000"
    assert [s["organisation_id"] for s in exported["shared_with"]] == ["cherwell"]
    # An agent finds the caller's earlier enquiry by the phone number.
    [earlier] = run(history, gateway, key)["items"]
    assert earlier["reference"] == created["reference"]
    assert earlier["postcode"] == "OX16 5QA"
    # Cherwell's missed bin was sure of its council: nothing waits at the triage desk.
    assert run(triage, gateway, key)["items"] == []
