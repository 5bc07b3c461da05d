"""Shared steps of the console's page tests: signing in as a browser would (the form's CSRF
field, its cookie, the redirects), and reading a page's forms."""

from __future__ import annotations

import html
import re
import uuid

import httpx
from fastapi import FastAPI

from app.clients.staff import StaffRole
from tests.conftest import make_person

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The first form's CSRF field on a page."""
    found = CSRF.findall(page)
    assert found, page
    return html.unescape(found[0])


async def person(
    app: FastAPI,
    role: StaffRole | str = StaffRole.agent,
    *,
    organisation: str | None = None,
    name: str = "Jo Agent",
) -> str:
    """A new member of staff with the test password; their email."""
    email = f"{uuid.uuid4().hex[:8]}@staff.example.org"
    await make_person(
        app, role, organisation=organisation, name=name, email=email, password=PASSWORD
    )
    return email


async def sign_in(
    http: httpx.AsyncClient, email: str, password: str = PASSWORD, next: str | None = None
) -> httpx.Response:
    """The sign-in form, filled in and sent: the answer to the POST (not followed)."""
    query = f"?next={next}" if next else ""
    form = await http.get(f"/console/sign-in{query}")
    assert form.status_code == 200, form.text
    return await http.post(
        f"/console/sign-in{query}",
        data={"csrf": csrf_of(form.text), "email": email, "password": password},
    )


def browser(app: FastAPI) -> httpx.AsyncClient:
    """A client that keeps cookies, as a browser does, and follows no redirect by itself."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://iap.test")


async def signed_in(
    app: FastAPI, role: StaffRole | str = StaffRole.agent, **kw: str
) -> httpx.AsyncClient:
    """A browser signed in as a new member of staff in this role."""
    http = browser(app)
    answer = await sign_in(http, await person(app, role, **kw))
    assert answer.status_code == 303, answer.text
    return http
