"""The `iap` command as an operator runs it."""

import json
import os
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from tests.conftest import free_port, make_settings

ROOT = Path(__file__).resolve().parents[2]


def iap(*args, database_url, env=None, check=True):
    environment = {**os.environ, "IAP_ENV": "test", "IAP_DATABASE_URL": database_url, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        cwd=ROOT,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def explain(service, postcode=None, **kwargs):
    """`iap routes explain` for a service, at a postcode when given."""
    where = ("--postcode", postcode) if postcode else ()
    return iap("routes", "explain", "--service", service, *where, **kwargs)


@pytest.mark.parametrize(
    ("postcode", "decision", "why"),
    [
        ("ox16 1aa", "decision: cherwell:", "E07000177"),
        ("OX1 5ZZ", "decision: contact-centre:", "cannot be decided"),
    ],
    ids=["decided", "cannot-decide"],
)
def test_routes_explain_prints_the_decision_and_why(postcode, decision, why, database_url):
    result = explain("missed-bin", postcode, database_url=database_url)
    assert decision in result.stdout
    assert why in result.stdout


def test_routes_explain_refuses_out_of_area_and_unknown_input(database_url):
    outside = explain("pothole", "SW1A 1AA", database_url=database_url, check=False)
    assert outside.returncode == 1
    assert "refused (out-of-area)" in outside.stdout
    unknown = explain("unicorns", database_url=database_url, check=False)
    assert unknown.returncode == 2
    assert "no service 'unicorns'" in unknown.stderr


def test_routes_explain_places_a_pin_and_an_address(database_url):
    def at(*where: str, check: bool = True):
        args = ("routes", "explain", "--service", "missed-bin", *where)
        return iap(*args, database_url=database_url, check=check)

    pin = at("--lat", "51.67", "--lon", "-1.295").stdout
    assert "decision: vale-of-white-horse:" in pin
    assert "(from the point, point via table)" in pin
    edge = at("--lat", "51.724", "--lon", "-1.254").stdout
    assert "decision: contact-centre: the district of 51.724,-1.254 cannot be decided" in edge
    written = at("--address", "1 Ock Street, Abingdon OX14 5AG").stdout
    assert "(from OX14 5AG, sector via table)" in written
    half = at("--lat", "51.67", check=False)
    assert half.returncode == 2
    assert "give both lat and lon, or neither" in half.stderr


def test_gazetteer_import_makes_answers_exact(database_url, tmp_path):
    onspd = tmp_path / "onspd.csv"
    onspd.write_text(
        "pcd,pcds,oscty,oslaua,pfa,icb,lat,long,doterm\n"
        "OX1 5AB,OX1 5AB,E10000025,E07000180,E23000029,E54000044,51.724,-1.254,\n"
        "OX1 5AD,OX1 5AD,E10000025,E07000178,E23000029,E54000044,51.730,-1.255,\n"
    )
    imported = iap("gazetteer", "import", str(onspd), database_url=database_url)
    assert "imported 2 postcodes" in imported.stdout
    again = iap("gazetteer", "import", str(onspd), database_url=database_url)
    assert "imported 2 postcodes" in again.stdout  # re-import replaces, no duplicates
    vale = explain("missed-bin", "OX1 5AB", database_url=database_url)
    assert "decision: vale-of-white-horse:" in vale.stdout
    assert "postcode via gazetteer" in vale.stdout


def test_bad_configuration_stops_start_up_with_a_clear_message(database_url, tmp_path):
    (tmp_path / "organisations.yaml").write_text("organisations: []\n")
    (tmp_path / "services.yaml").write_text("services: []\n")
    result = explain(
        "pothole", database_url=database_url, env={"IAP_CONFIG_DIR": str(tmp_path)}, check=False
    )
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert "triage" in result.stderr


def test_committed_openapi_document_is_current(database_url):
    app = create_app(make_settings(database_url, "http://127.0.0.1:8090"))
    committed = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    assert committed == app.openapi(), "run `iap openapi` and commit openapi/openapi.json"


@pytest.mark.parametrize("command", ["serve", "worker", "migrate", "sandbox", "openapi"])
def test_every_command_documents_itself(command, database_url):
    assert "Usage" in iap(command, "--help", database_url=database_url).stdout


def test_sandbox_serves_the_back_offices_and_an_smtp_sink():
    port, smtp_port = free_port(), free_port()
    options = ["--port", str(port), "--smtp-port", str(smtp_port), "--step-seconds", "30"]
    process = subprocess.Popen(
        [sys.executable, "-c", "from app.cli import main; main()", "sandbox", *options],
        env={**os.environ, "IAP_ENV": "test"},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if http.get("/_sandbox/stats").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, "iap sandbox exited"
                assert time.monotonic() < deadline, "iap sandbox did not answer"
                time.sleep(0.05)
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as smtp:
                smtp.sendmail("iap@example.org", ["desk@example.org"], b"Subject: Hello\r\n\r\nHi")
            [message] = http.get("/mail.json").json()["messages"]
            assert message["subject"] == "Hello"
    finally:
        process.terminate()
        process.wait(timeout=15)
