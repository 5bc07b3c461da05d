"""Fixtures of the page tests in a real browser: Debian's headless Chromium driven by Selenium,
and a real gateway on loopback (uvicorn, its lifespan and dispatcher running)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from app.clients.service import Scope, create_client
from app.core.db import create_engine
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import ThreadedServer

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
    key = new_key(settings.database_url, "browser-tests", [Scope.admin])
    server = ThreadedServer(create_app(settings), lifespan="on").start()
    try:
        yield server.url, key
    finally:
        server.stop()


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
