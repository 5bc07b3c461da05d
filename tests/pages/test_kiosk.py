"""The kiosk over HTTP: setting a device up with a kiosk key (a good, a wrong, a revoked one),
the whole flow submitting one enquiry on the kiosk's channel as its client, routed by intake,
the receipt with the reference and nothing personal, answers refused at 422 with an error
summary, the CSRF field, nothing personal left after submitting or after the idle reset, and
the headers every page carries."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.clients.service import Scope, revoke_client
from app.core.models import enquiry_table
from app.core.settings import Settings
from app.routers.kiosk import DEVICE_COOKIE, SESSION_COOKIE, Answers
from tests.api.test_abuse import limited, running
from tests.conftest import bearer, make_key
from tests.pages.helpers import CSRF

NAME, EMAIL = "Robin Example", "robin@example.org"
DESCRIPTION = "A deep pothole outside number 12"


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.findall(page.text)
    assert found, page.text
    return str(found[0])


@pytest.fixture
async def kiosk_key(app: FastAPI) -> str:
    return await make_key(
        app.state.iap.engine, Scope.enquiries_submit, channel="kiosk", name="library-kiosk"
    )


@pytest.fixture
async def kiosk(app: FastAPI, kiosk_key: str) -> httpx.AsyncClient:
    """A browser on a kiosk that has been set up with a kiosk key."""
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://iap.test")
    done = await set_up(http, kiosk_key)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/kiosk/"
    return http


async def set_up(http: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await http.get("/kiosk/setup")
    assert form.status_code == 200
    return await http.post("/kiosk/setup", data={"csrf": csrf_of(form), "key": key})


async def answer(http: httpx.AsyncClient, step: str, **fields: str | list[str]) -> httpx.Response:
    """Open the question's page and send its form, as a browser would."""
    page = await http.get(f"/kiosk/question/{step}")
    assert page.status_code == 200, (step, page.status_code, page.headers, page.text)
    return await http.post(f"/kiosk/question/{step}", data={"csrf": csrf_of(page), **fields})


async def pothole_answers(http: httpx.AsyncClient, *, contact: bool = True) -> None:
    """Every question for a pothole at an Oxfordshire postcode, up to the check page."""
    steps = [
        ("topic", {"group": "Roads and transport"}),
        ("service", {"service": "pothole"}),
        ("answer-road_or_pavement", {"road_or_pavement": "road"}),
        ("answer-depth_cm", {"depth_cm": "8"}),
        ("description", {"description": DESCRIPTION}),
        ("postcode", {"postcode": "ox4 1aa"}),
        ("contact", {"name": NAME, "email": EMAIL, "phone": ""} if contact else {}),
    ]
    if contact:
        steps.append(("consent", {"share": "yes", "updates": "yes"}))
    for step, fields in steps:
        sent = await answer(http, step, **fields)
        assert sent.status_code == 303, (step, sent.text)


async def enquiries(app: FastAPI) -> int:
    async with app.state.iap.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(enquiry_table))).scalar())


async def test_a_kiosk_key_sets_the_device_up_sealed_in_a_strict_httponly_cookie(
    app: FastAPI, anonymous: httpx.AsyncClient, kiosk_key: str
) -> None:
    before = await anonymous.get("/kiosk/")
    assert before.status_code == 403
    assert "This kiosk is not set up" in before.text
    done = await set_up(anonymous, kiosk_key)
    assert done.status_code == 303
    cookie = next(c for c in done.headers.get_list("set-cookie") if DEVICE_COOKIE in c)
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/kiosk" in cookie
    assert kiosk_key not in cookie
    assert kiosk_key.split("_")[1] not in cookie  # not even the key id can be read
    start = await anonymous.get("/kiosk/")
    assert start.status_code == 200
    assert "Start now" in start.text


@pytest.mark.parametrize("which", ["unknown", "not a kiosk's", "empty"])
async def test_a_wrong_key_is_refused_with_an_error_and_sets_nothing_up(
    app: FastAPI, anonymous: httpx.AsyncClient, which: str
) -> None:
    keys = {
        "unknown": "iap_000000000000_not-a-real-secret",
        "not a kiosk's": await make_key(app.state.iap.engine, Scope.admin),
        "empty": "",
    }
    refused = await set_up(anonymous, keys[which])
    assert refused.status_code == 422
    assert "There is a problem" in refused.text
    assert 'href="#key"' in refused.text
    assert DEVICE_COOKIE not in refused.headers.get("set-cookie", "")
    assert (await anonymous.get("/kiosk/")).status_code == 403


async def test_a_revoked_key_leaves_the_kiosk_not_set_up(
    app: FastAPI, kiosk: httpx.AsyncClient
) -> None:
    assert (await kiosk.get("/kiosk/")).status_code == 200
    await revoke_client(app.state.iap.engine, "library-kiosk")
    page = await kiosk.get("/kiosk/question/topic")
    assert page.status_code == 403
    assert "This kiosk is not set up" in page.text
    assert "Start now" not in page.text


async def test_the_whole_flow_submits_one_kiosk_enquiry_routed_by_intake(
    app: FastAPI, kiosk: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await pothole_answers(kiosk)
    check = await kiosk.get("/kiosk/question/check")
    assert check.status_code == 200
    for shown in ("Pothole", "Road", "8", DESCRIPTION, "OX4 1AA", NAME, EMAIL):
        assert shown in check.text, shown
    sent = await kiosk.post("/kiosk/submit", data={"csrf": csrf_of(check)})
    assert sent.status_code == 303
    assert sent.headers["location"] == "/kiosk/receipt"
    receipt = await kiosk.get("/kiosk/receipt")
    assert receipt.status_code == 200
    groups = re.findall(r'<span class="kiosk-reference__group">(\w{3})</span>', receipt.text)
    reference = "-".join(groups)
    assert len(groups) == 3
    assert "Oxfordshire County Council" in receipt.text
    for personal in (NAME, EMAIL, DESCRIPTION, "OX4 1AA"):
        assert personal not in receipt.text

    stored = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert stored["channel"] == "kiosk"
    assert stored["service_code"] == "pothole"
    assert stored["attributes"] == {"road_or_pavement": "road", "depth_cm": 8}
    assert [d["organisation_id"] for d in stored["destinations"]] == ["oxfordshire-county"]
    assert stored["citizen"]["name"] == NAME
    assert stored["citizen"]["preferred_contact"] == "email"
    assert await enquiries(app) == 1
    # Submitted as the kiosk's own client: it may read what it submitted, nobody else's.
    mine = await kiosk.get(f"/v1/enquiries/{reference}")
    assert mine.status_code == 401  # the kiosk's key never leaves its sealed cookie


async def test_a_postcode_outside_every_area_is_told_and_no_postcode_goes_to_a_person(
    kiosk: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await answer(kiosk, "topic", group="Council Tax and benefits")  # one service: no 2nd page
    await answer(kiosk, "description", description="I want to ask about my bill")
    outside = await answer(kiosk, "postcode", postcode="SW1A 1AA")
    assert outside.status_code == 422
    assert "outside the area" in outside.text
    assert (await answer(kiosk, "postcode", postcode="")).status_code == 303
    assert (await answer(kiosk, "contact")).status_code == 303
    check = await kiosk.get("/kiosk/question/check")
    assert "Council Tax" in check.text
    await kiosk.post("/kiosk/submit", data={"csrf": csrf_of(check)})
    receipt = await kiosk.get("/kiosk/receipt")
    assert "A person will read it and pass it to the right place." in receipt.text


@pytest.mark.parametrize(
    ("step", "fields", "message", "field_id"),
    [
        ("topic", {}, "Select what it is about", "group"),
        ("topic", {"search": "yes", "q": ""}, "Enter a word to search for", "q"),
        ("service", {"service": "council-tax"}, "Select which of these it is", "service"),
        ("answer-road_or_pavement", {}, "Select an answer", "road_or_pavement"),
        ("answer-road_or_pavement", {"road_or_pavement": "sky"}, "Select an answer", None),
        ("answer-depth_cm", {"depth_cm": "deep"}, "Enter a number", "depth_cm"),
        ("description", {"description": "   "}, "Tell us what it is about", "description"),
        ("description", {"description": "x" * 1001}, "1000 characters or fewer", None),
        ("postcode", {"postcode": ""}, "Enter a postcode", "postcode"),
        ("postcode", {"postcode": "NOT A CODE"}, "Enter a real postcode", "postcode"),
        ("contact", {"email": "robin@"}, "Enter an email address", "email"),
        ("contact", {"phone": "call me"}, "Enter a phone number", "phone"),
    ],
)
async def test_a_bad_answer_is_shown_again_with_an_error_summary_at_422(
    kiosk: httpx.AsyncClient, step: str, fields: dict[str, str], message: str, field_id: str | None
) -> None:
    earlier = [
        ("topic", {"group": "Roads and transport"}),
        ("service", {"service": "pothole"}),
        ("answer-road_or_pavement", {"road_or_pavement": "road"}),
        ("answer-depth_cm", {"depth_cm": ""}),
        ("description", {"description": DESCRIPTION}),
        ("postcode", {"postcode": "OX4 1AA"}),
    ]
    names = [name for name, _ in earlier]
    for name, answered in earlier[: names.index(step) if step in names else len(names)]:
        assert (await answer(kiosk, name, **answered)).status_code == 303
    refused = await answer(kiosk, step, **fields)
    assert refused.status_code == 422, refused.text
    assert "There is a problem" in refused.text
    assert message in refused.text
    assert refused.text.count(message) == 2  # in the summary and beside the field
    if field_id:
        assert f'href="#{field_id}"' in refused.text
        assert f'id="{field_id}"' in refused.text
    assert "<title>Error:" in refused.text


async def test_a_form_without_its_csrf_field_is_refused_and_nothing_is_stored(
    app: FastAPI, kiosk: httpx.AsyncClient
) -> None:
    await pothole_answers(kiosk)
    for fields in ({}, {"csrf": "forged"}):
        refused = await kiosk.post("/kiosk/submit", data=fields)
        assert refused.status_code == 400
        assert "Your answer was not sent" in refused.text
        sneaked = await kiosk.post(
            "/kiosk/question/description", data={"description": "x", **fields}
        )
        assert sneaked.status_code == 400
    assert await enquiries(app) == 0
    check = await kiosk.get("/kiosk/question/check")
    assert DESCRIPTION in check.text  # the answers are as they were


async def test_pressing_send_twice_submits_once(app: FastAPI, kiosk: httpx.AsyncClient) -> None:
    await pothole_answers(kiosk)
    check = await kiosk.get("/kiosk/question/check")
    answers = kiosk.cookies.get(SESSION_COOKIE, path="/kiosk")
    first = await kiosk.post("/kiosk/submit", data={"csrf": csrf_of(check)})
    kiosk.cookies.set(SESSION_COOKIE, answers, domain="iap.test", path="/kiosk")
    second = await kiosk.post("/kiosk/submit", data={"csrf": csrf_of(check)})
    assert first.status_code == second.status_code == 303
    assert await enquiries(app) == 1


async def test_after_sending_back_and_reload_show_nothing_personal(
    kiosk: httpx.AsyncClient,
) -> None:
    await pothole_answers(kiosk)
    check = await kiosk.get("/kiosk/question/check")
    await kiosk.post("/kiosk/submit", data={"csrf": csrf_of(check)})
    for step in ("check", "contact", "description", "consent", "postcode"):
        back = await kiosk.get(f"/kiosk/question/{step}")
        assert back.status_code == 303, step
        assert back.headers["location"] == "/kiosk/?reset=idle"
    again = await kiosk.get("/kiosk/receipt")
    assert again.status_code == 200
    for personal in (NAME, EMAIL, DESCRIPTION):
        assert personal not in again.text
    finished = await kiosk.get("/kiosk/")
    assert finished.status_code == 200
    assert (await kiosk.get("/kiosk/receipt")).status_code == 303


async def test_the_idle_reset_clears_every_answer(app: FastAPI, kiosk: httpx.AsyncClient) -> None:
    await pothole_answers(kiosk)
    page = await kiosk.get("/kiosk/question/contact")
    # Left alone, the page asks for more time; unanswered, that page clears everything.
    assert page.headers["refresh"] == "300; url=/kiosk/still-there?step=contact"
    check = await kiosk.get("/kiosk/question/check")
    assert check.headers["refresh"] == "120; url=/kiosk/still-there?step=check"
    warning = await kiosk.get("/kiosk/still-there?step=check")
    assert warning.status_code == 200
    assert "Do you need more time?" in warning.text
    assert warning.headers["refresh"] == "30; url=/kiosk/?reset=idle"
    assert NAME not in warning.text
    cleared = await kiosk.get("/kiosk/?reset=idle")
    assert "have been cleared" in cleared.text
    assert (await kiosk.get("/kiosk/question/check")).status_code == 303
    topic = await kiosk.get("/kiosk/question/topic")
    assert "checked" not in topic.text


async def test_answers_older_than_the_idle_time_are_not_read_even_if_the_cookie_comes_back(
    app: FastAPI, kiosk: httpx.AsyncClient
) -> None:
    await pothole_answers(kiosk)
    sealer = app.state.iap.sealer
    old = Answers(
        sid=uuid.uuid4(), at=time.time() - 3600, description=DESCRIPTION, answered=["topic"]
    )
    sealed = sealer.seal({"answers": old.model_dump(mode="json")})
    kiosk.cookies.set(SESSION_COOKIE, sealed, domain="iap.test", path="/kiosk")
    late = await kiosk.get("/kiosk/question/check")
    assert late.status_code == 303
    assert late.headers["location"] == "/kiosk/?reset=idle"
    kiosk.cookies.set(SESSION_COOKIE, "gAAAAB" + "x" * 90, domain="iap.test", path="/kiosk")
    altered = await kiosk.get("/kiosk/question/check")
    assert altered.status_code == 303


async def test_every_kiosk_page_has_the_strict_headers_and_no_inline_code(
    kiosk: httpx.AsyncClient,
) -> None:
    await pothole_answers(kiosk)
    # The start and the set-up pages clear the answers: last.
    pages = ["/kiosk/question/check", "/kiosk/question/topic", "/kiosk/", "/kiosk/setup"]
    for path in pages:
        page = await kiosk.get(path)
        assert page.status_code == 200, path
        assert page.headers["cache-control"] == "no-store"
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src" not in policy
        assert "style=" not in page.text
        assert "<script" not in page.text
        assert 'http-equiv="refresh"' not in page.text
    await pothole_answers(kiosk)
    check = await kiosk.get("/kiosk/question/check")
    await kiosk.post("/kiosk/submit", data={"csrf": csrf_of(check)})
    receipt = await kiosk.get("/kiosk/receipt")
    assert "script-src 'self'" in receipt.headers["content-security-policy"]
    assert '<script src="/assets/kiosk.js" defer></script>' in receipt.text
    assert "ask a member of staff" in receipt.text  # the way to a printed copy without it
    css = await kiosk.get("/assets/kiosk.css")
    assert css.status_code == 200
    assert "@media print" in css.text


async def test_the_kiosk_speaks_welsh_when_asked(kiosk: httpx.AsyncClient) -> None:
    start = await kiosk.get("/kiosk/?lang=cy")
    assert '<html lang="cy">' in start.text
    topic = await kiosk.get("/kiosk/question/topic")
    assert '<html lang="cy">' in topic.text  # the choice stays with the session
    assert "Am beth mae" in topic.text


async def test_a_key_in_an_authorization_header_is_no_kiosk(
    app: FastAPI, anonymous: httpx.AsyncClient, kiosk_key: str
) -> None:
    page = await anonymous.get("/kiosk/question/topic", headers=bearer(kiosk_key))
    assert page.status_code == 403


async def test_a_device_without_a_kiosk_key_is_counted_per_address_forms_and_bodies_too(
    settings: Settings,
) -> None:
    limits = limited(settings, rate_limit_anonymous="3/hour")
    async with running(limits) as gateway, gateway.http() as http:
        answers = [(await http.get("/kiosk/question/topic")).status_code for _ in "abc"]
        assert answers == [403, 403, 403]
        over = [
            await http.get("/kiosk/"),
            await http.post("/kiosk/setup", data={"key": "iap_000000000000_guess"}),
            await http.post("/kiosk/question/topic", data={"group": "x" * 70_000}),
        ]
    assert [a.status_code for a in over] == [429, 429, 429]


async def test_a_kiosk_counts_against_its_own_client_not_its_address(
    settings: Settings,
) -> None:
    async with running(limited(settings, rate_limit_client="4/hour")) as gateway:
        key = await make_key(gateway.engine, Scope.enquiries_submit, channel="kiosk")
        async with gateway.http() as http:
            assert (await set_up(http, key)).status_code == 303  # per address: not counted
            assert [(await http.get("/kiosk/")).status_code for _ in "abcd"] == [200] * 4
            assert (await http.get("/kiosk/")).status_code == 429
