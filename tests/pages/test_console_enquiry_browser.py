"""The console's enquiry page in a real headless Chromium against a real gateway on loopback
(its dispatcher delivering to the sandbox back-offices), checked with axe-core in each state: as
opened after sign-in, with the error summary, after adding a note by its form, a triage
enquiry's page and after handing it on; and 320 CSS pixels wide with no sideways scrolling
(the attempts table scrolls inside its own labelled box). No JavaScript of ours runs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from app.core.settings import Settings
from tests.conftest import bearer, enquiry_body
from tests.conversation.helpers import with_citizen
from tests.e2e.conftest import eventually
from tests.pages.browsing import (
    new_person,
    no_sideways_scroll_at_320,
    no_violations,
    send,
    sign_in_by_browser,
)

pytestmark = pytest.mark.e2e

VALE = "vale-of-white-horse"


def submit(url: str, key: str, body: dict[str, Any]) -> str:
    created = httpx.post(
        f"{url}/v1/enquiries", json=with_citizen(body), headers=bearer(key), timeout=10
    )
    assert created.status_code == 201, created.text
    return str(created.json()["reference"])


async def _state_of(url: str, key: str, reference: str, organisation: str) -> str | None:
    async with httpx.AsyncClient(base_url=url, headers=bearer(key), timeout=10) as http:
        read = (await http.get(f"/v1/enquiries/{reference}")).json()
    states = [d["state"] for d in read["destinations"] if d["organisation_id"] == organisation]
    return states[0] if states else None


def delivered_to(url: str, key: str, reference: str, organisation: str) -> None:
    """Wait for the gateway's own dispatcher to deliver the enquiry there."""

    async def done() -> bool:
        return await _state_of(url, key, reference, organisation) == "delivered"

    asyncio.run(eventually(done, within=15, what=f"delivery to {organisation}"))


def test_the_enquiry_page_in_every_state_has_no_accessibility_violations(
    browser: webdriver.Chrome, gateway: tuple[str, str], back_office: Any, settings: Settings
) -> None:
    url, key = gateway
    email = new_person(settings, "agent", name="Jo Agent")
    reference = submit(url, key, enquiry_body())
    delivered_to(url, key, reference, "oxfordshire-county")
    page = f"/console/enquiries/{reference}"

    sign_in_by_browser(browser, url, email)
    browser.get(f"{url}{page}")
    heading = browser.find_element(By.TAG_NAME, "h1")
    assert heading.text.replace("\n", " ").split() == reference.split("-")
    assert "Sam Reporter" in browser.page_source
    assert browser.find_element(By.CSS_SELECTOR, ".table-wrapper[tabindex='0'] caption")
    no_violations(browser, "as opened")

    send(browser, "form[action$='/notes'] button")
    summary = browser.find_element(By.CLASS_NAME, "error-summary")
    assert "Enter the note" in summary.text
    no_violations(browser, "with the error summary")
    summary.find_element(By.TAG_NAME, "a").click()
    assert browser.switch_to.active_element.get_attribute("id") == "note-text"

    browser.find_element(By.ID, "note-text").send_keys("Caller rang again about it")
    send(browser, "form[action$='/notes'] button")
    assert "Your note was added" in browser.find_element(By.CLASS_NAME, "notification-banner").text
    assert "Caller rang again about it" in browser.find_element(By.CLASS_NAME, "messages").text
    no_violations(browser, "after a note")
    no_sideways_scroll_at_320(browser, f"{url}{page}", "the enquiry page")


def test_handing_on_from_the_page_has_no_accessibility_violations(
    browser: webdriver.Chrome, gateway: tuple[str, str], back_office: Any, settings: Settings
) -> None:
    url, key = gateway
    email = new_person(settings, "agent", name="Jo Agent")
    body = enquiry_body(
        service_code="missed-bin",
        description="Our green bin was not emptied on Tuesday",
        location={"postcode": "OX14 3AB"},
        attributes={"bin_type": "garden"},
    )
    reference = submit(url, key, body)
    page = f"/console/enquiries/{reference}"

    sign_in_by_browser(browser, url, email)
    browser.get(f"{url}{page}")
    assert "Hand on from the triage desk" in browser.page_source
    no_violations(browser, "at the triage desk")
    no_sideways_scroll_at_320(browser, f"{url}{page}", "the triage enquiry's page")

    browser.get(f"{url}{page}")
    browser.find_element(By.CSS_SELECTOR, f"input[value='{VALE}']").click()
    browser.find_element(By.ID, "hand-on-reason").send_keys("Caller confirms Sutton Courtenay")
    send(browser, "form[action$='/hand-on'] button")
    banner = browser.find_element(By.CLASS_NAME, "notification-banner")
    assert "handed on" in banner.text
    no_violations(browser, "after hand on")
    delivered_to(url, key, reference, VALE)
    assert len(back_office.cases.get(VALE, {})) == 1
