"""The console's sign-in pages in the real browser: the wrong-password error summary, the
second factor's code page, the start page and the "Do you need more time?" warning, each with
no axe-core violations, at 1280 and 320 CSS pixels wide."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from app.clients.sessions import Sessions
from app.clients.staff import find_staff
from app.core.audit import Actor
from app.core.db import create_engine
from app.core.settings import Settings
from tests.pages.browsing import (
    new_person,
    no_sideways_scroll_at_320,
    no_violations,
    send,
    sign_in_by_browser,
)

pytestmark = pytest.mark.e2e


def second_factor(settings: Settings, email: str) -> pyotp.TOTP:
    async def enrol() -> str:
        engine = create_engine(settings.database_url)
        try:
            staff = await find_staff(engine, email)
            sessions = Sessions(engine, settings.sealer(), settings.console)
            return await sessions.enrol_second_factor(staff.id, by=Actor("tests"))
        finally:
            await engine.dispose()

    uri = asyncio.run(enrol())
    return pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])


def test_the_sign_in_pages_have_no_accessibility_violations(
    browser: webdriver.Chrome, gateway: tuple[str, str], settings: Settings
) -> None:
    url, _ = gateway
    email = new_person(settings, "agent", name="Jo Agent")

    browser.get(f"{url}/console/sign-in")
    browser.find_element(By.ID, "email").send_keys(email)
    browser.find_element(By.ID, "password").send_keys("not the right password")
    send(browser, "main form button[type=submit]")
    summary = browser.find_element(By.CLASS_NAME, "error-summary")
    assert "Enter a correct email address and password" in summary.text
    no_violations(browser, "a refused sign-in")
    summary.find_element(By.TAG_NAME, "a").click()
    assert browser.switch_to.active_element.get_attribute("id") == "email"

    sign_in_by_browser(browser, url, email)
    assert "Hello, Jo Agent" in browser.find_element(By.TAG_NAME, "h1").text
    no_violations(browser, "the console's start page")
    no_sideways_scroll_at_320(browser, f"{url}/console/", "the console's start page")

    browser.get(f"{url}/console/still-there?next=%2Fconsole%2F")
    assert "Do you need more time?" in browser.find_element(By.TAG_NAME, "h1").text
    no_violations(browser, "the idle warning")
    browser.find_element(By.LINK_TEXT, "Yes, I need more time").click()
    assert "Hello, Jo Agent" in browser.find_element(By.TAG_NAME, "h1").text

    send(browser, "form[action='/console/sign-out'] button")
    assert "You have signed out" in browser.page_source
    no_violations(browser, "signed out")

    totp = second_factor(settings, email)
    sign_in_by_browser(browser, url, email)
    assert browser.find_element(By.ID, "code").get_attribute("inputmode") == "numeric"
    no_violations(browser, "the security code page")
    browser.find_element(By.ID, "code").send_keys(totp.now())
    send(browser, "main form button[type=submit]")
    assert "Hello, Jo Agent" in browser.find_element(By.TAG_NAME, "h1").text
