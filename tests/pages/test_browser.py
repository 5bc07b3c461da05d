"""The tracking page in a real headless Chromium (Debian's chromium and chromium-driver) against
a real uvicorn server on loopback, checked with axe-core (WCAG 2.2 A and AA rules) in each
state: as first opened, with the error summary, after adding information, after withdrawing,
in Welsh, and 320 CSS pixels wide (what 400 % zoom of a 1280-pixel window gives) with no
horizontal scrolling. No JavaScript of ours runs: the forms are posted by the browser."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.conftest import bearer, enquiry_body
from tests.conversation.helpers import with_citizen
from tests.pages.browsing import no_sideways_scroll_at_320, no_violations, send

pytestmark = pytest.mark.e2e


def submit(url: str, key: str) -> tuple[str, str]:
    created = httpx.post(
        f"{url}/v1/enquiries", json=with_citizen(enquiry_body()), headers=bearer(key), timeout=10
    )
    assert created.status_code == 201, created.text
    return created.json()["reference"], created.json()["access_token"]


def test_the_tracking_page_in_every_state_has_no_accessibility_violations(
    browser: webdriver.Chrome, gateway: tuple[str, str], back_office: Any
) -> None:
    url, key = gateway
    reference, token = submit(url, key)
    page = f"{url}/track/{reference}?token={token}"

    browser.get(page)
    assert browser.find_element(By.TAG_NAME, "h1").text == reference
    no_violations(browser, "as first opened")

    send(browser, "form[action*='/information'] button")
    summary = browser.find_element(By.CLASS_NAME, "error-summary")
    assert "Enter the information" in summary.text
    assert browser.find_element(By.ID, "information-error").is_displayed()
    no_violations(browser, "with the error summary")
    summary.find_element(By.TAG_NAME, "a").click()
    assert browser.switch_to.active_element.get_attribute("id") == "information"

    browser.find_element(By.ID, "information").send_keys("It is by the bus stop")
    send(browser, "form[action*='/information'] button")
    assert "passed on" in browser.find_element(By.CLASS_NAME, "notification-banner").text
    no_violations(browser, "after adding information")

    browser.get(f"{page}&lang=cy")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "cy"
    assert "Eich ymholiad" in browser.page_source
    no_violations(browser, "in Welsh")

    no_sideways_scroll_at_320(browser, page, "the tracking page")

    browser.get(page)
    browser.find_element(By.ID, "reason").send_keys("Sorted it out myself")
    send(browser, "form[action*='/withdraw'] button")
    assert "withdrawn" in browser.find_element(By.CLASS_NAME, "notification-banner").text
    assert browser.execute_script("return document.forms.length") == 0
    no_violations(browser, "after withdrawing")

    browser.get(f"{url}/track/{reference}?token=wrong")
    no_violations(browser, "the not-found page")
