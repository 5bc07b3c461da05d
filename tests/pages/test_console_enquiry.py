"""The console's enquiry page: an enquiry as staff see it (the citizen's details, the timeline
with who did what, each delivery with its attempts and the back-office's reference), audited
per person; its forms (a note, information, withdraw, reopen, hand on from the triage desk),
each refused without the session's CSRF field; and a partner's staff seeing their own part
only, never another organisation's."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.alerts.feed import feed
from app.clients.service import Scope
from app.clients.staff import StaffRole
from app.core.models import audit_table, message_table
from app.core.settings import Settings
from app.main import create_app
from app.sandbox import BackOffice
from app.sandbox.office import Behaviour
from tests.adapters import factory
from tests.conftest import enquiry_body, started
from tests.conversation.helpers import (
    CHERWELL,
    CITIZEN,
    COUNTY,
    POLICE,
    asb,
    delivered,
    report,
    submitted,
)
from tests.pages.console import csrf_of, signed_in

VALE = "vale-of-white-horse"
SOUTH = "south-oxfordshire"


@asynccontextmanager
async def staff(
    app: FastAPI, role: StaffRole = StaffRole.agent, **kw: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in as a new member of staff, closed afterwards."""
    http = await signed_in(app, role, **kw)
    try:
        yield http
    finally:
        await http.aclose()


def page_of(reference: str) -> str:
    return f"/console/enquiries/{reference}"


async def opened(http: httpx.AsyncClient, reference: str) -> httpx.Response:
    answer = await http.get(page_of(reference))
    assert answer.status_code == 200, answer.text
    return answer


async def post(
    http: httpx.AsyncClient, reference: str, what: str, data: dict[str, Any], **kw: Any
) -> httpx.Response:
    """A form on the page, sent with the page's CSRF field as a browser would."""
    form = await opened(http, reference)
    return await http.post(
        f"{page_of(reference)}/{what}", data={"csrf": csrf_of(form.text), **data}, **kw
    )


def text_of(page: str) -> str:
    """The page's words, without its tags (what a person reads)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


async def audited(app: FastAPI, action: str, reference: str) -> list[str]:
    """Who (actor names) the audit log says did this to the enquiry."""
    a = audit_table.c
    async with app.state.iap.engine.connect() as conn:
        rows = await conn.scalars(select(a.actor).where(a.action == action, a.subject == reference))
        return list(rows)


async def messages(app: FastAPI) -> int:
    async with app.state.iap.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(message_table)) or 0)


def missed_bin() -> dict[str, Any]:
    """A missed bin in sector OX14 3, which the Vale and South Oxfordshire share: triage."""
    return enquiry_body(
        service_code="missed-bin",
        description="Our green bin was not emptied on Tuesday",
        location={"postcode": "OX14 3AB"},
        attributes={"bin_type": "garden"},
    )


# --- the page ------------------------------------------------------------------------------


async def test_the_page_shows_the_enquiry_its_delivery_and_timeline_and_audits_the_view(
    app: FastAPI, client: httpx.AsyncClient, back_office: BackOffice
) -> None:
    citizen = {**CITIZEN, "preferred_contact": "email"}
    told = {"share_contact_details": True, "send_updates": True}
    created = await client.post("/v1/enquiries", json=enquiry_body(citizen=citizen, consent=told))
    reference = created.json()["reference"]
    await app.state.runtime.dispatcher.run_until_idle()
    state = app.state.iap
    assert await feed(state.engine, state.catalogue, state.sealer) == 1  # the acknowledgement
    [case] = back_office.cases[COUNTY].values()
    [destination] = (await client.get(f"/v1/enquiries/{reference}")).json()["destinations"]
    async with staff(app, StaffRole.agent, name="Jo Agent") as http:
        answer = await opened(http, reference)
    page = text_of(answer.text)
    groups = reference.split("-")
    assert all(f'reference-readout__group">{g}</span>' in answer.text for g in groups)
    assert "Pothole" in page
    assert "Sam Reporter" in page
    assert "sam@example.org" in page
    assert "07700 900123" in page
    assert "Delivered to Oxfordshire County Council" in page  # the timeline
    # The delivery: its state, its one attempt, the back-office's own reference.
    assert destination["remote_reference"]
    assert destination["remote_reference"] in page
    assert case["organisation"] == COUNTY
    assert "Attempts to deliver to Oxfordshire County Council" in page
    assert re.search(
        r"<td>1</td>\s*<td[^>]*>[^<]+</td>\s*<td[^>]*>\d+ ms</td>\s*<td>delivered</td>",
        answer.text,
    )
    assert 'class="table-wrapper" role="region"' in answer.text
    # The messages to the citizen: what and how, never to whom.
    assert "Messages to the citizen" in page
    assert re.search(r"<td>acknowledgement</td>\s*<td>email</td>\s*<td>pending</td>", answer.text)
    assert (await audited(app, "enquiry.read", reference)).count("Jo Agent") == 1


async def test_a_failed_attempt_is_shown_with_its_error_and_the_next_try(
    settings: Settings, back_office: BackOffice
) -> None:
    # The retry long after the test, so the one attempt is all there is to see.
    slow = settings.dispatch.model_copy(update={"retry_schedule": [600.0]})
    application = create_app(settings.model_copy(update={"dispatch": slow}), run_dispatcher=False)
    back_office.behaviour[COUNTY] = Behaviour(down=True)
    async with started(application, Scope.admin) as client:
        reference, _ = await delivered(client, application)
        [destination] = (await client.get(f"/v1/enquiries/{reference}")).json()["destinations"]
        async with staff(application) as http:
            answer = await opened(http, reference)
    page = text_of(answer.text)
    [attempt] = destination["attempt_log"]
    assert (destination["state"], attempt["outcome"]) == ("pending", "retry")
    assert attempt["error"]
    assert html.escape(attempt["error"]) in answer.text
    assert "Next attempt" in page
    assert "None yet" in page  # no back-office reference yet


async def test_an_unknown_or_malformed_reference_is_the_404_page(app: FastAPI) -> None:
    async with staff(app) as http:
        unknown = await http.get(page_of("K7Q-M4X-PB6"))
        malformed = await http.get(page_of("not-a-reference"))
        too_long = await http.get(page_of("x" * 200))
    for answer in (unknown, malformed, too_long):
        assert answer.status_code == 404
        assert "Enquiry not found" in answer.text
        assert "problem" not in answer.headers["content-type"]


async def test_someone_signed_out_is_sent_to_sign_in_and_back(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    reference, _ = await submitted(client)
    from tests.pages.console import browser

    async with browser(app) as http:
        answer = await http.get(page_of(reference))
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in?next=%2Fconsole%2Fenquiries")


# --- notes ---------------------------------------------------------------------------------


async def test_an_agents_note_is_shown_to_staff_never_to_the_citizen(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await delivered(client, app)
    async with staff(app, name="Jo Agent") as http:
        sent = await post(http, reference, "notes", {"note-text": "Caller was upset"})
        assert sent.status_code == 303
        assert sent.headers["location"] == f"{page_of(reference)}?done=note"
        after = await http.get(sent.headers["location"])
    assert "Your note was added" in after.text
    assert "Caller was upset" in text_of(after.text)
    assert "Staff note" in after.text
    track = await anonymous.get(f"/track/{reference}", params={"token": token})
    assert track.status_code == 200
    assert "Caller was upset" not in track.text
    masked = (await anonymous.get(f"/v1/enquiries/{reference}", params={"token": token})).json()
    assert masked["messages"] == []
    assert await audited(app, "enquiry.note_added", reference) == ["Jo Agent"]


async def test_an_empty_note_is_named_in_the_error_summary_and_nothing_is_kept(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    reference, _ = await delivered(client, app)
    async with staff(app) as http:
        answer = await post(http, reference, "notes", {"note-text": "   "})
    assert answer.status_code == 422
    assert 'class="error-summary"' in answer.text
    assert '<a href="#note-text">Enter the note</a>' in answer.text
    assert 'aria-describedby="note-text-hint note-text-error"' in answer.text
    assert answer.text.count("<title>Error:") == 1
    assert await messages(app) == 0


async def test_a_form_without_its_csrf_field_is_refused_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    reference, _ = await delivered(client, app)
    async with staff(app) as http:
        await opened(http, reference)
        refused = [
            await http.post(f"{page_of(reference)}/{what}", data=data)
            for what, data in (
                ("notes", {"note-text": "x"}),
                ("information", {"information-text": "x"}),
                ("withdraw", {"withdraw-reason": "x"}),
                ("reopen", {"reopen-reason": "x"}),
                ("hand-on", {"organisations": VALE, "hand-on-reason": "x"}),
            )
        ]
        wrong = await http.post(
            f"{page_of(reference)}/notes", data={"csrf": "not-ours", "note-text": "x"}
        )
        status = (await client.get(f"/v1/enquiries/{reference}")).json()["status"]
    for answer in (*refused, wrong):
        assert answer.status_code == 400, answer.text
        assert "Nothing was changed" in answer.text
    assert await messages(app) == 0
    assert status == "dispatched"


async def test_odd_input_gets_a_page_never_problem_json_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    reference, _ = await delivered(client, app)
    async with staff(app) as http:
        form = csrf_of((await opened(http, reference)).text)
        odd_link = await http.get(page_of(reference), params={"done": "x" * 500})
        many_fields = await http.post(
            f"{page_of(reference)}/hand-on",
            data={"csrf": form, "organisations": [f"org-{n}" for n in range(40)]},
        )
        a_file_with_a_note = await http.post(
            f"{page_of(reference)}/notes",
            data={"csrf": form, "note-text": "x"},
            files=[("files", ("a.jpg", b"x", "image/jpeg"))],
        )
        as_json = await http.post(f"{page_of(reference)}/notes", json={"note-text": "x"})
        nul = await http.post(
            f"{page_of(reference)}/notes", data={"csrf": form, "note-text": "\x00"}
        )
        bad_file_id = await http.get(f"{page_of(reference)}/attachments/not-an-id")
    assert odd_link.status_code == 200
    assert "notification-banner" not in odd_link.text
    for answer in (many_fields, a_file_with_a_note, as_json):
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert "Nothing was changed" in answer.text
    assert nul.status_code == 422
    assert bad_file_id.status_code == 404
    assert "Enquiry not found" in bad_file_id.text
    assert await messages(app) == 0


# --- information, withdraw, reopen ---------------------------------------------------------


async def test_information_with_a_photo_reaches_the_timeline_and_the_file_opens(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    reference, _ = await delivered(client, app)
    async with staff(app, name="Jo Agent") as http:
        form = await opened(http, reference)
        sent = await http.post(
            f"{page_of(reference)}/information",
            data={"csrf": csrf_of(form.text), "information-text": "It is by the bus stop"},
            files=[("files", ("IMG_1.jpg", factory.photo(exif=True), "image/jpeg"))],
        )
        assert sent.status_code == 303, sent.text
        after = await http.get(sent.headers["location"])
        [link] = re.findall(r'href="(/console/enquiries/[^"]+/attachments/[^"]+)"', after.text)
        photo = await http.get(link)
    page = text_of(after.text)
    assert "The information was added" in page
    assert "Information added" in page  # the timeline
    assert "It is by the bus stop" in page
    assert "photo-1.jpg" in page
    assert photo.status_code == 200
    assert photo.headers["content-type"] == "image/jpeg"
    assert photo.headers["content-disposition"] == "attachment; filename=photo-1.jpg"
    assert await audited(app, "attachment.read", reference) == ["Jo Agent"]
    assert await audited(app, "enquiry.information_added", reference) == ["Jo Agent"]


async def test_information_that_is_not_a_photo_is_refused_on_the_page(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    reference, _ = await delivered(client, app)
    async with staff(app) as http:
        answer = await post(
            http,
            reference,
            "information",
            {"information-text": "see the file"},
            files=[("files", ("notes.jpg", b"just text", "image/jpeg"))],
        )
    assert answer.status_code == 415
    assert '<a href="#files">The selected file must be a photo' in answer.text
    assert "see the file" in answer.text  # what they typed is kept
    assert await messages(app) == 0


async def test_an_agent_withdraws_then_reopens_after_it_is_resolved(
    app: FastAPI, client: httpx.AsyncClient, back_office: BackOffice
) -> None:
    withdrawn, _ = await delivered(client, app)
    resolved, _ = await delivered(client, app)
    await report(app, resolved, COUNTY, "resolved")
    async with staff(app, name="Jo Agent") as http:
        before = await opened(http, withdrawn)
        assert 'action="/console/enquiries/' + withdrawn + '/withdraw"' in before.text
        assert "/reopen" not in before.text  # not resolved: no reopen form
        sent = await post(http, withdrawn, "withdraw", {"withdraw-reason": "Fixed already"})
        assert sent.status_code == 303
        after = await http.get(sent.headers["location"])
        again = await http.post(
            f"{page_of(withdrawn)}/withdraw", data={"csrf": csrf_of(after.text)}
        )
        done = await opened(http, resolved)
        assert "/withdraw" not in done.text  # resolved: it cannot be withdrawn
        reopened = await post(http, resolved, "reopen", {"reopen-reason": "Not fixed"})
        assert reopened.status_code == 303
        shown = await http.get(reopened.headers["location"])
    assert "The enquiry was withdrawn." in after.text
    assert "withdrawn" in text_of(after.text)
    assert "/information" not in after.text  # over: no more information
    assert again.status_code == 409
    assert "was withdrawn" in text_of(again.text)
    assert 'class="error-summary"' in again.text
    assert "The enquiry was reopened." in shown.text
    assert (await client.get(f"/v1/enquiries/{resolved}")).json()["status"] == "reopened"
    assert await audited(app, "enquiry.withdrawn", withdrawn) == ["Jo Agent"]
    assert await audited(app, "enquiry.reopened", resolved) == ["Jo Agent"]


async def test_reopening_an_enquiry_that_is_not_over_is_refused_on_the_page(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    reference, _ = await delivered(client, app)
    async with staff(app) as http:
        answer = await post(http, reference, "reopen", {"reopen-reason": "x"})
    assert answer.status_code == 409
    assert '<a href="#reopen-reason">' in answer.text
    assert 'id="reopen-reason"' in answer.text  # the form is shown with its error
    assert "only a resolved or closed enquiry can be reopened" in answer.text


# --- hand on -------------------------------------------------------------------------------


async def test_an_agent_hands_a_triage_enquiry_on_to_the_vale(
    app: FastAPI, client: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, _ = await submitted(client, missed_bin())
    await app.state.runtime.dispatcher.run_until_idle()
    async with staff(app, name="Jo Agent") as http:
        page = await opened(http, reference)
        assert "Hand on from the triage desk" in page.text
        assert f'value="{VALE}"' in page.text
        assert f'value="{SOUTH}"' in page.text
        assert "231 of 277 postcodes in sector OX14 3" in page.text
        sent = await http.post(
            f"{page_of(reference)}/hand-on",
            data={
                "csrf": csrf_of(page.text),
                "organisations": VALE,
                "hand-on-reason": "Caller confirms Sutton Courtenay",
            },
        )
        assert sent.status_code == 303, sent.text
        await app.state.runtime.dispatcher.run_until_idle()
        after = await http.get(sent.headers["location"])
    text = text_of(after.text)
    assert "The enquiry was handed on." in text
    assert "Handed on from the triage desk" in text
    assert "by Jo Agent" in text
    assert "Hand on from the triage desk" not in re.sub(
        r"<ol class=\"timeline\">.*?</ol>", "", after.text, flags=re.S
    )
    assert len(back_office.cases.get(VALE, {})) == 1
    assert back_office.cases.get(SOUTH, {}) == {}
    assert await audited(app, "triage.handed_on", reference) == ["Jo Agent"]


async def test_a_hand_on_without_a_choice_or_reason_is_named_and_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, _ = await submitted(client, missed_bin())
    async with staff(app) as http:
        answer = await post(http, reference, "hand-on", {})
        busy = await post(
            http,
            reference,
            "hand-on",
            {"organisations": "no-such-council", "hand-on-reason": "x"},
        )
    assert answer.status_code == 422
    assert '<a href="#hand-on-organisations">Choose at least one organisation' in answer.text
    assert '<a href="#hand-on-reason">Enter why it goes to them</a>' in answer.text
    assert busy.status_code == 422
    assert 'class="error-summary"' in busy.text
    assert await audited(app, "triage.handed_on", reference) == []


async def test_no_hand_on_form_away_from_the_desk_and_the_service_refuses_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    reference, _ = await delivered(client, app)
    async with staff(app) as http:
        page = await opened(http, reference)
        answer = await post(
            http, reference, "hand-on", {"organisations": VALE, "hand-on-reason": "x"}
        )
    assert "/hand-on" not in page.text
    assert answer.status_code == 409
    assert "is not at the triage desk" in answer.text


async def test_a_data_protection_officer_reads_but_may_not_hand_on(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    reference, _ = await submitted(client, missed_bin())
    async with staff(app, StaffRole.data_protection_officer) as http:
        page = await opened(http, reference)
        refused = await http.post(
            f"{page_of(reference)}/hand-on",
            data={"csrf": csrf_of(page.text), "organisations": VALE, "hand-on-reason": "x"},
        )
    assert "/hand-on" not in page.text
    assert refused.status_code == 403
    assert "You cannot use this page" in refused.text
    assert await audited(app, "triage.handed_on", reference) == []


# --- a partner's staff ----------------------------------------------------------------------


async def test_a_police_officer_gets_the_404_page_for_a_county_only_enquiry(
    app: FastAPI, client: httpx.AsyncClient, back_office: BackOffice
) -> None:
    pothole, _ = await delivered(client, app)
    async with staff(app, organisation=POLICE, name="PC Hale") as http:
        page = await http.get(page_of(pothole))
        form = await opened_home(http)
        note = await http.post(f"{page_of(pothole)}/notes", data={"csrf": form, "note-text": "x"})
    assert page.status_code == 404
    assert "Sam Reporter" not in page.text
    assert note.status_code == 404
    assert await messages(app) == 0
    assert await audited(app, "enquiry.read", pothole) == []


async def opened_home(http: httpx.AsyncClient) -> str:
    home = await http.get("/console/")
    assert home.status_code == 200
    return csrf_of(home.text)


async def test_a_police_officer_sees_only_the_police_part_of_a_shared_enquiry(
    app: FastAPI, client: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, _ = await delivered(client, app, asb())
    async with staff(app, name="Alex Agent") as agent:
        noted = await post(agent, reference, "notes", {"note-text": "Contact centre note"})
        assert noted.status_code == 303
        centre = text_of((await opened(agent, reference)).text)
    async with staff(app, organisation=POLICE, name="PC Hale") as officer:
        page = await opened(officer, reference)
    text = text_of(page.text)
    assert "Thames Valley Police" in text
    assert "Cherwell" in centre  # the contact centre sees both parts
    assert "Cherwell" not in text
    assert CHERWELL not in page.text
    assert "Contact centre note" not in text
    assert "Alex Agent" not in text
    assert "Attempts to deliver to Thames Valley Police" in text
    assert "/hand-on" not in page.text
    assert (await audited(app, "enquiry.read", reference)).count("PC Hale") == 1
