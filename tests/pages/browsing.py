"""The pages in a real headless Chromium (Debian's chromium and chromium-driver) against a real
uvicorn server on loopback, checked with axe-core: the browser and gateway fixtures
(tests/pages/conftest.py) and the checks every page test shares."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from axe_selenium_python import Axe
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from app.clients.service import Scope, create_client
from app.clients.staff import StaffRole, create_staff
from app.core.audit import Actor
from app.core.db import create_engine
from app.core.settings import Settings
from app.main import create_app
from app.runtime import load_configured_catalogue
from tests.conftest import ThreadedServer
from tests.pages.console import PASSWORD

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
    # A page loaded by a click is looked in until it comes (or 10 s), never read half-loaded.
    chrome.implicitly_wait(10)
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


def no_sideways_scroll_at_320(browser: webdriver.Chrome, url: str, state: str) -> None:
    """The page at 320 CSS pixels wide (what 400 % zoom of a 1280-pixel window gives): it
    must not scroll sideways, and axe finds nothing there either."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 320, "height": 640, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        browser.get(url)
        wide = browser.execute_script("return document.documentElement.scrollWidth")
        assert wide <= 320, f"{state}: {wide} px wide at 320 px: it scrolls sideways"
        no_violations(browser, f"{state}, 320 px wide")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def no_sideways_scroll(browser: webdriver.Chrome, state: str, width: int = 320) -> None:
    """The page fits the window's width, its scroll bar's share left out: nothing to scroll
    sideways to."""
    wide, room = browser.execute_script(
        "const page = document.documentElement; return [page.scrollWidth, page.clientWidth];"
    )
    assert room <= width, f"{state}: the window is {room} px wide, not {width}"
    assert wide <= room, f"{state}: the page is {wide} px wide in {room} px: it scrolls sideways"


def send(browser: webdriver.Chrome, button: str) -> None:
    """Press a form's button (a CSS selector) and wait for the page it leads to: a click
    returns before the browser has loaded the answer."""
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, button).click()
    replaced(browser, page)


def replaced(browser: webdriver.Chrome, page: WebElement) -> None:
    """Wait (10 s at most) until the page an element belongs to has been replaced."""
    WebDriverWait(browser, 10).until(lambda _: _gone(page))


def _gone(element: WebElement) -> bool:
    """Whether the element has left the document (the old page, once the new one loads).
    Chromium sometimes says so as "Node … does not belong to the document" rather than as a
    stale element: either way it is gone."""
    try:
        element.is_enabled()
    except (StaleElementReferenceException, WebDriverException):
        return True
    return False


def new_key(database_url: str, name: str, scopes: list[Scope], channel: str | None = None) -> str:
    """A new API client's key, made outside any running event loop (the browser tests')."""
    return asyncio.run(_new_key(database_url, name, scopes, channel))


async def _new_key(database_url: str, name: str, scopes: list[Scope], channel: str | None) -> str:
    engine = create_engine(database_url)
    try:
        _, key = await create_client(engine, name=name, scopes=scopes, channel=channel)
        return key
    finally:
        await engine.dispose()


def new_person(settings: Settings, role: str, *, name: str = "Jo Agent", **kw: str) -> str:
    """A new member of staff with the console test password, made outside any running event
    loop (the browser tests'); their email."""
    return asyncio.run(_new_person(settings, role, name, kw.get("organisation")))


async def _new_person(settings: Settings, role: str, name: str, organisation: str | None) -> str:
    engine = create_engine(settings.database_url)
    email = f"{name.split()[0].lower()}.{uuid.uuid4().hex[:6]}@staff.example.org"
    try:
        await create_staff(
            engine,
            load_configured_catalogue(settings),
            name=name,
            email=email,
            role=StaffRole(role),
            organisation_id=organisation,
            password=PASSWORD,
            by=Actor("browser tests"),
        )
        return email
    finally:
        await engine.dispose()


def sign_in_by_browser(browser: webdriver.Chrome, url: str, email: str) -> None:
    """Sign in through the page, as a person does."""
    browser.get(f"{url}/console/sign-in")
    browser.find_element(By.ID, "email").send_keys(email)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    send(browser, "main form button[type=submit]")
