"""Whatever a client sends, the API answers with a success or a problem document, never a 5xx,
and the intake stores a whole enquiry (its dispatches, first event and idempotent answer) or
nothing at all.

Hypothesis drives the real app (httpx over ASGI, the test database). The app and its client are
made once per test and shared by its examples, so each example compares the stored rows before
and after its own request. How many examples, and whether they are the same every run, comes
from the profile in tests/conftest.py.
"""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from standardwebhooks import Webhook

from app.api.problems import PROBLEM_JSON, PROBLEM_TYPES
from app.core.models import (
    attachment_table,
    audit_table,
    dispatch_table,
    enquiry_table,
    event_table,
    follow_up_table,
    idempotency_table,
    message_table,
    status_update_table,
)
from app.open311.mapping import SINGLE
from tests import strategies as fuzz
from tests.attachments.images import png_bomb
from tests.conftest import bearer, enquiry_body, make_person
from tests.updates.test_inbound import (
    CITY_KEY,
    COUNTY_SECRET,
    delivered_enquiry,
    delivered_to_the_city,
)


class Stored(NamedTuple):
    enquiries: int
    dispatches: int
    events: int
    answers: int  # idempotency records completed with their answer
    claims: int  # idempotency records still in flight


def _count(table: Any, *where: Any) -> Any:
    return select(func.count()).select_from(table).where(*where).scalar_subquery()


_STATE = idempotency_table.c.state
_COUNTS = select(
    _count(enquiry_table),
    _count(dispatch_table),
    _count(event_table),
    _count(idempotency_table, _STATE == "completed"),
    _count(idempotency_table, _STATE == "in_flight"),
)


async def stored(engine: AsyncEngine) -> Stored:
    async with engine.connect() as conn:
        return Stored(*(await conn.execute(_COUNTS)).one())


JSON = {"content-type": "application/json"}


def assert_problem(response: httpx.Response) -> None:
    """An RFC 9457 document whose status is the response's, of a type this API documents."""
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    problem = response.json()
    assert problem["status"] == response.status_code, problem
    assert problem["type"].removeprefix("/problems/") in PROBLEM_TYPES, problem
    assert isinstance(problem["title"], str), problem
    assert problem["title"], problem


def assert_answered(response: httpx.Response) -> None:
    # Shown by --hypothesis-show-statistics: how often each answer was reached.
    if currently_in_test_context():
        event(f"{response.status_code} {response.headers.get('content-type')}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_problem(response)


async def submit(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    content: bytes,
    *,
    content_type: str | None = "application/json",
    key: str | None = None,
    query: str = "",
) -> httpx.Response:
    """POST a body and check what was stored: a whole enquiry after a 201, nothing otherwise,
    and never an idempotency claim left behind."""
    # Header values as the bytes a client sends (HTTP reads anything past ASCII as Latin-1).
    headers = {}
    if content_type is not None:
        headers[b"content-type"] = content_type.encode("latin-1")
    if key is not None:
        headers[b"idempotency-key"] = key.encode("latin-1")
    before = await stored(engine)
    response = await client.post(f"/v1/enquiries?{query}", content=content, headers=headers)
    after = await stored(engine)
    assert_answered(response)
    assert after.claims == 0
    if response.status_code != 201 or response.headers.get("idempotent-replayed") == "true":
        assert after == before, response.text
        return response
    created = response.json()
    assert after == before._replace(
        enquiries=before.enquiries + 1,
        dispatches=before.dispatches + len(created["destinations"]),
        events=before.events + 1,
        answers=before.answers + (key is not None),
    )
    read = await client.get(response.headers["location"])
    assert read.status_code == 200, read.text
    assert read.json()["reference"] == created["reference"]
    assert read.json()["service_code"] == created["service_code"]
    return response


# --- POST /v1/enquiries ----------------------------------------------------------------------

documents = st.one_of(fuzz.nearly_valid_enquiries(), fuzz.valid_enquiries(), fuzz.json_documents)
mostly_json = st.just("application/json") | fuzz.content_types


@given(
    document=documents,
    raw_literal=st.none() | st.integers(0, len(fuzz.RAW_LITERALS) - 1),
    ensure_ascii=st.booleans(),
    content_type=mostly_json,
    key=fuzz.idempotency_keys,
    query=st.none() | fuzz.query_words,
)
async def test_any_json_document_is_answered_and_stored_whole_or_not_at_all(
    client, engine, document, raw_literal, ensure_ascii, content_type, key, query
):
    if raw_literal is not None:
        document = fuzz.with_raw_literal(document, raw_literal)
    content = fuzz.encode(document, ensure_ascii=ensure_ascii)
    await submit(
        client, engine, content, content_type=content_type, key=key, query=f"q={query or ''}"
    )


bodies = st.one_of(
    st.binary(max_size=2000),
    st.builds(
        fuzz.deeply_nested, st.sampled_from([64, 1000, 20_000]), st.sampled_from(["[", '{"a":'])
    ),
    st.sampled_from([b"", b"null", b"[]", b'"x"', b"{}", b"\xef\xbb\xbf{}", b"x" * 70_000]),
)


@given(body=bodies, content_type=mostly_json)
async def test_any_bytes_are_answered_and_store_nothing(client, engine, body, content_type):
    response = await submit(client, engine, body, content_type=content_type)
    assert response.status_code != 201


@pytest.mark.parametrize("service_code", sorted(fuzz.CATALOGUE.services))
@settings(max_examples=8)
@given(data=st.data())
async def test_valid_enquiries_for_every_service_are_accepted(client, engine, service_code, data):
    enquiry = data.draw(fuzz.valid_enquiries(service_code))
    response = await submit(client, engine, fuzz.encode(enquiry))
    assert response.status_code == 201, response.text


@given(enquiry=fuzz.nearly_valid_enquiries(), key=fuzz.idempotency_keys)
async def test_an_enquiry_changed_anywhere_is_accepted_whole_or_refused(
    client, engine, enquiry, key
):
    await submit(client, engine, fuzz.encode(enquiry), key=key)


@given(enquiry=fuzz.valid_enquiries() | fuzz.nearly_valid_enquiries(), key=fuzz.header_values)
async def test_a_repeat_with_any_idempotency_key_replays_the_first_answer(
    client, engine, enquiry, key
):
    content = fuzz.encode(enquiry)
    first = await submit(client, engine, content, key=key)
    again = await submit(client, engine, content, key=key)
    assert again.status_code == first.status_code
    if first.status_code == 201:
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["reference"] == first.json()["reference"]


# --- GET /v1/enquiries/{reference} and GET /v1/enquiries ------------------------------------


@pytest.fixture
async def created(client) -> dict[str, Any]:
    response = await client.post("/v1/enquiries", json=enquiry_body())
    return response.json()


@given(
    reference=fuzz.reference_texts | st.sampled_from(["MINE", "mine", "M I N E"]),
    token=fuzz.tokens | st.just("MINE"),
    with_key=st.booleans(),
)
async def test_any_reference_and_token_is_answered(
    client, anonymous, created, reference, token, with_key
):
    ours = created["reference"]
    if reference.upper().replace(" ", "") == "MINE":
        reference = reference.replace("MINE", ours).replace("mine", ours.lower())
        reference = reference.replace("M I N E", ours.replace("-", " "))
    path = "/v1/enquiries/" + _escaped(reference)
    if token is not None:
        path += "?token=" + _escaped(created["access_token"] if token == "MINE" else token)
    response = await (client if with_key else anonymous).get(path)
    assert_answered(response)
    if response.status_code == 200:
        assert response.json()["reference"] == ours


def _escaped(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@given(query=fuzz.list_query_strings())
async def test_any_list_query_is_answered(client, created, query):
    response = await client.get(f"/v1/enquiries?{query}")
    assert_answered(response)
    if response.status_code == 200:
        assert set(response.json()) == {"items", "next_cursor"}


@given(postcode=st.from_regex(r"[A-Z]{1,2}[0-9][0-9A-Z]? ?[0-9][A-Z]{2}", fullmatch=True))
async def test_any_postcode_is_routed_or_refused_clearly(client, engine, postcode):
    response = await submit(
        client, engine, fuzz.encode(enquiry_body(location={"postcode": postcode}))
    )
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        assert response.json()["type"] == "/problems/out-of-area"


@pytest.mark.parametrize("literal", [b"1e999", b"NaN", b"-Infinity"])
async def test_non_finite_numbers_are_refused(client, engine, literal):
    body = (
        b'{"service_code": "pothole", "description": "x", "channel": "web", '
        b'"location": {"postcode": "OX4 1AA"}, '
        b'"attributes": {"road_or_pavement": "road", "depth_cm": ' + literal + b"}}"
    )
    response = await submit(client, engine, body)
    assert response.status_code == 422, response.text


@given(subject=fuzz.subjects, erase=st.booleans())
async def test_any_subject_access_or_erasure_request_is_answered(client, created, subject, erase):
    path = "/v1/privacy/erasure" if erase else "/v1/privacy/subject-access"
    assert_answered(await client.post(path, content=fuzz.encode(subject), headers=JSON))


@given(query=st.fixed_dictionaries({}, optional=fuzz.AUDIT_PARAMETERS))
async def test_any_audit_query_is_answered(client, query):
    encoded = "&".join(f"{name}={_escaped(value)}" for name, value in query.items())
    assert_answered(await client.get(f"/v1/audit?{encoded}"))


@given(request=fuzz.webhook_requests, subscription=fuzz.webhook_ids)
async def test_any_webhook_request_is_answered(client, request, subscription):
    created = await client.post("/v1/webhooks", content=fuzz.encode(request), headers=JSON)
    assert_answered(created)
    assert_answered(await client.get(f"/v1/webhooks/{_escaped(subscription)}"))
    assert_answered(await client.delete(f"/v1/webhooks/{_escaped(subscription)}"))


@given(
    patch=fuzz.webhook_patches,
    rotation=fuzz.rotations,
    real=st.booleans(),
    subscription=fuzz.webhook_ids,
)
async def test_any_webhook_change_or_rotation_is_answered(
    client, patch, rotation, real, subscription
):
    if real:
        made = await client.post(
            "/v1/webhooks", json={"url": "https://127.0.0.1/hook", "events": ["*"]}
        )
        subscription = made.json()["id"]
    path = f"/v1/webhooks/{_escaped(subscription)}"
    assert_answered(await client.patch(path, content=fuzz.encode(patch), headers=JSON))
    rotated = await client.post(
        f"{path}/rotate-secret", content=fuzz.encode(rotation), headers=JSON
    )
    assert_answered(rotated)
    assert_answered(await client.post(f"{path}/test", content=fuzz.encode(rotation), headers=JSON))


# --- status updates pushed by organisations --------------------------------------------------


async def _updates_and_events(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(_count(status_update_table), _count(event_table)))).one()
    return row[0], row[1]


async def _pushed(engine: AsyncEngine, send: Any) -> None:
    """Send a push; it is answered, and a refused one leaves no update and no event behind."""
    before = await _updates_and_events(engine)
    response = await send()
    assert_answered(response)
    after = await _updates_and_events(engine)
    if response.status_code != 200 or response.json()["outcome"] != "recorded":
        assert after == before, response.text
    else:
        assert after[0] == before[0] + 1


@pytest.fixture
async def county_case(client, app) -> str:
    _, remote = await delivered_enquiry(client, app)
    return str(remote["oxfordshire-county"])


@pytest.fixture
async def city_case(client, app) -> str:
    _, case = await delivered_to_the_city(client, app)
    return str(case)


@given(update=fuzz.inbound_updates)
async def test_any_correctly_signed_push_is_answered_and_recorded_whole_or_not(
    client, engine, county_case, update
):
    raw = fuzz.encode(_with_case(update, county_case))
    message_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC)
    headers = {
        **JSON,
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(COUNTY_SECRET).sign(message_id, at, raw.decode()),
    }
    await _pushed(
        engine,
        lambda: client.post("/v1/inbound/oxfordshire-county", content=raw, headers=headers),
    )


@given(form=fuzz.open311_updates())
async def test_any_open311_push_is_answered_and_recorded_whole_or_not(
    client, engine, city_case, form
):
    fields = {k: CITY_KEY if v == "KEY" else v for k, v in _with_case(form, city_case).items()}
    body = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in fields.items()})
    headers = {"content-type": "application/x-www-form-urlencoded"}
    await _pushed(
        engine,
        lambda: client.post(
            "/v1/inbound/oxford-city/servicerequestupdates", content=body, headers=headers
        ),
    )


def _with_case(document: Any, case: str) -> Any:
    if isinstance(document, dict):
        return {k: case if v == fuzz.CASE else v for k, v in document.items()}
    return document


# --- the triage desk -------------------------------------------------------------------------


@pytest.fixture
async def at_triage(client) -> str:
    """A missed bin in sector OX14 3, which the Vale and South Oxfordshire share."""
    body = enquiry_body(
        service_code="missed-bin",
        location={"postcode": "OX14 3AB"},
        attributes={"bin_type": "garden"},
    )
    return str((await client.post("/v1/enquiries", json=body)).json()["reference"])


async def _acts_stored(engine: AsyncEngine) -> tuple[int, int, int]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(_count(dispatch_table), _count(event_table), _count(audit_table))
            )
        ).one()
    return row[0], row[1], row[2]


_TRIAGE_BODIES = st.one_of(
    fuzz.json_documents,
    st.fixed_dictionaries(
        {
            "organisations": st.lists(
                st.sampled_from(["vale-of-white-horse", "contact-centre", "nobody"])
                | fuzz.odd_text,
                max_size=7,
            ),
            "reason": fuzz.odd_text,
        }
    ),
    st.fixed_dictionaries({"location": fuzz.locations | fuzz.json_documents}),
    st.fixed_dictionaries(
        {
            "outcome": st.sampled_from(["first_contact", "outside_remit", "handed_on"])
            | fuzz.odd_text,
            "note": fuzz.odd_text,
        }
    ),
)


@given(
    act=st.sampled_from(["hand-on", "relocate", "close"]),
    body=_TRIAGE_BODIES,
    reference=st.just("MINE") | fuzz.reference_texts,
)
async def test_any_triage_act_is_answered_and_stored_whole_or_not(
    client, engine, at_triage, act, body, reference
):
    target = at_triage if reference == "MINE" else reference
    before = await _acts_stored(engine)
    response = await client.post(
        f"/v1/enquiries/{_escaped(target)}/{act}", content=fuzz.encode(body), headers=JSON
    )
    assert_answered(response)
    if response.status_code != 200:
        assert await _acts_stored(engine) == before, response.text


@given(query=fuzz.list_query_strings(), order=st.sampled_from(["oldest", "newest", "target"]))
async def test_any_triage_queue_query_is_answered(client, at_triage, query, order):
    response = await client.get(f"/v1/triage?{query}&order={order}")
    assert_answered(response)
    if response.status_code == 200:
        assert set(response.json()) == {"items", "next_cursor"}


@given(reference=st.just("MINE") | fuzz.reference_texts, release=st.booleans())
async def test_any_triage_claim_is_answered(client, at_triage, reference, release):
    path = f"/v1/triage/{_escaped(at_triage if reference == 'MINE' else reference)}/claim"
    response = await (client.delete(path) if release else client.post(path))
    assert_answered(response)


# --- partners' staff moving their part, and a caller's history --------------------------------

_PART_STATUSES = st.sampled_from(
    ["acknowledged", "Closed", "fixed", "routed", "not_our_responsibility", "sorted", " "]
)
part_updates = st.one_of(
    fuzz.json_documents,
    st.fixed_dictionaries(
        {},
        optional={
            "status": _PART_STATUSES | fuzz.odd_text | fuzz.json_scalars,
            "description": fuzz.odd_text | st.text(max_size=2100) | fuzz.json_scalars,
            "other": fuzz.json_scalars,
        },
    ),
)
_PART_ORGANISATIONS = st.sampled_from(
    ["thames-valley-police", "oxford-city", "contact-centre", "nobody"]
) | st.text(min_size=1, max_size=70)


@pytest.fixture
async def police_case(client, app) -> str:
    body = enquiry_body(service_code="non-emergency-crime", attributes={})
    reference = (await client.post("/v1/enquiries", json=body)).json()["reference"]
    await app.state.runtime.dispatcher.run_until_idle()
    return str(reference)


@given(
    update=part_updates,
    organisation=_PART_ORGANISATIONS,
    reference=fuzz.reference_texts | st.just("MINE"),
    as_officer=st.booleans(),
)
async def test_any_part_update_is_answered_and_recorded_whole_or_not(
    client, anonymous, app, engine, police_case, update, organisation, reference, as_officer
):
    reference = police_case if reference == "MINE" else reference
    headers = {**JSON}
    if as_officer:
        token = await make_person(app, "agent", organisation="thames-valley-police")
        headers.update(bearer(token))
    http = anonymous if as_officer else client
    before = await _updates_and_events(engine)
    response = await http.post(
        f"/v1/enquiries/{_escaped(reference)}/parts/{_escaped(organisation)}/updates",
        content=fuzz.encode(update),
        headers=headers,
    )
    assert_answered(response)
    after = await _updates_and_events(engine)
    if response.status_code == 200:
        assert after[0] == before[0] + 1
        assert response.json()["part"]["organisation_id"] == "thames-valley-police"
    else:
        assert after == before, response.text


_HISTORY_PARAMETERS: dict[str, st.SearchStrategy[str]] = {
    "phone": st.from_regex(r"\+?[0-9 ()-]{7,20}", fullmatch=True) | st.text(max_size=25),
    "email": st.emails() | st.text(max_size=30),
    "limit": st.sampled_from(["1", "0", "201", "x"]),
    "cursor": fuzz.cursors,
    "organisation_id": st.sampled_from(["thames-valley-police", "oxford-city"]),
}


@given(query=st.fixed_dictionaries({}, optional=_HISTORY_PARAMETERS), as_officer=st.booleans())
async def test_any_caller_history_search_is_answered(client, anonymous, app, query, as_officer):
    encoded = "&".join(f"{name}={_escaped(value)}" for name, value in query.items())
    if as_officer:
        token = await make_person(app, "agent", organisation="thames-valley-police")
        response = await anonymous.get(f"/v1/enquiries?{encoded}", headers=bearer(token))
    else:
        response = await client.get(f"/v1/enquiries?{encoded}")
    assert_answered(response)
    if response.status_code == 200:
        assert set(response.json()) == {"items", "next_cursor"}


# --- the dead-letter desk and stuck work (docs/casework.md) ----------------------------------

DESK_PARAMETERS = {
    "state": st.sampled_from(["dead", "pending", "handled", "nope"]) | fuzz.odd_text,
    "organisation_id": fuzz.LIST_PARAMETERS["organisation_id"],
    "since": fuzz.moments | st.text(max_size=30),
    "until": fuzz.moments | st.text(max_size=30),
    "subscription_id": fuzz.webhook_ids,
    "cursor": fuzz.cursors,
    "limit": fuzz.LIST_PARAMETERS["limit"],
}
redrive_requests = st.one_of(
    fuzz.json_documents,
    st.fixed_dictionaries(
        {},
        optional={
            "organisation": st.sampled_from(sorted(fuzz.CATALOGUE.organisations)) | fuzz.odd_text,
            "since": fuzz.moments | fuzz.json_scalars,
            "note": fuzz.odd_text | fuzz.json_scalars,
        },
    ),
)


@given(query=st.fixed_dictionaries({}, optional=DESK_PARAMETERS))
async def test_any_desk_query_is_answered(client, created, query):
    encoded = "&".join(f"{name}={_escaped(value)}" for name, value in query.items())
    for path in ("/v1/dispatches", "/v1/webhook-deliveries", "/v1/stuck"):
        response = await client.get(f"{path}?{encoded}")
        assert_answered(response)


@given(request=redrive_requests, target=fuzz.webhook_ids)
async def test_any_redrive_or_close_request_is_answered_and_changes_nothing_it_refuses(
    client, engine, created, request, target
):
    before = await stored(engine)
    body = fuzz.encode(request)
    escaped = _escaped(target)
    for path in (
        "/v1/dispatches/redrive",
        f"/v1/dispatches/{escaped}/redrive",
        f"/v1/dispatches/{escaped}/close",
        f"/v1/webhook-deliveries/{escaped}/redrive",
        f"/v1/webhooks/{escaped}/enable",
    ):
        response = await client.post(path, content=body, headers=JSON)
        assert_answered(response)
        if path == "/v1/dispatches/redrive" and response.status_code == 200:
            assert response.json() == {"count": 0, "ids": []}  # nothing is dead here
    assert await stored(engine) == before


# --- the conversation after submission: information, withdrawal, reopening, notes, files ------

_SAID = st.one_of(
    fuzz.json_documents,
    st.fixed_dictionaries(
        {},
        optional={
            "text": fuzz.odd_text | st.text(max_size=6000) | fuzz.json_scalars,
            "reason": fuzz.odd_text | st.text(max_size=3000) | fuzz.json_scalars,
        },
    ),
)


async def _conversation_stored(engine: AsyncEngine) -> tuple[int, int, int, int]:
    async with engine.connect() as conn:
        counts = select(
            _count(message_table),
            _count(attachment_table),
            _count(follow_up_table),
            _count(event_table),
        )
        messages, attachments, follow_ups, events = (await conn.execute(counts)).one()
        return messages, attachments, follow_ups, events


@pytest.fixture
async def spoken_to(client, app) -> tuple[str, str]:
    """(reference, token) of a delivered pothole: what is said of it is sent to the county."""
    created = (await client.post("/v1/enquiries", json=enquiry_body())).json()
    await app.state.runtime.dispatcher.run_until_idle()
    return created["reference"], created["access_token"]


@given(
    act=st.sampled_from(["information", "withdraw", "reopen", "notes"]),
    body=_SAID,
    reference=st.just("MINE") | fuzz.reference_texts,
    token=st.none() | st.just("MINE") | fuzz.tokens,
)
async def test_any_conversation_act_is_answered_and_stored_whole_or_not(
    client, anonymous, engine, spoken_to, act, body, reference, token
):
    ours, our_token = spoken_to
    path = f"/v1/enquiries/{_escaped(ours if reference == 'MINE' else reference)}/{act}"
    if token is not None:
        path += "?token=" + _escaped(our_token if token == "MINE" else token)
    before = await _conversation_stored(engine)
    http = anonymous if token is not None else client
    response = await http.post(path, content=fuzz.encode(body), headers=JSON)
    assert_answered(response)
    if response.status_code != 201:
        assert await _conversation_stored(engine) == before, response.text


@functools.cache
def _bomb() -> bytes:
    return png_bomb(12_000, 12_000)  # 144 megapixels in a few kilobytes


_FILES = st.lists(
    st.one_of(
        st.binary(max_size=2048),  # anything at all, zero bytes too
        st.just(b""),
        st.builds(lambda tail: b"\xff\xd8\xff\xe0" + tail, st.binary(max_size=512)),  # JPEG-ish
        st.builds(lambda tail: b"\x89PNG\r\n\x1a\n" + tail, st.binary(max_size=512)),
        st.builds(lambda tail: b"%PDF-1.7\n" + tail, st.binary(max_size=512)),
        st.just(b"PK\x03\x04" + b"\x00" * 200),  # a zip
        st.just("bomb"),
    ),
    max_size=7,
)


@given(
    files=_FILES,
    text=st.none() | fuzz.odd_text,
    names=st.sampled_from(["photo.jpg", "../../etc/passwd", "", "x" * 300, "résumé.pdf"]),
    types=st.sampled_from(["image/jpeg", "application/pdf", "text/html", ""]),
)
async def test_any_upload_is_answered_and_stored_whole_or_not(
    anonymous, engine, spoken_to, files, text, names, types
):
    reference, token = spoken_to
    form = [("files", (names, _bomb() if f == "bomb" else f, types)) for f in files]
    before = await _conversation_stored(engine)
    response = await anonymous.post(
        f"/v1/enquiries/{reference}/information",
        params={"token": token},
        data={"text": text.encode("utf-8", "surrogatepass")} if text is not None else {},
        files=form or None,
    )
    assert_answered(response)
    if response.status_code != 201:
        assert await _conversation_stored(engine) == before, response.text
    else:
        assert len(response.json()["attachments"]) == len(files)


@given(
    attachment=st.uuids().map(str) | fuzz.odd_text,
    expires=st.integers().map(str) | fuzz.odd_text,
    signature=fuzz.tokens | fuzz.odd_text,
    reference=st.just("MINE") | fuzz.reference_texts,
    by_token=st.booleans(),
)
async def test_any_attachment_read_is_answered(
    client, anonymous, spoken_to, attachment, expires, signature, reference, by_token
):
    ours, token = spoken_to
    query = f"expires={_escaped(expires)}&signature={_escaped(signature or '')}"
    signed = await anonymous.get(f"/v1/attachments/{_escaped(attachment)}?{query}")
    assert_answered(signed)
    assert signed.status_code != 200
    path = f"/v1/enquiries/{_escaped(ours if reference == 'MINE' else reference)}"
    path += f"/attachments/{_escaped(attachment)}"
    read = await (anonymous.get(f"{path}?token={token}") if by_token else client.get(path))
    assert_answered(read)
    assert read.status_code != 200


# --- the Open311 front door (app/routers/open311.py): forms and queries as civic apps send ----

_OPEN311_NAMES = st.sampled_from(
    [
        *SINGLE,
        "attribute[bin_type]",
        "attribute[waste_type][]",
        "attribute[depth_cm]",
        "attribute[collection_date]",
        "service_request_id",
        "update_id",
        "updated_datetime",
        "status",
        "start_date",
        "end_date",
    ]
) | st.builds(
    lambda code, many: f"attribute[{code}]{'[]' if many else ''}", fuzz.odd_text, st.booleans()
)
_OPEN311_VALUES = st.one_of(
    fuzz.odd_text,
    st.text(max_size=4100),
    st.sampled_from(
        [
            "missed-bin",
            "fly-tipping",
            "pothole",
            "garden",
            "furniture",
            "52.06",
            "-1.34",
            "nan",
            "inf",
            "1e400",
            "95",
            "12345",
            "http://127.0.0.1:9/x.jpg",
            "open",
            "closed",
            "2026-12-01T00:00:00Z",
            "MINE",
            "oxfordshire.gov.uk",
            "",
        ]
    ),
)
_OPEN311_PAIRS = st.lists(st.tuples(_OPEN311_NAMES, _OPEN311_VALUES), max_size=14)
# A form that would be accepted (a missed bin, or information for our enquiry), a few fields
# changed: so the fuzz reaches acceptance as well as each refusal.
_OPEN311_VALID = {
    "service_code": "missed-bin",
    "address_string": "Bridge Street, Banbury",
    "attribute[bin_type]": "garden",
    "description": "Missed again",
    "service_request_id": "MINE",
}
_OPEN311_FORMS = _OPEN311_PAIRS | st.lists(
    st.tuples(_OPEN311_NAMES, _OPEN311_VALUES), max_size=3
).map(lambda changes: list({**_OPEN311_VALID, **dict(changes)}.items()))
_OPEN311_PATHS = st.sampled_from(
    [
        "discovery.{fmt}",
        "services.{fmt}",
        "services/{segment}.{fmt}",
        "requests.{fmt}",
        "requests/{segment}.{fmt}",
        "tokens/{segment}.{fmt}",
        "servicerequestupdates.{fmt}",
        "{segment}.{fmt}",
    ]
)


def assert_open311_answered(response: httpx.Response) -> None:
    """Never a 5xx; an error is Open311's array of {code, description}, in the format asked."""
    if currently_in_test_context():
        event(f"open311 {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        return
    if response.headers["content-type"].startswith("text/xml"):
        assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?><errors><error>')
        assert f"<code>{response.status_code}</code>" in response.text
        return
    assert response.headers["content-type"] == "application/json", response.text
    [error] = response.json()
    assert error["code"] == response.status_code
    assert isinstance(error["description"], str)


async def _open311_stored(engine: AsyncEngine) -> tuple[Stored, tuple[int, int, int, int]]:
    return await stored(engine), await _conversation_stored(engine)


@pytest.fixture
async def open311_key(app) -> str:
    from app.clients.service import Scope
    from tests.conftest import make_key

    return await make_key(app.state.iap.engine, Scope.enquiries_submit, Scope.enquiries_read)


@given(
    form=_OPEN311_FORMS,
    with_key=st.sampled_from([True, True, True, False]),
    fmt=st.sampled_from(["json", "xml"]),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded"] * 4
        + ["multipart/form-data; boundary=x", "text/plain", "application/json"]
    ),
    updates=st.booleans(),
)
async def test_any_open311_form_is_answered_and_stored_whole_or_not(
    anonymous, engine, spoken_to, open311_key, form, with_key, fmt, content_type, updates
):
    reference, _ = spoken_to
    pairs = [(k, reference if v == "MINE" else v) for k, v in form]
    if with_key:
        pairs.append(("api_key", open311_key))
    body = urlencode(
        [(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in pairs]
    )
    path = f"/open311/v2/{'servicerequestupdates' if updates else 'requests'}.{fmt}"
    before = await _open311_stored(engine)
    response = await anonymous.post(path, content=body, headers={"content-type": content_type})
    assert_open311_answered(response)
    after = await _open311_stored(engine)
    if response.status_code != 201:
        assert after == before, response.text
    elif not updates:
        assert after[0].enquiries == before[0].enquiries + 1


@given(
    path=_OPEN311_PATHS,
    segment=fuzz.odd_text | fuzz.reference_texts | st.just("missed-bin"),
    fmt=st.sampled_from(["json", "xml", "JSON", "csv", ""]) | fuzz.odd_text,
    query=fuzz.list_query_strings()
    | st.lists(st.tuples(_OPEN311_NAMES, _OPEN311_VALUES)).map(
        lambda pairs: urlencode(
            [
                (k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass"))
                for k, v in pairs
            ]
        )
    ),
    with_key=st.booleans(),
)
async def test_any_open311_read_is_answered(
    anonymous, spoken_to, open311_key, path, segment, fmt, query, with_key
):
    url = "/open311/v2/" + path.format(segment=_escaped(segment), fmt=_escaped(fmt))
    if with_key:
        query = f"{query}&api_key={open311_key}"
    response = await anonymous.get(f"{url}?{query}")
    assert_open311_answered(response)
