"""Shared steps of the page tests: the tracking page's address, its forms' hidden field, and
axe-core's check of a page in the real browser."""

from __future__ import annotations

import json
import re

import httpx
from axe_selenium_python import Axe
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ACTION = re.compile(r'<form method="post" action="([^"]+)"')


def page_url(reference: str, token: str, **query: str) -> str:
    params = httpx.QueryParams({"token": token, **query})
    return f"/track/{reference}?{params}"


async def forms(http: httpx.AsyncClient, reference: str, token: str) -> dict[str, tuple[str, str]]:
    """Each form on the page by what it does: (its action, its CSRF field)."""
    page = await http.get(page_url(reference, token))
    assert page.status_code == 200, page.text
    actions = [a.replace("&amp;", "&") for a in ACTION.findall(page.text)]
    found = dict(zip((a.split("?")[0].rsplit("/", 1)[1] for a in actions), actions, strict=True))
    return {
        kind: (action, csrf)
        for (kind, action), csrf in zip(found.items(), CSRF.findall(page.text), strict=True)
    }


TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]

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
    WebDriverWait(browser, 10).until(staleness_of(page))
