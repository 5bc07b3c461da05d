"""The conversation's routes: the citizen by token, the submitting client and staff add
information, withdraw and reopen; staff add notes the citizen never sees; what each may do,
what it changes, and bad input refused with nothing half-stored."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.clients.service import Scope
from app.core.models import audit_table, dispatch_table, event_table, utcnow
from app.core.reference import display, new_reference
from app.core.settings import Settings
from app.main import create_app
from app.sandbox import BackOffice
from tests.adapters import factory
from tests.conftest import bearer, enquiry_body, make_key, make_person, started
from tests.conversation.helpers import (
    COUNTY,
    POLICE,
    asb,
    delivered,
    ended_at,
    follow_ups,
    report,
    stored,
    submitted,
)


def say(
    http: httpx.AsyncClient, reference: str, what: str, token: str | None = None, **body: Any
) -> Any:
    params = {"token": token} if token else None
    return http.post(f"/v1/enquiries/{reference}/{what}", json=body, params=params)


async def read(http: httpx.AsyncClient, reference: str, token: str | None = None) -> dict[str, Any]:
    params = {"token": token} if token else None
    answer = await http.get(f"/v1/enquiries/{reference}", params=params)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


# --- information --------------------------------------------------------------------------


async def test_the_citizen_adds_information_by_token_and_it_is_queued_for_the_open_part(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await delivered(client, app)
    added = await say(
        anonymous, reference, "information", token, text="By the bus stop, north side"
    )
    assert added.status_code == 201, added.text
    message = added.json()
    assert message["kind"] == "information"
    assert message["attachments"] == []
    assert {"id", "kind", "created_at"} <= message.keys()
    [queued] = await follow_ups(app)
    assert (queued["organisation_id"], queued["kind"], queued["state"]) == (
        COUNTY,
        "information",
        "pending",
    )
    seen = await read(anonymous, reference, token)
    assert [(m["kind"], m["text"], m["actor"]) for m in seen["messages"]] == [
        ("information", "By the bus stop, north side", None)
    ]
    assert "enquiry.information_added" in [event["type"] for event in seen["timeline"]]


async def test_information_before_delivery_is_kept_and_sent_to_no_one_yet(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, app: FastAPI
) -> None:
    reference, token = await submitted(client)
    added = await say(anonymous, reference, "information", token, text="It is getting deeper")
    assert added.status_code == 201
    assert await stored(app) == {"messages": 1, "attachments": 0, "follow_ups": 0}


async def test_the_submitting_client_speaks_on_its_own_enquiries_only(
    app: FastAPI, anonymous: httpx.AsyncClient
) -> None:
    engine = app.state.iap.engine
    web = {**bearer(await make_key(engine, Scope.enquiries_submit)), "Idempotency-Key": "x"}
    other = bearer(await make_key(engine, Scope.enquiries_submit))
    created = await anonymous.post(
        "/v1/enquiries",
        json=enquiry_body(),
        headers={k: v for k, v in web.items() if k != "Idempotency-Key"},
    )
    reference = created.json()["reference"]
    mine = await anonymous.post(
        f"/v1/enquiries/{reference}/information", json={"text": "more"}, headers=web
    )
    assert mine.status_code == 201, mine.text
    assert mine.json()["actor"] is None
    assert mine.json()["by_citizen"] is True
    theirs = await anonymous.post(
        f"/v1/enquiries/{reference}/information", json={"text": "more"}, headers=other
    )
    assert theirs.status_code == 404
    note = await anonymous.post(f"/v1/enquiries/{reference}/notes", json={"text": "n"}, headers=web)
    assert note.status_code == 403


async def test_a_wrong_token_and_an_unknown_reference_are_answered_alike(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, app: FastAPI
) -> None:
    reference, _ = await submitted(client)
    wrong = await say(anonymous, reference, "information", "not-the-token", text="x")
    unknown = await say(
        anonymous, display(new_reference()), "information", "not-the-token", text="x"
    )
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.json()["type"] == unknown.json()["type"]
    assert (
        await anonymous.post(f"/v1/enquiries/{reference}/information", json={"text": "x"})
    ).status_code == 401
    assert await stored(app) == {"messages": 0, "attachments": 0, "follow_ups": 0}


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{}", "application/json", 422),
        (b'{"text": ""}', "application/json", 422),
        (b'{"text": "   "}', "application/json", 422),
        (b'{"text": 5}', "application/json", 422),
        (b'{"text": "a", "extra": 1}', "application/json", 422),
        (b'{"text": "a\\u0000b"}', "application/json", 422),
        (b'{"text": ' + b'"' + b"a" * 5001 + b'"}', "application/json", 422),
        (b"{not json", "application/json", 400),
        (b"[]", "application/json", 422),
        (b"text=hello", "application/x-www-form-urlencoded", 415),
        (b"hello", "text/plain", 415),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x", 422),
        (b"--x--\r\n", "multipart/form-data; boundary=x", 422),
        (
            b'--x\r\nContent-Disposition: form-data; name="colour"\r\n\r\nred\r\n--x--\r\n',
            "multipart/form-data; boundary=x",
            422,
        ),
        (
            b'--x\r\nContent-Disposition: form-data; name="text"; filename="a.txt"\r\n\r\n'
            b"hi\r\n--x--\r\n",
            "multipart/form-data; boundary=x",
            422,
        ),
        (
            b'--x\r\nContent-Disposition: form-data; name="files"\r\n\r\nnot a file\r\n--x--\r\n',
            "multipart/form-data; boundary=x",
            422,
        ),
    ],
)
async def test_bad_information_is_a_problem_and_nothing_is_stored(
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    app: FastAPI,
    body: bytes,
    content_type: str,
    status: int,
) -> None:
    reference, token = await delivered(client, app)
    answer = await anonymous.post(
        f"/v1/enquiries/{reference}/information",
        params={"token": token},
        content=body,
        headers={"content-type": content_type},
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert await stored(app) == {"messages": 0, "attachments": 0, "follow_ups": 0}


async def test_an_invalid_reference_is_a_problem(anonymous: httpx.AsyncClient) -> None:
    answer = await say(anonymous, "not a reference!", "withdraw", "token", reason="x")
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"


# --- notes --------------------------------------------------------------------------------


async def test_staff_notes_are_never_forwarded_nor_shown_to_the_citizen(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await delivered(client, app)
    agent = bearer(await make_person(app, "agent", name="Alex Agent"))
    noted = await anonymous.post(
        f"/v1/enquiries/{reference}/notes", json={"text": "Caller was upset"}, headers=agent
    )
    assert noted.status_code == 201, noted.text
    assert (noted.json()["kind"], noted.json()["actor"]) == ("note", "Alex Agent")
    assert await follow_ups(app) == []
    assert (await read(anonymous, reference, token))["messages"] == []
    staff_view = await anonymous.get(f"/v1/enquiries/{reference}", headers=agent)
    [note] = staff_view.json()["messages"]
    assert (note["text"], note["actor"]) == ("Caller was upset", "Alex Agent")
    async with app.state.iap.engine.connect() as conn:
        actions = (await conn.scalars(select(audit_table.c.action))).all()
    assert "enquiry.note_added" in actions
    by_token = await anonymous.post(
        f"/v1/enquiries/{reference}/notes", params={"token": token}, json={"text": "x"}
    )
    assert by_token.status_code == 401


async def test_a_partners_staff_speak_only_on_enquiries_their_organisation_holds(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    pothole, _ = await delivered(client, app)
    nuisance, _ = await delivered(client, app, asb())
    officer = bearer(await make_person(app, "agent", organisation=POLICE, name="PC Hale"))
    refused = await anonymous.post(
        f"/v1/enquiries/{pothole}/notes", json={"text": "x"}, headers=officer
    )
    assert refused.status_code == 404
    allowed = await anonymous.post(
        f"/v1/enquiries/{nuisance}/notes", json={"text": "Seen on patrol"}, headers=officer
    )
    assert allowed.status_code == 201


# --- withdrawal ---------------------------------------------------------------------------


async def test_withdrawing_before_delivery_calls_the_delivery_off(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await submitted(client)
    withdrawn = await say(anonymous, reference, "withdraw", token, reason="Fixed already")
    assert withdrawn.status_code == 201, withdrawn.text
    await app.state.runtime.dispatcher.run_until_idle()
    assert back_office.cases == {}
    seen = await read(client, reference)
    assert seen["status"] == "withdrawn"
    [part] = seen["destinations"]
    assert part["state"] == "cancelled"
    assert await follow_ups(app) == []
    again = await say(anonymous, reference, "withdraw", token, reason="again")
    assert again.status_code == 409
    more = await say(anonymous, reference, "information", token, text="more")
    assert more.status_code == 409


async def test_a_withdrawn_enquiry_sent_again_is_cancelled_by_the_dispatcher_not_delivered(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await submitted(client)
    assert (await say(anonymous, reference, "withdraw", token)).status_code == 201
    async with app.state.iap.engine.begin() as conn:
        # As if its delivery had been claimed before the withdrawal and came due again.
        await conn.execute(dispatch_table.update().values(state="pending", closure=None))
    await app.state.runtime.dispatcher.run_until_idle()
    assert back_office.cases == {}
    async with app.state.iap.engine.connect() as conn:
        state = await conn.scalar(select(dispatch_table.c.state))
        details = (await conn.scalars(select(event_table.c.detail))).all()
    assert state == "cancelled"
    assert any("withdrew" in (detail or "") for detail in details)


async def test_withdrawing_after_delivery_tells_each_organisation_holding_it(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, back_office: BackOffice
) -> None:
    reference, token = await delivered(client, app, asb())
    withdrawn = await say(anonymous, reference, "withdraw", token, reason="They moved away")
    assert withdrawn.status_code == 201
    assert {(f["organisation_id"], f["kind"]) for f in await follow_ups(app)} == {
        ("cherwell", "withdrawal"),
        (POLICE, "withdrawal"),
    }
    seen = await read(client, reference)
    assert seen["status"] == "withdrawn"
    assert {p["organisation_id"]: len(p["follow_ups"]) for p in seen["destinations"]} == {
        "cherwell": 1,
        POLICE: 1,
    }


async def test_a_resolved_enquiry_cannot_be_withdrawn(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await delivered(client, app)
    await report(app, reference, COUNTY, "resolved")
    assert (await say(anonymous, reference, "withdraw", token)).status_code == 409


# --- reopening ----------------------------------------------------------------------------


async def test_the_citizen_reopens_a_resolved_enquiry_and_the_part_that_finished_is_told(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await delivered(client, app)
    early = await say(anonymous, reference, "reopen", token, reason="Not fixed")
    assert early.status_code == 409  # it is not over yet
    await report(app, reference, COUNTY, "resolved")
    reopened = await say(anonymous, reference, "reopen", token, reason="Still there")
    assert reopened.status_code == 201, reopened.text
    [queued] = await follow_ups(app)
    assert (queued["organisation_id"], queued["kind"]) == (COUNTY, "reopening")
    seen = await read(anonymous, reference, token)
    assert (seen["status"], seen["closed_at"]) == ("reopened", None)
    assert [m["kind"] for m in seen["messages"]] == ["reopening"]


async def test_the_citizen_may_reopen_only_within_the_window_and_staff_at_any_time(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await delivered(client, app)
    await report(app, reference, COUNTY, "resolved")
    days = app.state.iap.settings.follow_ups.reopen_days
    await ended_at(app, reference, utcnow() - timedelta(days=days + 1))
    late = await say(anonymous, reference, "reopen", token, reason="Back again")
    assert late.status_code == 409
    agent = bearer(await make_person(app, "agent", name="Alex Agent"))
    by_agent = await anonymous.post(
        f"/v1/enquiries/{reference}/reopen", json={"reason": "Caller says not fixed"}, headers=agent
    )
    assert by_agent.status_code == 201, by_agent.text
    assert by_agent.json()["actor"] == "Alex Agent"
    async with app.state.iap.engine.connect() as conn:
        actions = (await conn.scalars(select(audit_table.c.action))).all()
    assert "enquiry.reopened" in actions


# --- files --------------------------------------------------------------------------------


def photo_form(count: int = 1, content: bytes | None = None) -> list[tuple[str, Any]]:
    body = content if content is not None else factory.photo(exif=True)
    return [("files", (f"IMG_{n}.jpg", body, "image/jpeg")) for n in range(count)]


async def test_a_photo_is_kept_and_listed_under_our_name(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, token = await delivered(client, app)
    added = await anonymous.post(
        f"/v1/enquiries/{reference}/information",
        params={"token": token},
        data={"text": "Photo attached"},
        files=photo_form(),
    )
    assert added.status_code == 201, added.text
    [photo] = added.json()["attachments"]
    assert (photo["content_type"], photo["filename"]) == ("image/jpeg", "photo-1.jpg")
    seen = await read(anonymous, reference, token)
    assert [a["id"] for a in seen["attachments"]] == [photo["id"]]
    assert [a["id"] for a in seen["messages"][0]["attachments"]] == [photo["id"]]
    [queued] = await follow_ups(app)
    assert queued["kind"] == "information"


@pytest.mark.parametrize(
    ("files", "status"),
    [
        pytest.param(photo_form(6), 413, id="too-many-files"),
        pytest.param(photo_form(1, b"just some text, not a photo"), 415, id="not-a-photo"),
        pytest.param(photo_form(1, b"\xff\xd8\xff\xe0 cut short"), 422, id="a-broken-photo"),
    ],
)
async def test_bad_files_are_refused_and_nothing_is_stored(
    app: FastAPI,
    client: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    files: list[tuple[str, Any]],
    status: int,
) -> None:
    reference, token = await delivered(client, app)
    answer = await anonymous.post(
        f"/v1/enquiries/{reference}/information", params={"token": token}, files=files
    )
    assert answer.status_code == status, answer.text
    assert await stored(app) == {"messages": 0, "attachments": 0, "follow_ups": 0}


async def test_an_enquiry_keeps_at_most_max_per_enquiry_files(
    settings: Settings, tmp_path: Path
) -> None:
    limits = settings.attachments.model_copy(update={"max_per_enquiry": 1})
    application = create_app(
        settings.model_copy(update={"attachments": limits}), run_dispatcher=False
    )
    async with started(application, Scope.admin) as http:
        reference, token = await submitted(http)
        address = f"/v1/enquiries/{reference}/information"
        first = await http.post(address, params={"token": token}, files=photo_form())
        assert first.status_code == 201, first.text
        second = await http.post(address, params={"token": token}, files=photo_form())
        assert second.status_code == 409, second.text
        assert await stored(application) == {"messages": 1, "attachments": 1, "follow_ups": 0}
    kept = [p for p in limits.directory.rglob("*") if p.is_file()]
    assert len(kept) == 1  # the refused file was taken out of the store again


async def test_a_partners_staff_see_their_own_notes_only(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    reference, _ = await delivered(client, app, asb())
    agent = bearer(await make_person(app, "agent", name="Alex Agent"))
    officer = bearer(await make_person(app, "agent", organisation=POLICE, name="PC Hale"))
    for who, text in ((agent, "Contact centre note"), (officer, "Police note")):
        noted = await anonymous.post(
            f"/v1/enquiries/{reference}/notes", json={"text": text}, headers=who
        )
        assert noted.status_code == 201, noted.text
    police_view = (await anonymous.get(f"/v1/enquiries/{reference}", headers=officer)).json()
    assert [m["text"] for m in police_view["messages"]] == ["Police note"]
    centre_view = (await anonymous.get(f"/v1/enquiries/{reference}", headers=agent)).json()
    assert [m["text"] for m in centre_view["messages"]] == ["Contact centre note", "Police note"]
