"""The console's work queues in a real headless Chromium against a real gateway on loopback (its
dispatcher delivering to the sandbox back-offices), checked with axe-core in each state: the
triage queue empty, with an item, with the error summary (another person holds it), and after
handing it on by clicking; the dead-letter desk, stuck work and a partner's queue with work on
them; every one 320 CSS pixels wide with no sideways scroll. No JavaScript of ours runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from app.catalogue.catalogue import load_catalogue
from app.clients.staff import StaffRole, create_staff
from app.core.audit import Actor
from app.core.db import create_engine
from app.core.settings import SHIPPED_CONFIG_DIR, Settings
from app.sandbox import BackOffice, Behaviour
from tests.conftest import bearer, enquiry_body
from tests.pages.browsing import no_sideways_scroll_at_320, no_violations, replaced
from tests.pages.console import PASSWORD

pytestmark = pytest.mark.e2e

VALE = "vale-of-white-horse"
COUNTY = "oxfordshire-county"
POLICE = "thames-valley-police"


def staff(
    settings: Settings, role: StaffRole, name: str, organisation: str | None = None
) -> tuple[str, str]:
    """A member of staff on the gateway's database: their email and API token."""

    async def create() -> tuple[str, str]:
        engine = create_engine(settings.database_url)
        catalogue = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": "http://x"})
        email = f"{name.split()[0].lower()}.{role}@staff.example.org"
        try:
            _, token = await create_staff(
                engine,
                catalogue,
                name=name,
                email=email,
                role=role,
                organisation_id=organisation,
                password=PASSWORD,
                by=Actor("tests"),
            )
        finally:
            await engine.dispose()
        return email, token

    return asyncio.run(create())


def sign_in(browser: webdriver.Chrome, url: str, email: str) -> None:
    browser.get(f"{url}/console/sign-in")
    browser.find_element(By.ID, "email").send_keys(email)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    click(browser, "form[action^='/console/sign-in'] button")
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Hello")


def sign_out(browser: webdriver.Chrome) -> None:
    click(browser, "form[action='/console/sign-out'] button")
    browser.find_element(By.ID, "email")


def click(browser: webdriver.Chrome, selector: str) -> None:
    """Click a button and wait for the page it posts to (never read the old page's banner)."""
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, selector).click()
    replaced(browser, page)


def submit(url: str, key: str, body: dict[str, Any]) -> str:
    created = httpx.post(f"{url}/v1/enquiries", json=body, headers=bearer(key), timeout=10)
    assert created.status_code == 201, created.text
    return str(created.json()["reference"])


def until(check: Callable[[], Any], what: str, within: float = 15) -> Any:
    deadline = time.monotonic() + within
    while not (found := check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)
    return found


def enquiry(url: str, key: str, reference: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v1/enquiries/{reference}", headers=bearer(key), timeout=10)
    return dict(answer.json())


def missed_bin() -> dict[str, Any]:
    return enquiry_body(
        service_code="missed-bin",
        description="Our garden waste bin was missed on Tuesday",
        channel="phone",
        location={"postcode": "OX14 3AB"},
        attributes={"bin_type": "garden"},
    )


def test_the_triage_queue_in_every_state_and_handing_on_by_clicking(
    browser: webdriver.Chrome, gateway: tuple[str, str], settings: Settings, back_office: BackOffice
) -> None:
    url, key = gateway
    jo, _ = staff(settings, StaffRole.agent, "Jo Agent")
    _, sam_token = staff(settings, StaffRole.agent, "Sam Second")
    sign_in(browser, url, jo)
    queue = f"{url}/console/triage"

    browser.get(queue)
    assert "Nothing is waiting" in browser.find_element(By.CLASS_NAME, "desk-empty").text
    no_violations(browser, "the triage queue, empty")
    no_sideways_scroll_at_320(browser, queue, "the triage queue, empty")

    reference = submit(url, key, missed_bin())
    browser.get(queue)
    item = browser.find_element(By.CLASS_NAME, "desk-item")
    assert reference in item.text
    assert "231 of 277 postcodes in sector OX14 3" in item.text
    no_violations(browser, "the triage queue with an item")
    no_sideways_scroll_at_320(browser, queue, "the triage queue with an item")

    # Another agent holds it: handing it on is refused, and the page says who holds it.
    held = httpx.post(f"{url}/v1/triage/{reference}/claim", headers=bearer(sam_token), timeout=10)
    assert held.status_code == 200, held.text
    browser.get(queue)
    click(browser, f"button[value='{VALE}']")
    summary = browser.find_element(By.CLASS_NAME, "error-summary")
    assert f"Sam Second holds {reference}" in summary.text
    no_violations(browser, "the triage queue with the error summary")
    summary.find_element(By.TAG_NAME, "a").click()
    focused = browser.switch_to.active_element.get_attribute("id")
    assert focused == "item-" + reference.replace("-", "").lower()
    no_sideways_scroll_at_320(browser, queue, "the triage queue after a refusal")
    released = httpx.delete(
        f"{url}/v1/triage/{reference}/claim", headers=bearer(sam_token), timeout=10
    )
    assert released.status_code == 204

    browser.get(queue)
    click(browser, "form[action$='/claim'] button")
    assert "You hold" in browser.find_element(By.CLASS_NAME, "notification-banner").text
    click(browser, f"button[value='{VALE}']")
    banner = browser.find_element(By.CLASS_NAME, "notification-banner")
    assert f"{reference} was handed on" in banner.text
    no_violations(browser, "the triage queue after handing on")
    vale = until(
        lambda: [
            d
            for d in enquiry(url, key, reference)["destinations"]
            if d["organisation_id"] == VALE and d["state"] == "delivered"
        ],
        "the delivery to the Vale",
    )
    assert vale
    assert len(back_office.cases.get(VALE, {})) == 1


def test_the_dead_letters_stuck_work_and_a_partners_queue_have_no_violations(
    browser: webdriver.Chrome, gateway: tuple[str, str], settings: Settings, back_office: BackOffice
) -> None:
    url, key = gateway
    back_office.behaviour[COUNTY] = Behaviour(down=True, fail_status=401)
    dead = submit(url, key, enquiry_body(description="A pothole the county cannot be sent"))
    until(
        lambda: enquiry(url, key, dead)["destinations"][0]["state"] == "dead",
        "the county delivery to be given up",
    )
    back_office.behaviour.clear()
    sam, _ = staff(settings, StaffRole.supervisor, "Sam Supervisor")
    sign_in(browser, url, sam)
    for path, what in (
        ("/console/dead-letters", "the dead-letter desk"),
        ("/console/stuck", "stuck work"),
    ):
        browser.get(f"{url}{path}")
        assert dead in browser.find_element(By.CLASS_NAME, "table-wrapper").text
        no_violations(browser, f"{what} with an item")
        no_sideways_scroll_at_320(browser, f"{url}{path}", what)
    browser.get(f"{url}/console/dead-letters")
    browser.find_element(By.ID, "since").send_keys("x")
    click(browser, "form[action$='/dead-letters/redrive'] button")
    assert browser.find_element(By.CLASS_NAME, "error-summary")
    no_violations(browser, "the dead-letter desk with the error summary")
    click(browser, "form[action$='/redrive'][class] button")
    assert "was sent again" in browser.find_element(By.CLASS_NAME, "notification-banner").text
    no_violations(browser, "the dead-letter desk, empty, after sending one again")
    sign_out(browser)

    ours = submit(
        url,
        key,
        enquiry_body(
            service_code="anti-social-behaviour",
            description="Fireworks thrown at the bus shelter every night",
            location={"postcode": "OX1 1BX"},
            attributes={"ongoing": "yes"},
        ),
    )
    until(
        lambda: [
            d
            for d in enquiry(url, key, ours)["destinations"]
            if d["organisation_id"] == POLICE and d["state"] == "delivered"
        ],
        "the delivery to the police",
    )
    dana, _ = staff(settings, StaffRole.agent, "Dana Hale", organisation=POLICE)
    sign_in(browser, url, dana)
    browser.get(f"{url}/console/queue")
    assert ours in browser.find_element(By.CLASS_NAME, "table-wrapper").text
    no_violations(browser, "a partner's queue with a part")
    no_sideways_scroll_at_320(browser, f"{url}/console/queue", "a partner's queue")
    browser.get(f"{url}/console/queue")
    click(browser, "button[value='acknowledged']")
    assert "acknowledged" in browser.find_element(By.CLASS_NAME, "notification-banner").text
    no_violations(browser, "a partner's queue after acknowledging")
    click(browser, "button[value='not_our_responsibility']")
    assert browser.find_element(By.CLASS_NAME, "error-summary")
    no_violations(browser, "a partner's queue with the error summary")
    browser.get(f"{url}/console/triage")
    assert browser.find_element(By.TAG_NAME, "h1").text == "You cannot use this page"
    no_violations(browser, "the 403 page")
