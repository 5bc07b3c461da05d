"""The kiosk in a real headless Chromium against a real gateway on loopback: set up with a
kiosk key, then a citizen's enquiry clicked through from the start to the receipt, every page
and state checked with axe-core (WCAG 2.x A and AA, best practices), at a 1280-pixel window and
at 320 CSS pixels wide with nothing to scroll sideways. The forms are posted by the browser;
the one script of ours (kiosk.js) only shows the receipt's Print button."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from app.clients.service import Scope
from app.core.settings import Settings
from tests.conftest import bearer
from tests.pages.browsing import new_key, no_sideways_scroll, no_violations, replaced

pytestmark = pytest.mark.e2e
NAME, EMAIL = "Robin Example", "robin@example.org"
NARROW = {"width": 320, "height": 640, "deviceScaleFactor": 1, "mobile": False}


def press(browser: webdriver.Chrome, text: str) -> None:
    """Press the button (or button-like link) that says `text`."""
    page = browser.find_element(By.TAG_NAME, "html")
    for element in browser.find_elements(By.CSS_SELECTOR, "button, a.button"):
        if element.is_displayed() and element.text.strip() == text:
            element.click()
            replaced(browser, page)  # the next page has come
            return
    raise AssertionError(f"no button says {text!r}: {browser.page_source}")


def choose(browser: webdriver.Chrome, label: str) -> None:
    """Tap a radio's or checkbox's label, as a finger would."""
    browser.find_element(By.XPATH, f"//label[normalize-space()={label!r}]").click()


def type_into(browser: webdriver.Chrome, field_id: str, text: str) -> None:
    field = browser.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(text)


def heading(browser: webdriver.Chrome) -> str:
    return str(browser.find_element(By.TAG_NAME, "h1").text)


def walk_through(browser: webdriver.Chrome, look: Callable[[str], None]) -> str:
    """A pothole enquiry from the start page to the receipt; `look` at each page and state.
    The receipt's reference."""
    assert heading(browser) == "Tell us about a problem or ask a question"
    look("the start page")
    press(browser, "Start now")
    assert heading(browser) == "What is it about?"
    look("what it is about")
    press(browser, "Continue")
    summary = browser.find_element(By.CLASS_NAME, "error-summary")
    assert "Select what it is about" in summary.text
    look("what it is about, with the error summary")
    summary.find_element(By.TAG_NAME, "a").click()
    assert browser.switch_to.active_element.get_attribute("id") == "group"
    choose(browser, "Roads and transport")
    press(browser, "Continue")
    assert heading(browser) == "Which of these is it?"
    look("which service")
    choose(browser, "Pothole")
    press(browser, "Continue")
    assert heading(browser) == "Is the pothole in the road or on the pavement?"
    look("a question with radios")
    choose(browser, "Road")
    press(browser, "Continue")
    type_into(browser, "depth_cm", "very")
    press(browser, "Continue")
    assert "Enter a number" in browser.find_element(By.CLASS_NAME, "error-summary").text
    look("a number question, with the error summary")
    type_into(browser, "depth_cm", "8")
    press(browser, "Continue")
    assert heading(browser) == "Tell us about it"
    look("what happened")
    type_into(browser, "description", "A deep pothole outside number 12")
    press(browser, "Continue")
    look("the postcode")
    type_into(browser, "postcode", "OX4 1AA")
    press(browser, "Continue")
    assert heading(browser) == "How can they contact you? (optional)"
    look("contact details")
    type_into(browser, "name", NAME)
    type_into(browser, "email", EMAIL)
    press(browser, "Continue")
    assert heading(browser) == "What may we do with your details?"
    look("consent")
    choose(browser, browser.find_element(By.CSS_SELECTOR, "label[for=share]").text)
    choose(browser, browser.find_element(By.CSS_SELECTOR, "label[for=updates]").text)
    press(browser, "Continue")
    assert heading(browser) == "Check your answers before sending your enquiry"
    assert NAME in browser.page_source
    look("check your answers")
    press(browser, "Send enquiry")
    assert heading(browser) == "Your enquiry has been sent"
    reference = browser.find_element(By.CLASS_NAME, "kiosk-reference").text.replace(" ", "")
    assert re.fullmatch(r"\w{3}-\w{3}-\w{3}", reference), reference
    assert browser.find_element(By.ID, "print").is_displayed()  # kiosk.js ran
    assert not browser.find_element(By.ID, "print-hint").is_displayed()
    for personal in (NAME, EMAIL, "number 12", "OX4 1AA"):
        assert personal not in browser.page_source
    look("the receipt")
    page = browser.find_element(By.TAG_NAME, "html")
    browser.back()  # to the check page: its answers are gone, the start is shown instead
    replaced(browser, page)
    assert heading(browser) == "Tell us about a problem or ask a question"
    assert NAME not in browser.page_source
    return reference


def test_a_citizen_clicks_through_the_kiosk_with_no_accessibility_violations(
    browser: webdriver.Chrome, gateway: tuple[str, str], settings: Settings, back_office: object
) -> None:
    url, admin = gateway
    kiosk_key = new_key(
        settings.database_url, "library-kiosk", [Scope.enquiries_submit], channel="kiosk"
    )
    browser.get(f"{url}/kiosk/")
    assert heading(browser) == "This kiosk is not set up"
    no_violations(browser, "not set up")
    browser.get(f"{url}/kiosk/setup")
    press(browser, "Set up")
    assert "Enter the kiosk's API key" in browser.find_element(By.CLASS_NAME, "error-summary").text
    no_violations(browser, "set up, with the error summary")
    type_into(browser, "key", kiosk_key)
    press(browser, "Set up")

    def look(state: str) -> None:
        no_violations(browser, state)

    reference = walk_through(browser, look)
    stored = httpx.get(f"{url}/v1/enquiries/{reference}", headers=bearer(admin), timeout=10)
    assert stored.json()["channel"] == "kiosk"
    assert [d["organisation_name"] for d in stored.json()["destinations"]] == [
        "Oxfordshire County Council"
    ]

    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", NARROW)
    browser.get(f"{url}/kiosk/")

    def look_narrow(state: str) -> None:
        no_sideways_scroll(browser, state)
        no_violations(browser, f"{state}, 320 px wide")

    walk_through(browser, look_narrow)
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_other_kinds_of_question_and_the_other_pages_have_no_violations(
    browser: webdriver.Chrome, gateway: tuple[str, str], settings: Settings
) -> None:
    url, _ = gateway
    kiosk_key = new_key(
        settings.database_url, "library-kiosk", [Scope.enquiries_submit], channel="kiosk"
    )
    browser.get(f"{url}/kiosk/setup")
    type_into(browser, "key", kiosk_key)
    press(browser, "Set up")
    for width in (None, 320):
        if width:
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", NARROW)

        def look(state: str, width: int | None = width) -> None:
            if width:
                no_sideways_scroll(browser, state)
            no_violations(browser, f"{state}{', 320 px wide' if width else ''}")

        browser.get(f"{url}/kiosk/")
        press(browser, "Start now")
        type_into(browser, "q", "zzzz")
        press(browser, "Search")
        assert "Nothing matched" in browser.page_source
        look("a search that found nothing")
        browser.get(f"{url}/kiosk/question/topic")
        type_into(browser, "q", "bin")
        press(browser, "Search")
        look("a search's results")
        choose(browser, "Missed bin collection")
        press(browser, "Continue")
        choose(browser, "Recycling")
        press(browser, "Continue")
        assert heading(browser) == "When should it have been collected? (optional)"
        look("a date question")
        type_into(browser, "collection_date-day", "31")
        type_into(browser, "collection_date-month", "2")
        type_into(browser, "collection_date-year", "2026")
        press(browser, "Continue")
        assert "Enter a real date" in browser.find_element(By.CLASS_NAME, "error-summary").text
        look("a date question, with the error summary")
        browser.get(f"{url}/kiosk/question/topic")
        choose(browser, "Street cleaning")
        press(browser, "Continue")
        choose(browser, "Fly-tipping")
        press(browser, "Continue")
        look("a question with checkboxes")
        choose(browser, "Furniture")
        press(browser, "Continue")
        look("the description at its longer idle time")
        browser.get(f"{url}/kiosk/still-there?step=description")
        assert heading(browser) == "Do you need more time?"
        look("do you need more time")
        press(browser, "Yes, I need more time")
        assert heading(browser) == "Tell us about it"
        browser.get(f"{url}/kiosk/?reset=idle")
        assert "have been cleared" in browser.page_source
        look("cleared after the idle time")
        browser.get(f"{url}/kiosk/?lang=cy")
        press(browser, "Dechrau nawr")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "cy"
        look("in Welsh")
        browser.get(f"{url}/kiosk/?lang=en")
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
