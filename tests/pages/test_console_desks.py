"""The console's work queues: the triage queue (claim, hand on in one click, close at first
contact), the dead-letter desk (send one again, close one as handled, send many again), stuck
work, and a partner's own queue, each through the services the JSON API calls, on a real
database with the sandbox back-offices delivering; CSRF on every form, and the audit log naming
the person for each act."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from app.core.models import audit_table, dispatch_table, utcnow
from app.sandbox import BackOffice, Behaviour
from app.web import pages
from tests.conftest import enquiry_body
from tests.pages.console import csrf_of, signed_in

VALE = "vale-of-white-horse"
SOUTH = "south-oxfordshire"
COUNTY = "oxfordshire-county"
POLICE = "thames-valley-police"
CITY = "oxford-city"
STRADDLING = "OX14 3AB"  # sector OX14 3: Vale of White Horse 231, South Oxfordshire 46
REFUSED = Behaviour(down=True, fail_status=401)  # the county's token endpoint refuses us


def missed_bin() -> dict[str, Any]:
    return enquiry_body(
        service_code="missed-bin",
        description="Our garden waste bin was missed on Tuesday",
        channel="phone",
        location={"postcode": STRADDLING},
        attributes={"bin_type": "garden"},
        citizen={"name": "Robin Example", "email": "robin@example.org"},
        consent={"share_contact_details": True},
    )


def asb() -> dict[str, Any]:
    """Anti-social behaviour in Oxford: the city council and the police each have a part."""
    return enquiry_body(
        service_code="anti-social-behaviour",
        description="Fireworks thrown at the bus shelter every night",
        location={"postcode": "OX1 1BX"},
        attributes={"ongoing": "yes"},
    )


@asynccontextmanager
async def session(app: Any, role: str, **kw: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser signed in as a new member of staff, closed afterwards."""
    http = await signed_in(app, role, **kw)
    try:
        yield http
    finally:
        await http.aclose()


async def submitted(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    created = await client.post("/v1/enquiries", json=body)
    assert created.status_code == 201, created.text
    return str(created.json()["reference"])


async def post(
    http: httpx.AsyncClient, page: str, action: str, **fields: str | list[str]
) -> httpx.Response:
    """A form on `page` sent as the browser sends it: with the page's CSRF field."""
    shown = await http.get(page)
    assert shown.status_code == 200, shown.text
    return await http.post(action, data={"csrf": csrf_of(shown.text), **fields})


async def followed(http: httpx.AsyncClient, answer: httpx.Response) -> str:
    """The page a 303 leads to (Post/Redirect/Get), its text."""
    assert answer.status_code == 303, answer.text
    page = await http.get(answer.headers["location"])
    assert page.status_code == 200, page.text
    return page.text


def banner(page: str) -> str:
    found = re.search(r'class="notification-banner__heading">([^<]*)<', page)
    assert found, "no banner on the page"
    return html.unescape(found.group(1))


def summary(page: str) -> list[str]:
    """The error summary's entries."""
    block = page.split('class="error-summary__list"', 1)
    assert len(block) == 2, "no error summary on the page"
    return [
        html.unescape(m)
        for m in re.findall(r'<a href="#[^"]*">([^<]*)</a>', block[1].split("</ul>")[0])
    ]


async def audit(engine: Any, action: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(audit_table).where(audit_table.c.action == action))
        return [dict(r) for r in rows.mappings()]


async def dispatch_count(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(dispatch_table)) or 0)


# --- the triage queue ------------------------------------------------------------------------


async def test_a_straddling_missed_bin_is_handed_on_to_the_vale_in_one_click(
    app, client, engine, back_office: BackOffice
):
    reference = await submitted(client, missed_bin())
    async with (
        session(app, "agent", name="Jo Agent") as jo,
        session(app, "agent", name="Sam Second") as sam,
    ):
        queue = await jo.get("/console/triage")
        assert queue.status_code == 200
        page = queue.text
        assert f'href="/console/enquiries/{reference}"' in page
        assert "Vale of White Horse District Council" in page
        assert "South Oxfordshire District Council" in page
        assert "231 of 277 postcodes in sector OX14 3" in page
        assert "46 of 277 postcodes in sector OX14 3" in page
        assert "district of OX14 3AB cannot be decided" in page
        assert "OX14 3AB (known to sector)" in page
        assert "Robin Example" not in page  # the queue shows no citizen's details
        assert 'class="table-wrapper" tabindex="0" role="region"' in page

        claimed = await post(jo, "/console/triage", f"/console/triage/{reference}/claim")
        after = await followed(jo, claimed)
        assert banner(after) == f"You hold {reference}. Nobody else can act on it while you do."
        assert "Jo Agent (you) until" in after

        refused = await post(
            sam, "/console/triage", f"/console/triage/{reference}/hand-on", organisation=SOUTH
        )
        assert refused.status_code == 409
        [problem] = summary(refused.text)
        assert problem.startswith(f"Jo Agent holds {reference} at the triage desk until")
        assert refused.text.count('class="error-summary"') == 1

        handed = await post(
            jo, "/console/triage", f"/console/triage/{reference}/hand-on", organisation=VALE
        )
        after = await followed(jo, handed)
        assert banner(after) == f"{reference} was handed on. It is no longer at the triage desk."
        assert "Nothing is waiting at the triage desk." in after

    await app.state.runtime.dispatcher.run_until_idle()
    assert len(back_office.cases.get(VALE, {})) == 1
    assert SOUTH not in back_office.cases
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    [vale] = [d for d in enquiry["destinations"] if d["organisation_id"] == VALE]
    assert vale["state"] == "delivered"
    assert "chosen from the candidates at the triage desk" in vale["reason"]
    [claim] = await audit(engine, "triage.claimed")
    [hand_on] = await audit(engine, "triage.handed_on")
    assert claim["actor"] == hand_on["actor"] == "Jo Agent"
    assert hand_on["detail"]["organisations"] == [VALE]


async def test_an_agent_closes_an_item_at_first_contact(app, client, engine):
    reference = await submitted(client, missed_bin())
    async with session(app, "agent", name="Jo Agent") as jo:
        empty = await post(jo, "/console/triage", f"/console/triage/{reference}/close")
        assert empty.status_code == 422
        assert summary(empty.text) == [
            "Choose how it was closed",
            "Enter the advice or signposting you gave",
        ]
        assert await audit(engine, "triage.closed") == []
        closed = await post(
            jo,
            "/console/triage",
            f"/console/triage/{reference}/close",
            outcome="first_contact",
            note="Told the caller the round was late; collected tomorrow",
        )
        after = await followed(jo, closed)
        assert banner(after) == f"{reference} was closed at the desk."
        assert "Nothing is waiting at the triage desk." in after
        again = await post(
            jo, "/console/triage", f"/console/triage/{reference}/claim"
        )  # it has gone from the desk
        assert again.status_code == 409
        assert "is not at the triage desk" in summary(again.text)[0]
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "resolved"
    [entry] = await audit(engine, "triage.closed")
    assert (entry["actor"], entry["detail"]) == ("Jo Agent", {"outcome": "first_contact"})


async def test_the_queue_filters_and_pages_as_the_api_does(app, client):
    references = [await submitted(client, missed_bin()) for _ in range(3)]
    async with session(app, "agent") as jo:
        first = await jo.get("/console/triage", params={"order": "newest"})
        shown = re.findall(
            r'desk-item__title" id="[^"]+">\s*<a class="link" href="/console/enquiries/([^"]+)"',
            first.text,
        )
        assert shown == references[::-1]
        none = await jo.get("/console/triage", params={"service_code": "pothole"})
        assert "Nothing is waiting at the triage desk." in none.text
        bad = await jo.get("/console/triage", params={"order": "sideways"})
        assert bad.status_code == 422
        assert summary(bad.text) == ["Choose oldest first or newest first"]
        cursor = await jo.get("/console/triage", params={"cursor": "nonsense"})
        assert cursor.status_code == 422
        assert "That cursor is not one this API gave out." in summary(cursor.text)


async def test_a_form_without_its_csrf_field_changes_nothing(app, client, engine):
    reference = await submitted(client, missed_bin())
    before = await dispatch_count(engine)
    async with session(app, "supervisor") as jo:
        for action, fields in (
            (f"/console/triage/{reference}/claim", {}),
            (f"/console/triage/{reference}/hand-on", {"organisation": VALE}),
            (f"/console/triage/{reference}/close", {"outcome": "first_contact", "note": "x"}),
            (
                "/console/dead-letters/redrive",
                {"organisation": COUNTY, "since": "2026-01-01T00:00"},
            ),
            (f"/console/queue/{reference}/update", {"status": "resolved"}),
        ):
            answer = await jo.post(action, data={**fields, "csrf": "not-ours"})
            assert answer.status_code in (400, 403), action
            if answer.status_code == 400:
                assert "Nothing was changed" in answer.text
            missing = await jo.post(action, data=fields)
            assert missing.status_code in (400, 403), action
    assert await dispatch_count(engine) == before
    [item] = (await client.get("/v1/triage")).json()["items"]
    assert item["claimed_by"] is None
    async with engine.connect() as conn:
        acts = (await conn.scalars(select(audit_table.c.action))).all()
    assert not [a for a in acts if a.startswith(("triage.", "dispatch."))]


# --- the dead-letter desk --------------------------------------------------------------------


async def dead_potholes(app: Any, client: Any, back_office: BackOffice, n: int) -> list[str]:
    """`n` pothole enquiries whose county delivery is dead (a 401 from its token endpoint)."""
    back_office.behaviour[COUNTY] = REFUSED
    references = [
        await submitted(client, enquiry_body(description=f"Pothole {number}"))
        for number in range(n)
    ]
    await app.state.runtime.dispatcher.run_until_idle()
    back_office.behaviour.clear()
    return references


async def test_a_dead_delivery_is_sent_again_from_the_desk_and_delivered(
    app, client, engine, back_office
):
    [reference] = await dead_potholes(app, client, back_office, 1)
    async with session(app, "supervisor", name="Sam Supervisor") as sam:
        desk = await sam.get("/console/dead-letters")
        assert desk.status_code == 200
        assert f'href="/console/enquiries/{reference}"' in desk.text
        assert "Oxfordshire County Council" in desk.text
        assert "401" in desk.text  # the back-office's error, in full: the desk is staff
        [dispatch_id] = re.findall(
            r'action="/console/dead-letters/([0-9a-f-]{36})/redrive"', desk.text
        )
        sent = await post(
            sam, "/console/dead-letters", f"/console/dead-letters/{dispatch_id}/redrive"
        )
        after = await followed(sam, sent)
        assert banner(after) == (
            f"The delivery of {reference} was sent again; its attempts start again."
        )
        assert "No delivery has been given up." in after
        again = await post(
            sam, "/console/dead-letters", f"/console/dead-letters/{dispatch_id}/redrive"
        )
        assert again.status_code == 409
        assert "not dead" in summary(again.text)[0]
        unknown = await post(sam, "/console/dead-letters", "/console/dead-letters/nonsense/redrive")
        assert unknown.status_code == 404
    await app.state.runtime.dispatcher.run_until_idle()
    assert len(back_office.cases[COUNTY]) == 1
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "dispatched"
    [entry] = await audit(engine, "dispatch.redriven")
    assert (entry["actor"], entry["subject"]) == ("Sam Supervisor", dispatch_id)


async def test_many_are_sent_again_by_organisation_and_since_or_ticked(
    app, client, engine, back_office
):
    await dead_potholes(app, client, back_office, 3)
    async with session(app, "supervisor", name="Sam Supervisor") as sam:
        later = (utcnow() + timedelta(hours=1)).astimezone(pages.LONDON)
        none = await post(
            sam,
            "/console/dead-letters",
            "/console/dead-letters/redrive",
            organisation=COUNTY,
            since=later.strftime("%Y-%m-%dT%H:%M"),
        )
        assert banner(await followed(sam, none)) == "0 given-up deliveries sent again."
        bad = await post(
            sam,
            "/console/dead-letters",
            "/console/dead-letters/redrive",
            organisation="nobody",
            since="soon",
        )
        assert bad.status_code == 422
        assert summary(bad.text) == [
            "Choose the organisation whose deliveries to send",
            "Enter since when, as a date and time",
        ]
        desk = (await sam.get("/console/dead-letters")).text
        ids = re.findall(r'name="dispatch" value="([0-9a-f-]{36})"', desk)
        assert len(ids) == 3
        ticked = await post(
            sam, "/console/dead-letters", "/console/dead-letters/redrive-ticked", dispatch=ids[:1]
        )
        assert banner(await followed(sam, ticked)) == "1 given-up delivery sent again."
        nothing = await post(sam, "/console/dead-letters", "/console/dead-letters/redrive-ticked")
        assert nothing.status_code == 422
        assert summary(nothing.text) == ["Tick the deliveries to send again"]
        earlier = (utcnow() - timedelta(hours=1)).astimezone(pages.LONDON)
        many = await post(
            sam,
            "/console/dead-letters",
            "/console/dead-letters/redrive",
            organisation=COUNTY,
            since=earlier.strftime("%Y-%m-%dT%H:%M"),
        )
        after = await followed(sam, many)
        assert banner(after) == "2 given-up deliveries sent again."
        assert "No delivery has been given up." in after
    await app.state.runtime.dispatcher.run_until_idle()
    assert len(back_office.cases[COUNTY]) == 3
    entries = await audit(engine, "dispatch.redriven")
    assert len(entries) == 3
    assert {e["actor"] for e in entries} == {"Sam Supervisor"}


async def test_a_dead_delivery_is_closed_as_handled_by_phone(app, client, engine, back_office):
    [reference] = await dead_potholes(app, client, back_office, 1)
    async with session(app, "supervisor", name="Sam Supervisor") as sam:
        desk = (await sam.get("/console/dead-letters")).text
        [dispatch_id] = re.findall(r'action="/console/dead-letters/([0-9a-f-]{36})/close"', desk)
        blank = await post(
            sam, "/console/dead-letters", f"/console/dead-letters/{dispatch_id}/close", note="  "
        )
        assert blank.status_code == 422
        assert summary(blank.text) == ["Enter how it was seen to, for example who you rang"]
        closed = await post(
            sam,
            "/console/dead-letters",
            f"/console/dead-letters/{dispatch_id}/close",
            note="Rang the highways team; they logged it by hand",
        )
        after = await followed(sam, closed)
        assert banner(after) == (
            f"The delivery of {reference} was closed as handled outside the gateway."
        )
    handled = (await client.get("/v1/dispatches", params={"state": "handled"})).json()["items"]
    assert [d["closure_note"] for d in handled] == [
        "Rang the highways team; they logged it by hand"
    ]
    [entry] = await audit(engine, "dispatch.handled")
    assert entry["actor"] == "Sam Supervisor"


# --- stuck work ------------------------------------------------------------------------------


async def test_stuck_work_lists_what_the_api_lists(app, client, back_office):
    dead = await dead_potholes(app, client, back_office, 2)
    report = (await client.get("/v1/stuck")).json()
    async with session(app, "supervisor") as sam:
        page = await sam.get("/console/stuck")
        assert page.status_code == 200
        for item in report["items"]:
            assert f'href="/console/enquiries/{item["reference"]}"' in page.text
        assert sorted(re.findall(r'href="/console/enquiries/([^"]+)"', page.text)) == sorted(
            i["reference"] for i in report["items"]
        )
        assert set(dead) <= {i["reference"] for i in report["items"]}
        assert f"Given up ({report['counts']['dead']})" in page.text
        ids = re.findall(r'action="/console/dead-letters/([0-9a-f-]{36})/redrive"', page.text)
        assert len(ids) == report["counts"]["dead"]
        sent = await post(
            sam, "/console/stuck", f"/console/dead-letters/{ids[0]}/redrive", back="stuck"
        )
        assert sent.headers["location"].startswith("/console/stuck?")
        after = await followed(sam, sent)
        assert "was sent again" in banner(after)
        assert f"Given up ({report['counts']['dead'] - 1})" in after


# --- a partner's own queue -------------------------------------------------------------------


async def test_police_staff_see_only_police_parts_and_move_them(app, client, engine, back_office):
    ours = await submitted(client, asb())
    pothole = await submitted(client, enquiry_body(description="A pothole, the county's alone"))
    await app.state.runtime.dispatcher.run_until_idle()
    async with session(app, "agent", organisation=POLICE, name="PC Dana Hale") as dana:
        queue = await dana.get("/console/queue")
        assert queue.status_code == 200
        assert '<strong class="tag desk-tag">New</strong>' in queue.text
        assert f'href="/console/enquiries/{ours}"' in queue.text
        assert pothole not in queue.text
        assert queue.text.count('action="/console/queue/') == 1
        assert "Fireworks" not in queue.text  # nothing the citizen wrote
        for elsewhere in ("/console/triage", "/console/dead-letters", "/console/stuck"):
            refused = await dana.get(elsewhere)
            assert refused.status_code == 403, elsewhere
            assert "You cannot use this page" in refused.text
        other = await post(
            dana, "/console/queue", f"/console/queue/{pothole}/update", status="acknowledged"
        )
        assert other.status_code == 404
        acknowledged = await post(
            dana, "/console/queue", f"/console/queue/{ours}/update", status="acknowledged"
        )
        after = await followed(dana, acknowledged)
        assert banner(after) == f"{ours}: your part is acknowledged."
        assert '<strong class="tag desk-tag">Acknowledged</strong>' in after
        enquiry = (await client.get(f"/v1/enquiries/{ours}")).json()
        [police] = [d for d in enquiry["destinations"] if d["organisation_id"] == POLICE]
        assert police["remote_status"] == "acknowledged"
        assert enquiry["status"] in ("dispatched", "acknowledged")
        not_said = await post(
            dana, "/console/queue", f"/console/queue/{ours}/update", status="not_our_responsibility"
        )
        assert not_said.status_code == 422
        resolved = await post(
            dana,
            "/console/queue",
            f"/console/queue/{ours}/update",
            status="resolved",
            description="Patrols added; no further reports",
        )
        after = await followed(dana, resolved)
        assert banner(after) == f"{ours}: your part is resolved."
        assert "Nothing is waiting for Thames Valley Police." in after
    enquiry = (await client.get(f"/v1/enquiries/{ours}")).json()
    [police] = [d for d in enquiry["destinations"] if d["organisation_id"] == POLICE]
    assert police["remote_status"] == "resolved"
    entries = await audit(engine, "part.updated")
    assert [(e["actor"], e["detail"]["said"]) for e in entries] == [
        ("PC Dana Hale", "acknowledged"),
        ("PC Dana Hale", "resolved"),
    ]


async def test_the_gateways_own_staff_have_no_partner_queue(app):
    async with session(app, "agent") as jo:
        answer = await jo.get("/console/queue")
        assert answer.status_code == 403
        home = await jo.get("/console/")
        assert 'href="/console/triage"' in home.text
        assert 'href="/console/queue"' not in home.text


async def test_odd_input_gets_a_page_at_its_status_never_a_500(app, client, back_office):
    reference = await submitted(client, missed_bin())
    async with session(app, "supervisor") as sam:
        for action, fields, status in (
            ("/console/triage/NOT-A-REF/claim", {}, 422),
            ("/console/triage/K7Q-M4X-PB7/claim", {}, 422),  # a wrong check character
            (f"/console/triage/{reference}/hand-on", {"organisation": "nobody"}, 422),
            (f"/console/triage/{reference}/hand-on", {"organisation": "contact-centre"}, 422),
            (f"/console/triage/{reference}/close", {"outcome": "shrug", "note": "x"}, 422),
            (
                "/console/dead-letters/00000000-0000-4000-8000-000000000000/close",
                {"note": "x"},
                404,
            ),
            ("/console/dead-letters/redrive-ticked", {"dispatch": ["nonsense"]}, 404),
            (
                "/console/dead-letters/redrive",
                {"organisation": COUNTY, "since": "2026-13-45T99:00"},
                422,
            ),
        ):
            answer = await post(sam, "/console/triage", action, **fields)
            assert answer.status_code == status, (action, answer.text)
            assert 'class="error-summary"' in answer.text, action
        for page in ("/console/dead-letters?cursor=nonsense", "/console/triage?cursor=%00"):
            answer = await sam.get(page)
            assert answer.status_code == 422, page
            assert 'class="error-summary"' in answer.text, page
    async with session(app, "agent", organisation=POLICE) as dana:
        for page in ("/console/queue?cursor=nonsense",):
            answer = await dana.get(page)
            assert answer.status_code == 422
        odd = await post(
            dana, "/console/queue", "/console/queue/NOT-A-REF/update", status="resolved"
        )
        assert odd.status_code == 422
        word = await post(
            dana, "/console/queue", f"/console/queue/{reference}/update", status="fixed"
        )
        assert word.status_code == 422
        assert summary(word.text) == ["Choose what to do with this part"]
