"""The citizen's tracking page over HTTP: what it shows (and never shows), adding information
with a photo, refusals rendered in the error summary with nothing stored, withdrawing, the one
404 for any wrong link, the CSRF field, Welsh, and its security headers."""

from __future__ import annotations

from datetime import timedelta
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from fastapi import FastAPI
from PIL import Image

from app.clients.service import Scope
from app.core.models import utcnow
from app.core.reference import display, new_reference
from app.core.settings import AttachmentSettings, Settings
from app.main import create_app
from app.sandbox import BackOffice
from tests.api.test_abuse import limited, running
from tests.conftest import bearer, make_key, make_person, started
from tests.conversation.helpers import (
    COUNTY,
    delivered,
    ended_at,
    follow_ups,
    report,
    stored,
    submitted,
)
from tests.pages.helpers import forms, page_url

ROOT = Path(__file__).resolve().parents[2]


def jpeg() -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


async def post_form(
    http: httpx.AsyncClient, action: str, fields: dict[str, str], files=None
) -> httpx.Response:
    # A browser sends a multipart form even with no file chosen (an empty nameless part).
    parts = files if files is not None else [("files", ("", b"", "application/octet-stream"))]
    return await http.post(action, data=fields, files=parts)


async def test_the_page_shows_status_destinations_and_timeline_and_no_staff_notes(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await delivered(client, app)
    staff = await make_person(app, "agent", name="Alex Agent")
    noted = await anonymous.post(
        f"/v1/enquiries/{reference}/notes",
        json={"text": "Caller sounded upset SECRET-NOTE"},
        headers={"Authorization": f"Bearer {staff}"},
    )
    assert noted.status_code == 201, noted.text
    page = await anonymous.get(page_url(reference, token))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<html lang="en">' in html
    assert display(reference.replace("-", "")) in html
    assert "Sent" in html
    assert "Oxfordshire County Council" in html
    assert "We received your enquiry" in html
    assert "Sent to Oxfordshire County Council" in html
    assert "SECRET-NOTE" not in html
    assert "Alex Agent" not in html


async def test_adding_information_with_a_photo_is_kept_forwarded_and_shown(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await delivered(client, app)
    action, csrf = (await forms(anonymous, reference, token))["information"]
    sent = await post_form(
        anonymous,
        action,
        {"csrf": csrf, "information": "It is by the bus stop"},
        [("files", ("IMG_0001.jpg", jpeg(), "image/jpeg"))],
    )
    assert sent.status_code == 303
    assert sent.headers["location"].startswith(f"/track/{reference}?")
    assert "done=information" in sent.headers["location"]
    [queued] = await follow_ups(app)
    assert (queued["organisation_id"], queued["kind"]) == (COUNTY, "information")
    assert await stored(app) == {"messages": 1, "attachments": 1, "follow_ups": 1}
    after = await anonymous.get(sent.headers["location"])
    assert "what you added has been kept and will be passed on" in after.text
    assert "It is by the bus stop" in after.text
    assert "photo-1.jpg" in after.text
    link = after.text.split('href="/v1/enquiries/')[1].split('"')[0].replace("&amp;", "&")
    photo = await anonymous.get(f"/v1/enquiries/{link}")
    assert photo.status_code == 200
    assert photo.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("fields", "files", "status", "field", "says"),
    [
        ({"information": ""}, None, 422, "information", "Enter the information you want to add"),
        (
            {"information": "see file"},
            [("files", ("notes.txt", b"just some text", "text/plain"))],
            415,
            "files",
            "must be a photo",
        ),
        (
            {"information": ""},
            [("files", ("empty.jpg", b"", "image/jpeg"))],
            422,
            "files",
            "empty or damaged",
        ),
        (
            {"information": "x" * 5001},
            None,
            422,
            "information",
            "5000 characters or fewer",
        ),
    ],
)
async def test_a_refused_form_is_shown_again_with_its_errors_and_nothing_is_stored(
    app: FastAPI,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    fields,
    files,
    status,
    field,
    says,
) -> None:
    reference, token = await submitted(client)
    action, csrf = (await forms(anonymous, reference, token))["information"]
    answer = await post_form(anonymous, action, {"csrf": csrf, **fields}, files)
    assert answer.status_code == status, answer.text
    html = answer.text
    assert 'class="error-summary"' in html
    summary = html.split('class="error-summary"')[1].split("</div>")[0]
    assert f'href="#{field}"' in summary
    assert says in summary
    assert f'id="{field}-error"' in html
    assert f'aria-describedby="{field}-hint {field}-error"' in html
    assert "<title>Error:" in html
    assert await stored(app) == {"messages": 0, "attachments": 0, "follow_ups": 0}


async def test_a_file_over_the_size_limit_is_refused_in_the_error_summary(
    settings: Settings, tmp_path
) -> None:
    small = AttachmentSettings(directory=tmp_path / "small", max_bytes=2048)
    application = create_app(
        settings.model_copy(update={"attachments": small}), run_dispatcher=False
    )
    async with started(application, Scope.admin) as keyed:
        reference, token = await submitted(keyed)
        keyed.headers.pop("Authorization")
        action, csrf = (await forms(keyed, reference, token))["information"]
        answer = await post_form(
            keyed,
            action,
            {"csrf": csrf, "information": "big"},
            [("files", ("big.jpg", b"\xff\xd8\xff" + b"0" * 5000, "image/jpeg"))],
        )
        assert answer.status_code == 413
        assert "too large" in answer.text
        assert 'href="#files"' in answer.text
        assert await stored(application) == {"messages": 0, "attachments": 0, "follow_ups": 0}


async def test_withdrawing_calls_it_off_and_the_page_then_says_so(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await delivered(client, app)
    action, csrf = (await forms(anonymous, reference, token))["withdraw"]
    sent = await anonymous.post(action, data={"csrf": csrf, "reason": "Sorted it myself"})
    assert sent.status_code == 303
    seen = (await anonymous.get(f"/v1/enquiries/{reference}", params={"token": token})).json()
    assert seen["status"] == "withdrawn"
    [queued] = await follow_ups(app)
    assert queued["kind"] == "withdrawal"
    after = await anonymous.get(sent.headers["location"])
    assert "Your enquiry has been withdrawn." in after.text
    assert "Withdrawn" in after.text
    assert 'name="csrf"' not in after.text  # nothing more can be sent from it


async def test_a_resolved_enquiry_can_be_opened_again_within_the_window_only(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await delivered(client, app)
    assert "reopen" not in await forms(anonymous, reference, token)  # not over yet
    await report(app, reference, COUNTY, "resolved")
    found = await forms(anonymous, reference, token)
    assert set(found) == {"reopen"}  # nothing to add to or withdraw once it is over
    action, csrf = found["reopen"]
    sent = await anonymous.post(action, data={"csrf": csrf, "reopen-reason": "Still there"})
    assert sent.status_code == 303
    after = await anonymous.get(sent.headers["location"])
    assert "opened again and the organisations have been told" in after.text
    assert "Reopened" in after.text
    [queued] = await follow_ups(app)
    assert (queued["organisation_id"], queued["kind"]) == (COUNTY, "reopening")

    late, late_token = await delivered(client, app)
    await report(app, late, COUNTY, "resolved")
    action, csrf = (await forms(anonymous, late, late_token))["reopen"]
    days = app.state.iap.settings.follow_ups.reopen_days
    await ended_at(app, late, utcnow() - timedelta(days=days + 1))
    refused = await anonymous.post(action, data={"csrf": csrf, "reopen-reason": "Back again"})
    assert refused.status_code == 409  # the form was open, the window closed since
    assert 'class="error-summary"' in refused.text
    assert 'href="#reopen-reason"' in refused.text
    assert "reopen" not in await forms(anonymous, late, late_token)


async def test_a_wrong_token_an_unknown_and_a_malformed_reference_get_the_same_404(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await submitted(client)
    answers = [
        await anonymous.get(page_url(reference, "not-the-token")),
        await anonymous.get(page_url(display(new_reference()), token)),
        await anonymous.get(page_url("NOT-A-REF", token)),
        await anonymous.get(f"/track/{reference}"),
        await anonymous.get(page_url(reference, "x" * 500, lang="x" * 500, done="y" * 99)),
        await anonymous.post(f"/track/{reference}/withdraw?token=wrong", data={"reason": "x"}),
    ]
    assert {a.status_code for a in answers} == {404}
    assert len({a.text for a in answers}) == 1
    assert "We cannot find that enquiry" in answers[0].text


async def test_a_post_without_the_pages_csrf_field_is_refused_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await submitted(client)
    forms_ = await forms(anonymous, reference, token)
    information, _ = forms_["information"]
    withdraw, withdraw_csrf = forms_["withdraw"]
    missing = await post_form(anonymous, information, {"information": "hello"})
    wrong = await post_form(anonymous, information, {"csrf": "x" * 43, "information": "hello"})
    # The withdraw form's field is for withdrawing only.
    other = await post_form(anonymous, information, {"csrf": withdraw_csrf, "information": "h"})
    assert [a.status_code for a in (missing, wrong, other)] == [400, 400, 400]
    assert "Your form was not sent" in missing.text
    assert (await anonymous.post(withdraw, data={"reason": "x"})).status_code == 400
    assert await stored(app) == {"messages": 0, "attachments": 0, "follow_ups": 0}


async def test_welsh_from_the_query_or_the_browser_and_a_switch_back(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await submitted(client)
    asked = await anonymous.get(page_url(reference, token, lang="cy"))
    browser = await anonymous.get(
        page_url(reference, token), headers={"Accept-Language": "cy-GB,cy;q=0.9,en;q=0.5"}
    )
    english = await anonymous.get(
        page_url(reference, token), headers={"Accept-Language": "fr, en;q=0.5"}
    )
    for answer in (asked, browser):
        assert '<html lang="cy">' in answer.text
        assert "Eich ymholiad" in answer.text
        assert "Ychwanegu gwybodaeth neu lun" in answer.text
        assert "lang=cy" in answer.text.split('<form method="post" action="')[1].split('"')[0]
        assert 'hreflang="en"' in answer.text
    assert '<html lang="en">' in english.text
    assert 'hreflang="cy"' in english.text


async def test_pages_have_a_strict_policy_no_referrer_and_no_caching(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await submitted(client)
    for answer in (
        await anonymous.get(page_url(reference, token)),
        await anonymous.get(page_url(reference, "wrong")),
    ):
        policy = answer.headers["content-security-policy"]
        assert "unsafe-inline" not in policy
        assert "default-src 'none'" in policy
        assert "style-src 'self'" in policy
        assert "form-action 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
        assert "style=" not in answer.text
        assert "<script" not in answer.text
    css = await anonymous.get("/assets/track.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")


def test_every_string_of_the_pages_has_its_welsh() -> None:
    """What pybabel extract finds in the citizen's pages is all in the shipped Welsh catalogue
    (the staff console, app/web/templates/console/, is in English; its strings are marked for
    a catalogue all the same)."""
    method_map = [
        ("app/routers/track.py", "python"),
        ("app/routers/kiosk.py", "python"),
        ("app/web/templates/*.html", "jinja2"),
        ("app/web/templates/kiosk/*.html", "jinja2"),
    ]
    jinja = {"extensions": "jinja2.ext.i18n"}
    options = {"app/web/templates/*.html": jinja, "app/web/templates/kiosk/*.html": jinja}
    found = {
        message
        for _, _, message, _, _ in extract_from_dir(ROOT, method_map, options_map=options)
        if isinstance(message, str)
    }
    with (ROOT / "app/web/locale/cy/LC_MESSAGES/messages.po").open("rb") as po:
        welsh = {m.id: m.string for m in read_po(po) if m.id}
    assert found - welsh.keys() == set()
    assert [m for m in found if not welsh[m]] == []


async def test_the_page_counts_against_the_address_as_the_apis_token_reads_do(
    settings: Settings,
) -> None:
    reference = display(new_reference())
    async with running(limited(settings, rate_limit_anonymous="3/hour")) as gateway:
        admin = await make_key(gateway.engine, Scope.admin)
        async with gateway.http() as http:
            answers = [(await http.get(page_url(reference, "guess"))).status_code for _ in "abc"]
            assert answers == [404, 404, 404]
            over = [
                await http.get(page_url(reference, "guess")),
                await http.get(page_url(reference, "guess"), headers=bearer(admin)),
                await http.post(f"/track/{reference}/withdraw?token=guess", data={"reason": "x"}),
            ]
    assert [a.status_code for a in over] == [429, 429, 429]
