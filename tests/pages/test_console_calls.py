"""Taking a call and a caller's history in the console, as a browser without JavaScript uses
them: the service found by the caller's words, the routing preview from intake's own routing
(the triage desk and its candidates at a straddling postcode), the enquiry sent through intake
on the channel phone with the agent named, once however often the form is sent, errors beside
their fields with nothing stored, CSRF, who may use the pages, and the audited history."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from app.clients.staff import StaffRole
from app.core.models import audit_table, enquiry_table, event_table
from tests.conftest import bearer, enquiry_body, make_key
from tests.pages.console import csrf_of, signed_in

STRADDLING = "OX14 3AB"  # sector OX14 3: the Vale of White Horse and South Oxfordshire
KEY = re.compile(r'name="key" value="([0-9a-f]{32})"')
CALLER = {
    "name": "Robin Example",
    "phone": "07700 900123",
    "email": "robin@example.org",
    "preferred_contact": "phone",
    "language": "cy",
    "accessibility_needs": "Large print letters",
    "share": "yes",
    "updates": "no",
}


@asynccontextmanager
async def session(
    app: FastAPI, role: StaffRole = StaffRole.agent, **kw: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in as a new member of staff, closed afterwards."""
    http = await signed_in(app, role, **kw)
    try:
        yield http
    finally:
        await http.aclose()


async def details_form(http: httpx.AsyncClient, service: str) -> dict[str, str]:
    """The take-a-call form for a service, as the page gives it: its CSRF field and key."""
    page = await http.get(f"/console/calls/new?service={service}")
    assert page.status_code == 200, page.text
    found = KEY.search(page.text)
    assert found is not None
    return {"csrf": csrf_of(page.text), "key": found[1], "service": service}


def missed_bin(form: dict[str, str], **overrides: str) -> dict[str, str]:
    return {
        **form,
        "attr-bin_type": "garden",
        "description": "Our garden waste bin was missed on Tuesday",
        "postcode": STRADDLING,
        **CALLER,
        **overrides,
    }


async def count_enquiries(app: FastAPI) -> int:
    async with app.state.iap.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(enquiry_table)) or 0)


def text_of(page: str) -> str:
    """The page's words as read, tags and extra spacing gone."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


async def test_the_service_is_found_by_the_callers_own_words(app):
    async with session(app) as http:
        first = await http.get("/console/calls/new")
        form = {"csrf": csrf_of(first.text), "q": "my bins were not emptied", "action": "find"}
        found = await http.post("/console/calls/new", data=form)
        pothole = await http.get("/console/calls/new?q=hole in the road")
    assert first.status_code == 200
    assert "Every service" in first.text  # nothing asked yet: every service to choose from
    assert found.status_code == 200
    radios = re.findall(r'name="service" type="radio" value="([a-z-]+)"', found.text)
    assert radios[0] == "missed-bin"
    assert "pothole" not in radios
    assert re.findall(r'name="service" type="radio" value="([a-z-]+)"', pothole.text)[0] == (
        "pothole"
    )


async def test_choosing_without_a_service_is_an_error_beside_the_radios(app):
    async with session(app) as http:
        first = await http.get("/console/calls/new")
        answer = await http.post(
            "/console/calls/new", data={"csrf": csrf_of(first.text), "action": "choose"}
        )
    assert answer.status_code == 422
    assert '<a href="#service">Select the service the call is about</a>' in answer.text
    assert 'id="service-error"' in answer.text


async def test_a_missed_bin_at_a_straddling_postcode_previews_the_triage_desk_and_both_councils(
    app,
):
    async with session(app) as http:
        form = await details_form(http, "missed-bin")
        checked = await http.post("/console/calls/new", data=missed_bin(form, action="check"))
        fragment = await http.get(
            "/console/calls/preview", params={"service": "missed-bin", "postcode": "ox14 3ab"}
        )
    assert checked.status_code == 200
    said = text_of(checked.text)
    assert "This will go to the triage desk: the district of OX14 3AB cannot be decided" in said
    assert "Vale of White Horse District Council" in said
    assert "South Oxfordshire District Council" in said
    assert "231 of 277 postcodes in sector OX14 3" in said
    assert await count_enquiries(app) == 0  # checking sends nothing
    # The form keeps what was typed.
    assert 'value="Robin Example"' in checked.text
    assert "Our garden waste bin was missed on Tuesday</textarea>" in checked.text
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert text_of(fragment.text) in said


async def test_a_pothole_at_an_oxfordshire_postcode_previews_the_county_council_and_why(app):
    async with session(app) as http:
        form = await details_form(http, "pothole")
        checked = await http.post(
            "/console/calls/new", data={**form, "postcode": "OX4 1AA", "action": "check"}
        )
        elsewhere = await http.get(
            "/console/calls/preview", params={"service": "pothole", "postcode": "SW1A 1AA"}
        )
        not_a_postcode = await http.get(
            "/console/calls/preview", params={"service": "pothole", "postcode": "banana"}
        )
    said = text_of(checked.text)
    assert "This goes to Oxfordshire County Council because Pothole is a county service" in said
    assert "triage desk" not in said
    assert "outside the area this gateway serves" in text_of(elsewhere.text)
    assert "is not a UK postcode" in text_of(not_a_postcode.text)
    assert "script-src 'self'" in checked.headers["content-security-policy"]
    assert "/assets/console-calls.js" in checked.text


async def test_an_agent_sends_a_phone_enquiry_and_reads_back_its_reference(app):
    async with session(app, name="Jo Agent") as http:
        form = await details_form(http, "missed-bin")
        sent = await http.post("/console/calls/new", data=missed_bin(form, action="send"))
        assert sent.status_code == 303, sent.text
        location = sent.headers["location"]
        assert location.startswith("/console/calls/sent/")
        reference = location.rsplit("/", 1)[1]
        confirmation = await http.get(location)
    assert confirmation.status_code == 200
    groups = re.findall(
        r'<span class="reference-readout__group">([0-9A-Z]+)</span>', confirmation.text
    )
    assert "-".join(groups) == reference
    assert f'href="/console/enquiries/{reference}"' in confirmation.text
    assert "Oxfordshire Contact Centre (triage desk)" in text_of(confirmation.text)
    spelt = re.findall(r"<li>([^<]+)</li>", confirmation.text.split("Spelt out")[1])[:3]
    assert len(spelt) == 3  # each group spelt out, character by character ("K for Kilo, 7 seven")
    for group, said in zip(groups, spelt, strict=True):
        words = said.split(", ")
        assert [w[0] for w in words] == list(group)
        assert all(w.startswith(f"{w[0]} for ") or w[0].isdigit() for w in words)

    async with app.state.iap.engine.connect() as conn:
        enquiry = (
            (await conn.execute(select(enquiry_table).where(enquiry_table.c.channel == "phone")))
            .mappings()
            .one()
        )
        received = (
            (
                await conn.execute(
                    select(event_table).where(event_table.c.type == "enquiry.received")
                )
            )
            .mappings()
            .one()
        )
    assert enquiry["attributes"] == {"bin_type": "garden"}
    assert enquiry["consent"] == {"share_contact_details": True, "send_updates": False}
    assert enquiry["place"]["candidates"]
    assert received["actor"] == "Jo Agent"

    # The API reads it back the same: phone, the agent on the timeline, the triage desk.
    key = await make_key(app.state.iap.engine, *_read_all())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://iap.test", headers=bearer(key)
    ) as api:
        read = (await api.get(f"/v1/enquiries/{reference}")).json()
    assert read["channel"] == "phone"
    assert read["citizen"]["name"] == "Robin Example"
    assert read["citizen"]["preferred_contact"] == "phone"
    assert read["citizen"]["language"] == "cy"
    assert [d["organisation_id"] for d in read["destinations"]] == ["contact-centre"]
    assert read["timeline"][0]["actor"] == "Jo Agent"


def _read_all() -> Any:
    from app.clients.service import Scope

    return (Scope.enquiries_read_all,)


async def test_a_pothole_sent_goes_to_the_county_council(app):
    async with session(app) as http:
        form = await details_form(http, "pothole")
        sent = await http.post(
            "/console/calls/new",
            data={
                **form,
                "attr-road_or_pavement": "road",
                "attr-depth_cm": "12",
                "description": "A deep pothole outside the school",
                "postcode": "OX4 1AA",
                "action": "send",
            },
        )
        assert sent.status_code == 303, sent.text
        confirmation = await http.get(sent.headers["location"])
    assert "Oxfordshire County Council" in text_of(confirmation.text)
    async with app.state.iap.engine.connect() as conn:
        attributes = await conn.scalar(select(enquiry_table.c.attributes))
    assert attributes == {"road_or_pavement": "road", "depth_cm": 12}


async def test_the_same_form_sent_twice_stores_one_enquiry(app):
    async with session(app) as http:
        form = missed_bin(await details_form(http, "missed-bin"), action="send")
        first = await http.post("/console/calls/new", data=form)
        again = await http.post("/console/calls/new", data=form)
        together = await asyncio.gather(
            *(http.post("/console/calls/new", data={**form, "key": "ab" * 16}) for _ in range(2))
        )
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    assert [r.status_code for r in together] == [303, 303]
    assert together[0].headers["location"] == together[1].headers["location"]
    assert await count_enquiries(app) == 2  # one per form, however many clicks


async def test_missing_answers_are_listed_beside_their_fields_and_nothing_is_stored(app):
    async with session(app) as http:
        form = await details_form(http, "missed-bin")
        answer = await http.post(
            "/console/calls/new",
            data={**form, "name": "Robin Example", "email": "not an email", "action": "send"},
        )
    assert answer.status_code == 422
    summary = re.findall(r'<li><a href="#([a-z_-]+)">', answer.text)
    assert summary == ["attr-bin_type", "description", "postcode", "email", "share", "updates"]
    assert "Answer the question “Which bin was missed?”" in answer.text
    assert '<a href="#description">Enter what the caller says</a>' in answer.text
    assert 'id="attr-bin_type-error"' in answer.text
    assert 'aria-describedby="email-error"' in answer.text
    assert 'value="Robin Example"' in answer.text  # what was typed stays
    assert await count_enquiries(app) == 0


async def test_a_form_without_its_csrf_field_is_refused_and_nothing_is_stored(app):
    async with session(app) as http:
        form = missed_bin(await details_form(http, "missed-bin"), action="send")
        del form["csrf"]
        answer = await http.post("/console/calls/new", data=form)
        forged = await http.post("/console/calls/new", data={**form, "csrf": "forged"})
        history = await http.post("/console/history", data={"who": "07700 900123"})
    assert answer.status_code == forged.status_code == history.status_code == 400
    assert "Nothing was changed" in answer.text
    assert await count_enquiries(app) == 0


async def test_a_data_protection_officer_gets_the_not_allowed_page(app):
    async with session(app, StaffRole.data_protection_officer) as http:
        page = await http.get("/console/calls/new")
        preview = await http.get("/console/calls/preview?service=pothole&postcode=OX4+1AA")
        home = await http.get("/console/")
    assert page.status_code == preview.status_code == 403
    assert "You cannot use this page" in page.text
    assert "/console/calls/new" not in home.text  # not offered either


async def test_a_partners_staff_cannot_take_a_call(app):
    async with session(app, StaffRole.agent, organisation="thames-valley-police") as http:
        page = await http.get("/console/calls/new")
        first = await http.get("/console/history")
        sent = await http.post(
            "/console/calls/new",
            data={"csrf": csrf_of(first.text), "service": "pothole", "action": "send"},
        )
    assert page.status_code == sent.status_code == 403
    assert await count_enquiries(app) == 0


async def test_caller_history_finds_the_enquiries_by_phone_and_by_email_and_is_audited(app, client):
    created = await client.post(
        "/v1/enquiries",
        json=enquiry_body(
            channel="phone",
            citizen={
                "name": "Robin Example",
                "phone": "+44 7700 900123",
                "email": "Robin@Example.org",
            },
        ),
    )
    reference = created.json()["reference"]
    async with session(app, name="Sam Agent") as http:
        page = await http.get("/console/history")
        csrf = csrf_of(page.text)
        by_phone = await http.post("/console/history", data={"csrf": csrf, "who": "07700 900123"})
        by_email = await http.post(
            "/console/history", data={"csrf": csrf, "who": "robin@example.org"}
        )
        linked = await http.get("/console/history", params={"email": "ROBIN@example.org"})
        nobody = await http.post("/console/history", data={"csrf": csrf, "who": "01234 567890"})
        empty = await http.post("/console/history", data={"csrf": csrf, "who": ""})
        wrong = await http.post("/console/history", data={"csrf": csrf, "who": "robin at home"})
        start = await http.post(
            "/console/calls/new",
            data={"csrf": csrf, "phone": "07700 900123", "action": "start"},
        )
        chosen = await http.post(
            "/console/calls/new",
            data={
                "csrf": csrf_of(start.text),
                "phone": "07700 900123",
                "service": "missed-bin",
                "action": "choose",
            },
        )
    for found in (by_phone, by_email, linked):
        assert found.status_code == 200
        assert f'href="/console/enquiries/{reference}"' in found.text
        assert "Pothole" in found.text
        assert "1 enquiry" in found.text
        assert "Take a call for this caller" in found.text
    assert "No enquiries found" in nobody.text
    assert empty.status_code == wrong.status_code == 422
    assert '<a href="#who">' in empty.text
    assert "07700 900123" not in str(by_phone.url)  # the search is never in the address
    # Taking a call for this caller carries their number through the service choice.
    assert start.status_code == 200
    assert 'name="phone" value="07700 900123"' in start.text
    assert chosen.status_code == 200
    assert re.search(r'id="phone" name="phone" type="tel" value="07700 900123"', chosen.text)

    async with app.state.iap.engine.connect() as conn:
        entries = (
            (
                await conn.execute(
                    select(audit_table).where(audit_table.c.action == "enquiry.caller_history")
                )
            )
            .mappings()
            .all()
        )
    assert [e["actor"] for e in entries] == ["Sam Agent"] * 4
    assert [e["detail"]["by"] for e in entries] == ["phone", "email", "email", "phone"]
    assert all("07700" not in str(e["subject"]) for e in entries)


async def test_a_partners_history_shows_only_enquiries_with_their_part(app, client):
    created = await client.post(
        "/v1/enquiries",
        json=enquiry_body(citizen={"phone": "07700 900999"}),  # a pothole: the county's
    )
    assert created.status_code == 201
    async with session(app, organisation="thames-valley-police") as http:
        page = await http.get("/console/history")
        found = await http.post(
            "/console/history", data={"csrf": csrf_of(page.text), "who": "07700 900999"}
        )
    assert found.status_code == 200
    assert "No enquiries found" in found.text
    assert "Take a call for this caller" not in found.text


async def test_odd_answers_get_the_page_with_their_errors_never_a_failure(app):
    odd = [
        {"preferred_contact": "email"},  # email chosen, none given
        {"postcode": "banana", "attr-depth_cm": "deep"},
        {"postcode": "SW1A 1AA"},  # out of the area
        {"attr-road_or_pavement": "ceiling", "attr-nonsense": "x"},
        {"language": "not a language tag", "phone": "call me"},
        {"description": "x" * 5000, "address": "y" * 400},
    ]
    async with session(app) as http:
        form = await details_form(http, "pothole")
        answers = [
            await http.post(
                "/console/calls/new",
                data={
                    **form,
                    "attr-road_or_pavement": "road",
                    "description": "A hole",
                    "postcode": "OX4 1AA",
                    "action": "send",
                    **each,
                },
            )
            for each in odd
        ]
    for each, answer in zip(odd, answers, strict=True):
        assert answer.status_code == 422, (each, answer.text)
        assert 'class="error-summary"' in answer.text
    said = [text_of(a.text) for a in answers]
    assert "Enter their email address, or choose another way to contact them" in said[0]
    assert "Roughly how deep is it, in centimetres? The answer must be a number" in said[1]
    assert "is not a UK postcode" in said[1]
    assert "outside the area this gateway serves" in said[2]
    assert await count_enquiries(app) == 0


async def test_odd_addresses_get_a_page(app):
    async with session(app) as http:
        long_words = await http.get("/console/calls/new", params={"q": "bin " * 300})
        no_service = await http.get("/console/calls/new", params={"service": "x" * 500})
        no_enquiry = await http.get("/console/calls/sent/NOT-A-REF")
        too_long = await http.get("/console/calls/sent/" + "A" * 200)
    assert long_words.status_code == no_service.status_code == 200
    assert "Missed bin collection" in long_words.text
    assert no_enquiry.status_code == too_long.status_code == 404
    assert "No such enquiry" in no_enquiry.text
