"""The tracking page in a real headless Chromium (Debian's chromium and chromium-driver) against
a real uvicorn server on loopback, checked with axe-core (WCAG 2.2 A and AA rules) in each
state: as first opened, with the error summary, after adding information, after withdrawing,
in Welsh, and 320 CSS pixels wide (what 400 % zoom of a 1280-pixel window gives) with no
horizontal scrolling. No JavaScript of ours runs: the forms are posted by the browser."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from axe_selenium_python import Axe
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from app.clients.service import Scope, create_client
from app.core.db import create_engine
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import ThreadedServer, bearer, enquiry_body
from tests.conversation.helpers import with_citizen

pytestmark = pytest.mark.e2e
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"


def browser_binaries() -> tuple[str, str]:
    """Debian's Chromium and its driver; the test fails (never skips) without them."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(f"the browser tests need Chromium and its driver: {INSTALL} (.ci/run does)")
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, driver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--lang=en-GB"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_page_load_timeout(30)
    chrome.set_script_timeout(60)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture
def gateway(settings: Settings) -> Iterator[tuple[str, str]]:
    """A real gateway on loopback (uvicorn, its lifespan and dispatcher running), and an
    admin key for it."""
    _, key = asyncio.run(_admin_key(settings.database_url))
    server = ThreadedServer(create_app(settings), lifespan="on").start()
    try:
        yield server.url, key
    finally:
        server.stop()


async def _admin_key(database_url: str) -> tuple[Any, str]:
    engine = create_engine(database_url)
    try:
        return await create_client(engine, name="browser-tests", scopes=[Scope.admin])
    finally:
        await engine.dispose()


def submit(url: str, key: str) -> tuple[str, str]:
    created = httpx.post(
        f"{url}/v1/enquiries", json=with_citizen(enquiry_body()), headers=bearer(key), timeout=10
    )
    assert created.status_code == 201, created.text
    return created.json()["reference"], created.json()["access_token"]


# axe-core's run, its failure answered too (axe_selenium_python's own run waits forever on one).
# The WCAG 2.x A and AA rules and best practices this axe-core knows (the axe-core that
# axe-selenium-python bundles for Python 3.11 is older, without the 2.2 tags).
RUN_AXE = """
const done = arguments[arguments.length - 1];
const known = new Set(axe.getRules().flatMap((rule) => rule.tags));
const tags = %s.filter((tag) => known.has(tag));
axe.run(document, {runOnly: {type: "tag", values: tags}})
  .then((results) => done({...results, tags: tags, version: axe.version}))
  .catch((error) => done({error: String(error)}));
"""


def no_violations(browser: webdriver.Chrome, state: str) -> None:
    axe = Axe(browser)
    axe.inject()
    results = browser.execute_async_script(RUN_AXE % json.dumps(TAGS))
    assert "error" not in results, f"{state}: axe failed: {results['error']}"
    assert results["violations"] == [], f"{state}: {axe.report(results['violations'])}"
    assert {"wcag2a", "wcag2aa"} <= set(results["tags"]), results["tags"]
    assert results["passes"], f"{state}: axe checked nothing"
    print(f"axe-core {results['version']} {state}: {len(results['passes'])} rules passed")


def test_the_tracking_page_in_every_state_has_no_accessibility_violations(
    browser: webdriver.Chrome, gateway: tuple[str, str], back_office: Any
) -> None:
    url, key = gateway
    reference, token = submit(url, key)
    page = f"{url}/track/{reference}?token={token}"

    browser.get(page)
    assert browser.find_element(By.TAG_NAME, "h1").text == reference
    no_violations(browser, "as first opened")

    browser.find_element(By.CSS_SELECTOR, "form[action*='/information'] button").click()
    summary = browser.find_element(By.CLASS_NAME, "error-summary")
    assert "Enter the information" in summary.text
    assert browser.find_element(By.ID, "information-error").is_displayed()
    no_violations(browser, "with the error summary")
    summary.find_element(By.TAG_NAME, "a").click()
    assert browser.switch_to.active_element.get_attribute("id") == "information"

    browser.find_element(By.ID, "information").send_keys("It is by the bus stop")
    browser.find_element(By.CSS_SELECTOR, "form[action*='/information'] button").click()
    assert "passed on" in browser.find_element(By.CLASS_NAME, "notification-banner").text
    no_violations(browser, "after adding information")

    browser.get(f"{page}&lang=cy")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "cy"
    assert "Eich ymholiad" in browser.page_source
    no_violations(browser, "in Welsh")

    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 320, "height": 640, "deviceScaleFactor": 1, "mobile": False},
    )
    browser.get(page)
    wide = browser.execute_script("return document.documentElement.scrollWidth")
    assert wide <= 320, f"the page is {wide} px wide at 320 px: it scrolls sideways"
    no_violations(browser, "320 px wide")
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    browser.get(page)
    browser.find_element(By.ID, "reason").send_keys("Sorted it out myself")
    browser.find_element(By.CSS_SELECTOR, "form[action*='/withdraw'] button").click()
    assert "withdrawn" in browser.find_element(By.CLASS_NAME, "notification-banner").text
    assert browser.find_elements(By.TAG_NAME, "form") == []
    no_violations(browser, "after withdrawing")

    browser.get(f"{url}/track/{reference}?token=wrong")
    no_violations(browser, "the not-found page")
