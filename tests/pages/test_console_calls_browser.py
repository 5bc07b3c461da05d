"""Taking a call in a real headless Chromium against a real gateway on loopback, by keyboard
alone once signed in (Tab, Shift+Tab, Space, arrows, Enter and typing into whatever has the
focus): the service found by the caller's words, its question answered, the live routing
preview following the postcode as it is typed (console-calls.js), the error summary, the
caller's details and consent, and the reference read back. axe-core finds nothing on any page
or state, and no page scrolls sideways at 320 px; then the caller's history finds the call."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from app.catalogue.catalogue import load_catalogue
from app.clients.staff import StaffRole, create_staff
from app.core.audit import Actor
from app.core.db import create_engine
from app.core.settings import SHIPPED_CONFIG_DIR, Settings
from tests.pages.browsing import no_sideways_scroll_at_320, no_violations, replaced
from tests.pages.console import PASSWORD

pytestmark = pytest.mark.e2e


async def _agent(database_url: str) -> str:
    engine = create_engine(database_url)
    catalogue = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": "http://x"})
    email = f"{uuid.uuid4().hex[:8]}@staff.example.org"
    try:
        await create_staff(
            engine,
            catalogue,
            name="Jo Agent",
            email=email,
            role=StaffRole.agent,
            password=PASSWORD,
            by=Actor("tests"),
        )
    finally:
        await engine.dispose()
    return email


def sign_in(browser: webdriver.Chrome, url: str, email: str) -> None:
    browser.get(f"{url}/console/sign-in")
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, "email").send_keys(email)
    browser.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
    replaced(browser, page)  # Enter returns before the next page has loaded
    assert browser.find_element(By.TAG_NAME, "h1").text == "Hello, Jo Agent"


def keys(browser: webdriver.Chrome, *pressed: str) -> None:
    """Keys pressed on whatever has the focus, as a person at the keyboard does."""
    chain = ActionChains(browser)
    for key in pressed:
        chain.send_keys(key)
    chain.perform()


def navigates(browser: webdriver.Chrome, *pressed: str) -> None:
    """Keys that open another page: pressed, then the new page waited for until loaded."""
    old = browser.find_element(By.TAG_NAME, "html")
    keys(browser, *pressed)
    replaced(browser, old)
    WebDriverWait(browser, 10).until(
        lambda b: b.execute_script("return document.readyState") == "complete"
    )


def focused(browser: webdriver.Chrome) -> WebElement:
    return browser.switch_to.active_element


def tab_to(
    browser: webdriver.Chrome, wanted: Callable[[WebElement], bool], back: bool = False
) -> None:
    """Tab (or Shift+Tab) until the focus is on the element wanted; fails if it never is."""
    for _ in range(80):
        if wanted(focused(browser)):
            return
        keys(browser, Keys.SHIFT + Keys.TAB if back else Keys.TAB)
    raise AssertionError("the keyboard never reached the element")


def by_id(name: str) -> Callable[[WebElement], bool]:
    return lambda element: element.get_attribute("id") == name


def by_text(text: str) -> Callable[[WebElement], bool]:
    return lambda element: element.text.strip() == text


def heading(browser: webdriver.Chrome) -> str:
    return browser.find_element(By.TAG_NAME, "h1").text


def wait_for(browser: webdriver.Chrome, seen: Callable[[webdriver.Chrome], bool]) -> None:
    """Until the page shows it (a page being replaced is looked at again)."""
    WebDriverWait(
        browser, 10, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
    ).until(seen)


def preview_says(browser: webdriver.Chrome, words: str) -> None:
    wait_for(browser, lambda b: words in b.find_element(By.ID, "routing-preview").text)


def test_an_agent_takes_a_call_by_keyboard_alone(
    browser: webdriver.Chrome, gateway: tuple[str, str], settings: Settings, back_office: Any
) -> None:
    url, _ = gateway
    sign_in(browser, url, asyncio.run(_agent(settings.database_url)))

    # From the console's start page to taking a call, by keyboard.
    tab_to(browser, by_text("Take a call"))
    navigates(browser, Keys.ENTER)
    assert heading(browser) == "What is the call about?"
    no_violations(browser, "which service, as first opened")

    tab_to(browser, by_id("q"))
    navigates(browser, "my bins were not emptied", Keys.ENTER)
    assert "match" in browser.find_element(By.TAG_NAME, "legend").text
    no_violations(browser, "which service, the caller's words matched")
    tab_to(browser, by_id("service"))
    keys(browser, Keys.SPACE)
    assert focused(browser).get_attribute("value") == "missed-bin"
    navigates(browser, Keys.ENTER)
    assert heading(browser) == "Missed bin collection"
    no_violations(browser, "the take-a-call form")

    # Sent at once with nothing filled in: the error summary, its links to the fields.
    tab_to(browser, by_id("send"))
    navigates(browser, Keys.ENTER)
    summary = browser.find_element(By.CLASS_NAME, "error-summary")
    assert "Answer the question “Which bin was missed?”" in summary.text
    assert browser.title.startswith("Error:")
    no_violations(browser, "the take-a-call form with the error summary")
    tab_to(browser, lambda e: (e.get_attribute("href") or "").endswith("#attr-bin_type"))
    keys(browser, Keys.ENTER)
    assert focused(browser).get_attribute("id") == "attr-bin_type"

    # The question: the first radio, then the arrow keys to "Garden waste".
    keys(browser, Keys.SPACE, Keys.ARROW_DOWN, Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    assert focused(browser).get_attribute("value") == "garden"
    tab_to(browser, by_id("description"))
    keys(browser, "Our garden waste bin was missed on Tuesday")

    # The place: the preview follows the postcode as it is typed.
    tab_to(browser, by_id("postcode"))
    keys(browser, "OX4 1AA")
    preview_says(browser, "This goes to")
    keys(browser, *([Keys.BACKSPACE] * 7), "OX14 3AB")
    preview_says(browser, "This will go to the triage desk")
    preview = browser.find_element(By.ID, "routing-preview").text
    assert "Vale of White Horse District Council" in preview
    assert "South Oxfordshire District Council" in preview
    no_violations(browser, "the take-a-call form with the routing preview")

    # The caller, and the consent script read to them.
    tab_to(browser, by_id("name"))
    keys(browser, "Robin Example", Keys.TAB, "07700 900123", Keys.TAB, "robin@example.org")
    tab_to(browser, by_id("preferred_contact"))
    keys(browser, Keys.SPACE)
    assert focused(browser).get_attribute("value") == "phone"
    tab_to(browser, by_id("share"))
    keys(browser, Keys.SPACE)
    tab_to(browser, by_id("updates"))
    keys(browser, Keys.SPACE)
    tab_to(browser, by_id("send"))
    navigates(browser, Keys.ENTER)

    assert heading(browser) == "Enquiry sent"
    groups = [g.text for g in browser.find_elements(By.CLASS_NAME, "reference-readout__group")]
    reference = "-".join(groups)
    assert re.fullmatch(r"[0-9A-Z]{3}-[0-9A-Z]{3}-[0-9A-Z]{3}", reference), reference
    assert "Oxfordshire Contact Centre (triage desk)" in browser.page_source
    no_violations(browser, "the confirmation")
    sent_at = browser.current_url

    for page, state in (
        (f"{url}/console/calls/new", "which service"),
        (f"{url}/console/calls/new?service=missed-bin", "the take-a-call form"),
        (sent_at, "the confirmation"),
        (f"{url}/console/history", "caller history"),
    ):
        no_sideways_scroll_at_320(browser, page, state)

    # The caller's history finds the call just taken.
    browser.get(f"{url}/console/history")
    no_violations(browser, "caller history, the search")
    browser.find_element(By.ID, "who").send_keys("+44 7700 900123" + Keys.ENTER)
    wait_for(browser, lambda b: reference in b.page_source)
    assert "1 enquiry" in browser.find_element(By.ID, "results").text
    no_violations(browser, "caller history, the results")
    browser.find_element(By.ID, "who").clear()
    browser.find_element(By.ID, "who").send_keys("not a number" + Keys.ENTER)
    assert browser.find_element(By.CLASS_NAME, "error-summary").is_displayed()
    no_violations(browser, "caller history, the error summary")
