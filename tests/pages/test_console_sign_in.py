"""Signing in to the console: the session cookie, CSRF on every form (the sign-in form's own
included), lockout, idle timeout, sign-out, the second factor, a disabled person, and a
session that cannot be fixed in advance."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlparse

import pyotp
from sqlalchemy import select

from app.clients.sessions import Sessions
from app.clients.staff import disable_staff, find_staff
from app.core.audit import Actor
from app.core.models import audit_table, console_session_table
from tests.pages.console import PASSWORD, browser, csrf_of, person, sign_in


async def test_a_signed_out_browser_is_sent_to_sign_in_and_back_afterwards(app):
    email = await person(app, name="Jo Agent")
    async with browser(app) as http:
        first = await http.get("/console/")
        assert first.status_code == 303
        assert first.headers["location"] == "/console/sign-in?next=%2Fconsole%2F"
        answer = await sign_in(http, email, next="%2Fconsole%2F")
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/")
        cookie = answer.headers["set-cookie"]
        assert "iap-console=" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        home = await http.get("/console/")
        assert home.status_code == 200
        assert "Jo Agent" in home.text
        assert "Take a call" in home.text
        assert "script-src" not in home.headers["content-security-policy"]
        assert "unsafe-inline" not in home.headers["content-security-policy"]
        assert home.headers["cache-control"] == "no-store"
    async with app.state.iap.engine.connect() as conn:
        actions = (await conn.scalars(select(audit_table.c.action))).all()
    assert "staff.signed_in" in actions


async def test_a_wrong_password_and_an_unknown_email_get_the_same_page(app):
    email = await person(app)
    async with browser(app) as http:
        wrong = await sign_in(http, email, "not the password at all")
        unknown = await sign_in(http, "nobody@staff.example.org", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    for page in (wrong, unknown):
        assert 'class="error-summary"' in page.text
        assert '<a href="#email">Enter a correct email address and password</a>' in page.text
        assert "iap-console" not in page.cookies


async def test_empty_fields_are_named_in_the_error_summary(app):
    async with browser(app) as http:
        answer = await sign_in(http, "", "")
    assert answer.status_code == 422
    assert '<a href="#email">Enter your email address</a>' in answer.text
    assert '<a href="#password">Enter your password</a>' in answer.text
    assert 'aria-describedby="password-error"' in answer.text


async def test_a_sign_in_without_its_form_field_or_cookie_is_refused(app):
    email = await person(app)
    async with browser(app) as http:
        form = await http.get("/console/sign-in")
        no_field = await http.post("/console/sign-in", data={"email": email, "password": PASSWORD})
        http.cookies.clear()  # another site's form: the field copied, the cookie not sent
        no_cookie = await http.post(
            "/console/sign-in",
            data={"csrf": csrf_of(form.text), "email": email, "password": PASSWORD},
        )
    assert no_field.status_code == no_cookie.status_code == 400
    assert "Nothing was changed" in no_field.text
    async with app.state.iap.engine.connect() as conn:
        assert (await conn.scalars(select(console_session_table.c.id))).all() == []


async def test_repeated_failures_lock_the_email_whether_or_not_it_is_a_person(app):
    email = await person(app)
    async with browser(app) as http:
        for _ in range(4):
            assert (await sign_in(http, email, "wrong password guess")).status_code == 401
            assert (
                await sign_in(http, "nobody@x.example", "wrong password guess")
            ).status_code == 401
        locked = await sign_in(http, email, "wrong password guess")
        locked_nobody = await sign_in(http, "nobody@x.example", "wrong password guess")
        assert locked.status_code == locked_nobody.status_code == 429
        assert "too many failed attempts" in locked.text
        # While locked, not even the right password opens it.
        right = await sign_in(http, email, PASSWORD)
        assert right.status_code == 429
        other = await person(app)
        assert (await sign_in(http, other)).status_code == 303  # other emails are not locked


async def test_the_session_token_is_new_at_sign_in_so_a_planted_one_opens_nothing(app):
    email = await person(app)
    async with browser(app) as http:
        http.cookies.set("iap-console", "planted-by-an-attacker", domain="iap.test")
        answer = await sign_in(http, email)
        assert answer.status_code == 303
        issued = answer.cookies["iap-console"]
        assert issued != "planted-by-an-attacker"
    async with browser(app) as attacker:
        attacker.cookies.set("iap-console", "planted-by-an-attacker", domain="iap.test")
        assert (await attacker.get("/console/")).status_code == 303
    async with app.state.iap.engine.connect() as conn:
        stored = (await conn.scalars(select(console_session_table.c.token_hash))).all()
    assert issued not in stored  # only its hash is kept


async def test_signing_out_ends_the_session_and_needs_the_session_form_field(app):
    email = await person(app)
    async with browser(app) as http:
        await sign_in(http, email)
        home = await http.get("/console/")
        token = http.cookies["iap-console"]
        refused = await http.post("/console/sign-out", data={"csrf": "made up"})
        assert refused.status_code == 400
        assert (await http.get("/console/")).status_code == 200  # still signed in
        out = await http.post("/console/sign-out", data={"csrf": csrf_of(home.text)})
        assert (out.status_code, out.headers["location"]) == (
            303,
            "/console/sign-in?signed_out=1",
        )
        assert "You have signed out" in (await http.get(out.headers["location"])).text
    async with browser(app) as replay:
        replay.cookies.set("iap-console", token, domain="iap.test")
        assert (await replay.get("/console/")).status_code == 303


async def test_an_idle_page_warns_offers_more_time_then_signs_out(app):
    app.state.iap.settings.console.idle_minutes = 2.05  # warned after 3 s, signed out at 123 s
    email = await person(app)
    async with browser(app) as http:
        await sign_in(http, email)
        home = await http.get("/console/")
        warn_at, _, warning = home.headers["refresh"].partition(";url=")
        assert (warn_at, warning) == ("3", "/console/still-there?next=%2Fconsole%2F")
        assert "http-equiv" not in home.text  # no delayed meta refresh (WCAG 2.2.1)
        page = await http.get(warning)
        assert page.status_code == 200
        assert "Do you need more time?" in page.text
        assert '<a class="button" href="/console/">Yes, I need more time</a>' in page.text
        assert page.headers["refresh"] == "120;url=/console/sign-in?timed_out=1"
        timed_out = await http.get("/console/sign-in?timed_out=1")
        assert "not used for a while" in timed_out.text
        assert (await http.get("/console/")).status_code == 303  # the session ended there


async def test_an_idle_session_ends_on_the_server_whatever_the_browser_does(app):
    app.state.iap.settings.console.idle_minutes = 0.02  # 1.2 seconds
    email = await person(app)
    async with browser(app) as http:
        await sign_in(http, email)
        assert (await http.get("/console/")).status_code == 200
        await asyncio.sleep(1.5)
        assert (await http.get("/console/")).status_code == 303


async def test_a_disabled_person_is_signed_out_at_once(app):
    email = await person(app)
    async with browser(app) as http:
        await sign_in(http, email)
        assert (await http.get("/console/")).status_code == 200
        await disable_staff(app.state.iap.engine, email, by=Actor("tests"))
        assert (await http.get("/console/")).status_code == 303


async def test_only_console_pages_are_gone_to_after_signing_in(app):
    email = await person(app)
    for evil in ("https%3A%2F%2Fevil.example%2F", "%2F%2Fevil.example", "%2Fv1%2Faudit"):
        async with browser(app) as http:
            answer = await sign_in(http, email, next=evil)
            assert answer.headers["location"] == "/console/"


async def test_a_second_factor_is_asked_for_good_once_and_nothing_opens_before_it(app):
    email = await person(app)
    state = app.state.iap
    staff = await find_staff(state.engine, email)
    uri = await Sessions(state.engine, state.sealer, state.settings.console).enrol_second_factor(
        staff.id, by=Actor("tests")
    )
    totp = pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])
    async with browser(app) as http:
        answer = await sign_in(http, email)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/sign-in/code")
        assert (await http.get("/console/")).status_code == 303  # not signed in yet
        page = await http.get("/console/sign-in/code")
        assert 'inputmode="numeric"' in page.text
        wrong = await http.post(
            "/console/sign-in/code", data={"csrf": csrf_of(page.text), "code": "000000"}
        )
        assert wrong.status_code == 401
        assert "Enter the correct security code" in wrong.text
        code = totp.now()
        right = await http.post(
            "/console/sign-in/code", data={"csrf": csrf_of(wrong.text), "code": code}
        )
        assert right.status_code == 303
        assert (await http.get("/console/")).status_code == 200
    async with browser(app) as again:  # the same code, overheard: refused the second time
        await sign_in(again, email)
        page = await again.get("/console/sign-in/code")
        replayed = await again.post(
            "/console/sign-in/code", data={"csrf": csrf_of(page.text), "code": code}
        )
        assert replayed.status_code == 401
