"""Shared steps of the page tests: the tracking page's address and its forms' hidden field."""

from __future__ import annotations

import re

import httpx

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
