"""Screenshots of the main pages for docs/console.md, taken in headless Chromium (Debian's
chromium and chromium-driver) from a gateway started here on loopback with its sandbox.

    .venv/bin/python scripts/console_screenshots.py            # writes docs/images/*.png

It runs `iap serve` on a new SQLite database in a temporary directory, makes an agent (and a
police officer) with `iap staff create`, submits enquiries through the API as the README does,
then signs in through the page and saves each page at 1280 px wide.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
IAP = str(Path(sys.executable).parent / "iap")
PASSWORD = "screenshots only 2026"
# (file name, page, what to do there first): the pages docs/console.md shows.
PAGES = [
    ("console-sign-in", "/console/sign-in", None),
    ("console-home", "/console/", None),
    ("console-take-a-call", "/console/calls/new", None),
    ("console-history", "/console/history?phone=01865+000000", None),
    ("console-enquiry", "/console/enquiries/{triage_reference}", None),
    ("console-triage", "/console/triage", None),
    ("console-dead-letters", "/console/dead-letters", None),
    ("console-stuck", "/console/stuck", None),
    ("kiosk", "/kiosk/", None),
    ("track", "/track/{reference}?token={token}", None),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def gateway(workdir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port, sandbox_port, smtp_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "IAP_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'iap.db'}",
        "IAP_DEV_KEY_FILE": str(workdir / "dev-key"),
        "IAP_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
        "IAP_SANDBOX_SMTP_PORT": str(smtp_port),
        "IAP_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "IAP_ATTACHMENTS__DIRECTORY": str(workdir / "files"),
    }
    server = subprocess.Popen(
        [IAP, "serve", "--port", str(port)],
        env=env,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the gateway did not start")
        yield url, env
    finally:
        server.terminate()
        server.wait(10)


def staff(env: dict[str, str], workdir: Path, name: str, email: str, *extra: str) -> None:
    subprocess.run(
        [IAP, "staff", "create", name, "--email", email, *extra, "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )


def submit(url: str, key: str, body: dict[str, object]) -> dict[str, str]:
    answer = httpx.post(
        f"{url}/v1/enquiries", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    answer.raise_for_status()
    created: dict[str, str] = answer.json()
    return created


def main() -> None:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        raise SystemExit("needs Debian's chromium and chromium-driver")
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, gateway(Path(tmp)) as (url, env):
        workdir = Path(tmp)
        key = (workdir / "dev-key").read_text().strip()
        staff(env, workdir, "Jo Agent", "jo@council.example.org", "--role", "supervisor")
        citizen = {"name": "Sam Caller", "phone": "01865 000000", "email": "sam@example.org"}
        pothole = submit(
            url,
            key,
            {
                "service_code": "pothole",
                "description": "A deep pothole outside the library",
                "location": {"postcode": "OX1 1DJ"},
                "citizen": citizen,
            },
        )
        missed_bin = submit(
            url,
            key,
            {
                "service_code": "missed_bin",
                "description": "The green bin was not emptied",
                "location": {"postcode": "OX14 3AB"},
                "citizen": citizen,
            },
        )
        values = {
            "reference": pothole["reference"],
            "token": pothole.get("access_token", ""),
            "triage_reference": missed_bin["reference"],
        }
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in ("--headless=new", "--no-sandbox", "--window-size=1280,1000"):
            options.add_argument(argument)
        browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        browser.implicitly_wait(5)
        try:
            browser.get(f"{url}/console/sign-in")
            shot(browser, "console-sign-in")
            browser.find_element(By.ID, "email").send_keys("jo@council.example.org")
            browser.find_element(By.ID, "password").send_keys(PASSWORD)
            browser.find_element(By.CSS_SELECTOR, "main form button").click()
            for name, path, _ in PAGES[1:]:
                browser.get(url + path.format(**values))
                shot(browser, name)
        finally:
            browser.quit()
    print(json.dumps({"written": [f"docs/images/{name}.png" for name, _, _ in PAGES]}))


def shot(browser: webdriver.Chrome, name: str) -> None:
    """The whole page, however long, at 1280 px wide."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(max(int(height) + 100, 700), 4000))
    browser.save_screenshot(str(IMAGES / f"{name}.png"))
    browser.set_window_size(1280, 1000)


if __name__ == "__main__":
    main()
