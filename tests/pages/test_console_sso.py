"""Signing in to the console with single sign-on, against a real OpenID Connect provider on
loopback (tests/pages/oidc_provider.py): the gateway fetches its discovery document and keys and
exchanges the code with it for real. A browser's redirects are followed by hand, so each step's
answer is seen; a browser test at the end clicks through it in Chromium."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from pydantic import SecretStr
from selenium.webdriver.common.by import By
from sqlalchemy import select

from app.clients.oidc import OpenIDProvider, SingleSignOnFailed
from app.clients.sessions import Sessions
from app.clients.staff import StaffRole, create_staff, disable_staff
from app.core.audit import Actor
from app.core.db import create_engine
from app.core.models import audit_table, console_session_table, staff_table
from app.core.outbound import OutboundGuard, OutboundPolicy, outbound_client
from app.core.settings import ConsoleSettings, Settings
from app.main import create_app
from app.runtime import load_configured_catalogue
from tests.conftest import ThreadedServer, free_port, serving
from tests.core.test_outbound import PUBLIC, FakeResolver
from tests.pages.browsing import no_sideways_scroll_at_320, no_violations
from tests.pages.console import PASSWORD, browser, person, sign_in
from tests.pages.oidc_provider import CLIENT_ID, CLIENT_SECRET, OpenIDProviderStub
from tests.test_production import RESOLVER, config_dir, organisations, production_settings, refusal

CALLBACK = "/console/sign-in/sso/callback"
NO_ACCOUNT = "There is no console account for the account you signed in with"
UNCHECKED = "Your single sign-on could not be checked"


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIDProviderStub]:
    with serving(OpenIDProviderStub()) as stub:
        yield stub


def with_sso(settings: Settings, issuer: str, **console: object) -> Settings:
    chosen = ConsoleSettings(
        oidc_issuer=issuer,
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=SecretStr(CLIENT_SECRET),
        oidc_name="Test Council",
        **console,  # type: ignore[arg-type]
    )
    return settings.model_copy(update={"console": chosen})


@pytest.fixture
def settings(settings: Settings, provider: OpenIDProviderStub) -> Settings:
    """The test's settings, with the loopback provider as the council's single sign-on."""
    provider.reset()
    return with_sso(settings, provider.url)


async def through_provider(
    http: httpx.AsyncClient, app, next: str | None = None
) -> tuple[httpx.Response, httpx.Response]:
    """A browser's single sign-on: the gateway's redirect to the provider, the provider's
    redirect back, and the gateway's answer to that (not followed)."""
    query = f"?next={next}" if next else ""
    start = await http.get(f"/console/sign-in/sso{query}")
    assert start.status_code == 303, start.text
    async with httpx.AsyncClient() as outside:  # the provider is another site
        at_provider = await outside.get(start.headers["location"])
    assert at_provider.status_code == 302, at_provider.text
    back = at_provider.headers["location"]
    public = app.state.iap.settings.public_url
    assert back.startswith(public + CALLBACK + "?"), back
    return start, await http.get(back.removeprefix(public))


async def sessions_open(app) -> int:
    async with app.state.iap.engine.connect() as conn:
        ended = console_session_table.c.ended_at
        found = await conn.scalars(select(console_session_table.c.id).where(ended.is_(None)))
        return len(found.all())


async def subject_of(app, email: str) -> str | None:
    """The provider's subject the person is bound to, if any."""
    async with app.state.iap.engine.connect() as conn:
        return await conn.scalar(
            select(staff_table.c.oidc_subject).where(staff_table.c.email == email)
        )


def refused(answer: httpx.Response, status: int, says: str) -> None:
    """The sign-in page, its error summary naming what went wrong, and no session cookie."""
    assert answer.status_code == status, answer.text
    assert 'class="error-summary"' in answer.text
    assert f'<a href="#sso">{says}' in answer.text
    assert 'id="sso"' in answer.text  # the link the summary points at, to try again
    assert "iap-console=" not in answer.headers.get("set-cookie", "").replace('iap-console=""', "")


async def test_a_member_of_staff_signs_in_by_sso_and_is_known_by_subject_after(app, provider):
    email = await person(app, name="Jo Agent")
    provider.user.email = email
    async with browser(app) as http:
        page = await http.get("/console/sign-in")
        assert 'href="/console/sign-in/sso?next=/console/"' in page.text
        assert "Sign in with Test Council" in page.text
        start, back = await through_provider(http, app, next="%2Fconsole%2Ftriage")
        location = urlparse(start.headers["location"])
        asked = parse_qs(location.query)
        assert location.path == "/authorize"
        assert asked["scope"] == ["openid email profile"]
        assert asked["code_challenge_method"] == ["S256"]
        assert asked["redirect_uri"] == ["http://127.0.0.1:8000/console/sign-in/sso/callback"]
        assert "HttpOnly" in start.headers["set-cookie"]
        assert (back.status_code, back.headers["location"]) == (303, "/console/triage")
        home = await http.get("/console/")
        assert home.status_code == 200
        assert "Jo Agent" in home.text
    assert await subject_of(app, email) == "council-0001"
    async with app.state.iap.engine.connect() as conn:
        details = (
            await conn.scalars(
                select(audit_table.c.detail).where(audit_table.c.action == "staff.signed_in")
            )
        ).all()
    assert {"by": "sso"} in details
    # The provider's email changes: the person is found by the subject they were bound to.
    provider.user.email = "jo.agent.renamed@staff.example.org"
    async with browser(app) as http:
        _, back = await through_provider(http, app)
        assert (back.status_code, back.headers["location"]) == (303, "/console/")
        assert "Jo Agent" in (await http.get("/console/")).text
    assert provider.asked.count("/.well-known/openid-configuration") <= 1  # kept, not refetched


async def test_an_email_with_no_account_is_refused_and_opens_no_session(app, provider):
    provider.user.email = "nobody@staff.example.org"
    async with browser(app) as http:
        _, back = await through_provider(http, app)
        refused(back, 403, NO_ACCOUNT)
        assert (await http.get("/console/")).status_code == 303
    assert await sessions_open(app) == 0


async def test_an_email_the_provider_has_not_verified_finds_nobody(app, provider):
    email = await person(app)
    provider.user.email, provider.user.email_verified = email, False
    async with browser(app) as http:
        _, back = await through_provider(http, app)
        refused(back, 403, NO_ACCOUNT)
    assert await subject_of(app, email) is None
    assert await sessions_open(app) == 0


async def test_a_tampered_or_missing_state_is_refused(app, provider):
    provider.user.email = await person(app)
    async with browser(app) as http:
        start = await http.get("/console/sign-in/sso")
        async with httpx.AsyncClient() as outside:
            back = (await outside.get(start.headers["location"])).headers["location"]
        code = parse_qs(urlparse(back).query)["code"][0]
        tampered = await http.get(f"{CALLBACK}?code={code}&state=made-up-by-someone")
        refused(tampered, 400, "The single sign-on was out of date or did not start here")
        assert (await http.get("/console/")).status_code == 303
    async with browser(app) as elsewhere:  # a callback link opened in another browser
        answer = await elsewhere.get(back.removeprefix(app.state.iap.settings.public_url))
        refused(answer, 400, "The single sign-on was out of date or did not start here")
    assert await sessions_open(app) == 0


async def test_the_callback_cannot_be_used_twice(app, provider):
    provider.user.email = await person(app)
    async with browser(app) as http:
        start = await http.get("/console/sign-in/sso")
        async with httpx.AsyncClient() as outside:
            back = (await outside.get(start.headers["location"])).headers["location"]
        path = back.removeprefix(app.state.iap.settings.public_url)
        sealed = http.cookies["iap-console-sso"]
        first = await http.get(path)
        assert first.status_code == 303
        http.cookies.set("iap-console-sso", sealed, domain="iap.test")  # kept and sent again
        again = await http.get(path)
    # The provider refuses a code twice; the gateway says so and opens nothing more.
    refused(again, 401, UNCHECKED)
    assert provider.token_refusals == ["invalid_grant"]
    assert await sessions_open(app) == 1


@pytest.mark.parametrize("mode", ["wrong-nonce", "wrong-audience", "bad-signature", "expired"])
async def test_an_id_token_that_does_not_hold_is_refused(app, provider, mode):
    email = await person(app)
    provider.user.email, provider.mode = email, mode
    async with browser(app) as http:
        _, back = await through_provider(http, app)
        refused(back, 401, UNCHECKED)
        assert (await http.get("/console/")).status_code == 303
    # The exchange happened and its answer was refused (the keys may be fetched after it,
    # when this app had none cached: that failed once when they came last).
    assert "/token" in provider.asked
    assert await subject_of(app, email) is None
    assert await sessions_open(app) == 0


async def test_keys_the_provider_rotated_are_fetched_again(app, provider):
    provider.user.email = await person(app)
    async with browser(app) as http:
        _, back = await through_provider(http, app)
        assert back.status_code == 303
    provider.rotate()
    provider.asked.clear()
    async with browser(app) as http:
        _, back = await through_provider(http, app)
        assert back.status_code == 303
    assert provider.asked == ["/authorize", "/token", "/jwks"]


async def test_a_discovery_document_of_another_issuer_is_not_used(settings, app, provider):
    # The provider's document names it by 127.0.0.1; asked by another name, it is not its own.
    app.state.iap.settings = with_sso(settings, provider.url.replace("127.0.0.1", "localhost"))
    async with browser(app) as http:
        answer = await http.get("/console/sign-in/sso")
    refused(answer, 502, "Single sign-on is not available at the moment")
    assert provider.asked == ["/.well-known/openid-configuration"]


async def test_a_sign_in_refused_at_the_provider_says_so(app, provider):
    provider.mode = "denied"
    async with browser(app) as http:
        _, back = await through_provider(http, app)
    refused(back, 403, "Single sign-on was cancelled or refused")
    assert "/token" not in provider.asked


async def test_a_disabled_person_cannot_sign_in_by_sso(app, provider):
    email = await person(app)
    provider.user.email = email
    async with browser(app) as http:
        _, back = await through_provider(http, app)
        assert back.status_code == 303  # bound to the subject
    await disable_staff(app.state.iap.engine, email, by=Actor("tests"))
    async with browser(app) as http:
        _, back = await through_provider(http, app)
        refused(back, 403, NO_ACCOUNT)
        assert (await http.get("/console/")).status_code == 303
    assert await sessions_open(app) == 1  # the first one's (its person disabled, it opens nothing)


async def test_the_session_is_new_and_any_earlier_one_ends(app, provider):
    email = await person(app)
    provider.user.email = email
    state = app.state.iap
    found = Sessions(state.engine, state.sealer, state.settings.console)
    async with browser(app) as http:
        http.cookies.set("iap-console", "planted-by-an-attacker", domain="iap.test")
        _, back = await through_provider(http, app)
        issued = back.cookies["iap-console"]
        assert issued != "planted-by-an-attacker"
        assert (await http.get("/console/")).status_code == 200
    assert await found.find(issued) is not None
    assert await found.find("planted-by-an-attacker") is None
    async with browser(app) as http:
        assert (await sign_in(http, email, PASSWORD)).status_code == 303
        by_password = http.cookies["iap-console"]
        # Someone already signed in who starts single sign-on is sent on, not signed in again.
        skip = await http.get("/console/sign-in/sso")
        assert (skip.status_code, skip.headers["location"]) == (303, "/console/")
    async with browser(app) as http:
        start = await http.get("/console/sign-in/sso")
        async with httpx.AsyncClient() as outside:
            back_to = (await outside.get(start.headers["location"])).headers["location"]
        # Signed in by password in another tab meanwhile: that session ends as this one opens.
        http.cookies.set("iap-console", by_password, domain="iap.test")
        back = await http.get(back_to.removeprefix(state.settings.public_url))
        assert back.status_code == 303
        assert back.cookies["iap-console"] not in (by_password, issued)
    assert await found.find(by_password) is None


async def test_only_console_pages_are_gone_to_afterwards(app, provider):
    provider.user.email = await person(app)
    for evil in ("https%3A%2F%2Fevil.example%2F", "%2F%2Fevil.example", "%2Fv1%2Faudit"):
        async with browser(app) as http:
            _, back = await through_provider(http, app, next=evil)
            assert (back.status_code, back.headers["location"]) == (303, "/console/")


async def test_a_provider_that_cannot_be_reached_is_said_so(settings, app):
    app.state.iap.settings = with_sso(settings, f"http://127.0.0.1:{free_port()}")
    async with browser(app) as http:
        answer = await http.get("/console/sign-in/sso")
    refused(answer, 502, "Single sign-on is not available at the moment")


async def test_in_production_the_outbound_rules_apply_to_the_provider(settings, provider):
    """A loopback provider is refused by production's rules before anything is sent to it."""
    guard = OutboundGuard(OutboundPolicy(enforce=True))
    # The same provider by another name (localhost), so nothing found earlier is reused.
    chosen = with_sso(settings, provider.url.replace("127.0.0.1", "localhost"))
    async with outbound_client(chosen, guard) as http:
        oidc = OpenIDProvider(chosen.console, http=http, redirect_uri="https://x.example/cb")
        with pytest.raises(SingleSignOnFailed) as failed:
            await oidc.metadata()
    assert failed.value.unreachable
    assert provider.asked == []


async def test_without_sso_configured_there_is_no_button_and_no_route(app):
    app.state.iap.settings = app.state.iap.settings.model_copy(
        update={"console": ConsoleSettings()}
    )
    async with browser(app) as http:
        page = await http.get("/console/sign-in")
        assert "Sign in with" not in page.text
        assert (await http.get("/console/sign-in/sso")).status_code == 404
        assert (await http.get(f"{CALLBACK}?code=x&state=y")).status_code == 404


@pytest.mark.e2e
def test_sso_in_a_real_browser_lands_signed_in_and_the_pages_pass_axe(settings, provider, browser):
    port = free_port()
    chosen = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    email = "sso.browser@staff.example.org"
    asyncio.run(_staff(chosen, email))
    provider.user.email = email
    server = ThreadedServer(create_app(chosen), port, lifespan="on").start()
    try:
        browser.get(f"{server.url}/console/sign-in")
        no_violations(browser, "console sign-in with single sign-on")
        no_sideways_scroll_at_320(
            browser, f"{server.url}/console/sign-in", "console sign-in with single sign-on"
        )
        browser.find_element(By.LINK_TEXT, "Sign in with Test Council").click()
        browser.find_element(By.CSS_SELECTOR, ".console-nav")
        assert urlparse(browser.current_url).path == "/console/"
        assert "Sam Browser" in browser.page_source
        browser.delete_all_cookies()
        provider.mode = "denied"
        browser.get(f"{server.url}/console/sign-in")
        browser.find_element(By.LINK_TEXT, "Sign in with Test Council").click()
        summary = browser.find_element(By.CSS_SELECTOR, ".error-summary")
        assert "Single sign-on was cancelled or refused" in summary.text
        no_violations(browser, "console sign-in, single sign-on refused")
    finally:
        server.stop()


async def _staff(settings: Settings, email: str) -> None:
    """A member of staff with no password at all: single sign-on is their only way in."""
    engine = create_engine(settings.database_url)
    try:
        await create_staff(
            engine,
            load_configured_catalogue(settings),
            name="Sam Browser",
            email=email,
            role=StaffRole.agent,
            by=Actor("tests"),
        )
    finally:
        await engine.dispose()


COUNCIL = FakeResolver({**RESOLVER, "login.council.example": [PUBLIC]})


def test_production_refuses_a_provider_it_may_not_call_or_half_set_up(database_url, tmp_path):
    folder = config_dir(tmp_path, organisations())
    plain = production_settings(
        database_url,
        folder,
        console=ConsoleSettings(
            oidc_issuer="http://login.council.example",
            oidc_client_id=CLIENT_ID,
            oidc_client_secret=SecretStr("Vb7kQ2mN9xLp4Rt8Wc3Hs6Jd"),
        ),
    )
    expected = "IAP_CONSOLE__OIDC_ISSUER: http://login.council.example is not encrypted"
    assert expected in refusal(plain, COUNCIL)
    half = production_settings(
        database_url, folder, console=ConsoleSettings(oidc_issuer="https://login.council.example")
    )
    message = refusal(half, COUNCIL)
    assert "IAP_CONSOLE__OIDC_ISSUER: set without IAP_CONSOLE__OIDC_CLIENT_ID" in message
