"""Status updates pushed by organisations: signed webhooks and Open311 forms, each recorded once."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from tests.conftest import enquiry_body

COUNTY_SECRET = "whsec_aWFwIHNhbmRib3ggY291bnR5IHdlYmhvb2tzIDIwMjY="
CITY_KEY = "sandbox-oxford-city-updates"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def delivered_enquiry(client, app, **change):
    """Submit an enquiry and deliver it; its reference and each destination's remote reference."""
    response = await client.post("/v1/enquiries", json=enquiry_body(**change))
    assert response.status_code == 201, response.text
    reference = response.json()["reference"]
    await app.state.runtime.dispatcher.run_until_idle()
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    remote = {d["organisation_id"]: d["remote_reference"] for d in enquiry["destinations"]}
    return reference, remote


async def delivered_to_the_city(client, app):
    """A missed bin in Oxford, delivered to the city council's Open311 back-office: its
    reference and the city's case id."""
    reference, remote = await delivered_enquiry(
        client,
        app,
        service_code="missed-bin",
        location={"postcode": "OX1 1BX"},
        attributes={"bin_type": "refuse"},
    )
    return reference, remote["oxford-city"]


def signed(body: dict, *, message_id="msg_1", secret=COUNTY_SECRET, at=None):
    raw = json.dumps(body)
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, at, raw)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
    return raw, headers


def update(remote_reference, status, *, update_id="u1", at=T0, **extra):
    body = {
        "update_id": update_id,
        "remote_reference": remote_reference,
        "status": status,
        "description": "Crew assigned",
        "updated_at": at.isoformat(),
    }
    return {**body, **extra}


async def push(client, body, organisation="oxfordshire-county", **signing):
    raw, headers = signed(body, **signing)
    return await client.post(f"/v1/inbound/{organisation}", content=raw, headers=headers)


async def timeline(client, reference, kind="status.updated"):
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    return enquiry, [e for e in enquiry["timeline"] if e["type"] == kind]


async def test_a_signed_update_reaches_the_timeline_and_the_status(client, app):
    reference, remote = await delivered_enquiry(client, app)
    response = await push(client, update(remote["oxfordshire-county"], "in_progress"))
    assert response.status_code == 200, response.text
    assert response.json() == {"outcome": "recorded", "status": "in_progress"}
    enquiry, events = await timeline(client, reference)
    assert enquiry["status"] == "in_progress"
    [event] = events
    assert event["organisation_id"] == "oxfordshire-county"
    assert event["status"] == "in_progress"
    assert "Crew assigned" in event["detail"]


async def test_a_replayed_webhook_id_is_ignored_and_a_repeated_update_recorded_once(client, app):
    reference, remote = await delivered_enquiry(client, app)
    body = update(remote["oxfordshire-county"], "in_progress")
    assert (await push(client, body)).json()["outcome"] == "recorded"
    replay = await push(client, body)
    assert replay.status_code == 200
    assert replay.json()["outcome"] == "replayed"
    # The same update sent again as a new message (or polled as well) is still recorded once.
    again = await push(client, body, message_id="msg_2")
    assert again.json()["outcome"] == "duplicate"
    _, events = await timeline(client, reference)
    assert len(events) == 1


async def test_the_case_may_be_named_by_our_reference(client, app):
    reference, _ = await delivered_enquiry(client, app)
    body = update(None, "in_progress", reference=reference.lower().replace("-", ""))
    response = await push(client, body)
    assert response.status_code == 200, response.text
    enquiry, events = await timeline(client, reference)
    assert enquiry["status"] == "in_progress"
    assert len(events) == 1


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"secret": "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"}, "No matching signature"),
        ({"at": timedelta(minutes=-6)}, "too old"),
        ({"at": timedelta(minutes=6)}, "too new"),
    ],
)
async def test_a_wrong_or_stale_signature_is_refused(client, app, change, why):
    if "at" in change:  # measured from now, not from when the tests were collected
        change = {"at": datetime.now(UTC) + change["at"]}
    reference, remote = await delivered_enquiry(client, app)
    response = await push(client, update(remote["oxfordshire-county"], "in_progress"), **change)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert why in response.json()["detail"]
    enquiry, events = await timeline(client, reference)
    assert events == []
    assert enquiry["status"] == "dispatched"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "m", "webhook-timestamp": "nan", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "m", "webhook-timestamp": "1e999", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "m", "webhook-timestamp": "NOW", "webhook-signature": "nocomma"},
    ],
)
async def test_missing_or_malformed_signature_headers_get_401_not_500(client, headers):
    now = str(int(datetime.now(UTC).timestamp()))
    headers = {k: now if v == "NOW" else v for k, v in headers.items()}
    response = await client.post(
        "/v1/inbound/oxfordshire-county",
        content=b'{"x": 1}',
        headers={"content-type": "application/json", **headers},
    )
    assert response.status_code == 401
    assert response.json()["type"] == "/problems/unauthenticated"


async def test_a_signed_update_that_is_not_valid_gets_422(client, app):
    body = {"update_id": "u1", "status": "", "updated_at": "yesterday"}
    response = await push(client, body)
    assert response.status_code == 422
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert {"#/status", "#/updated_at"} <= pointers


async def test_an_update_naming_no_case_of_ours_is_404(client, app):
    await delivered_enquiry(client, app)
    response = await push(client, update("OXF-999999", "in_progress"))
    assert response.status_code == 404
    # It was not remembered, so the organisation may send it again once the mix-up is fixed.
    assert (await push(client, update("OXF-999999", "in_progress"))).status_code == 404


def _answer(response):
    """What a client learns from an answer (its instance names the path it asked)."""
    body = response.json()
    body.pop("instance", None)
    return response.status_code, response.headers["content-type"], json.dumps(body, sort_keys=True)


async def test_unknown_organisations_and_ones_that_do_not_push_answer_as_a_wrong_signature(
    client,
):
    # Signed with the county's secret, sent where it does not belong: the same 401 whether
    # the organisation is unknown, does not push at all, or pushes only Open311 forms.
    answers = {
        organisation: _answer(await push(client, update("X", "open"), organisation=organisation))
        for organisation in ("nobody", "cherwell", "oxford-city")
    }
    assert len(set(answers.values())) == 1, answers
    status, content_type, body = answers["nobody"]
    assert (status, content_type) == (401, "application/problem+json")
    assert json.loads(body)["type"] == "/problems/unauthenticated"
    assert "nobody" not in body


async def test_unknown_organisations_and_ones_that_do_not_push_refuse_any_open311_key(client):
    answers = {
        _answer(
            await client.post(
                f"/v1/inbound/{organisation}/servicerequestupdates",
                data=open311_form(api_key=key, service_request_id="1"),
            )
        )
        for organisation in ("nobody", "cherwell", "oxfordshire-county", "oxford-city")
        for key in (CITY_KEY, "guess", "")
        if (organisation, key) != ("oxford-city", CITY_KEY)
    }
    assert len(answers) == 1, answers
    [(status, _, body)] = answers
    assert (status, json.loads(body)["type"]) == (401, "/problems/unauthenticated")


async def test_an_older_update_arriving_late_does_not_turn_the_status_back(client, app):
    reference, remote = await delivered_enquiry(client, app)
    case = remote["oxfordshire-county"]
    await push(client, update(case, "resolved", update_id="u2", at=T0 + timedelta(hours=2)))
    await push(client, update(case, "in_progress", update_id="u1", at=T0), message_id="m2")
    enquiry, events = await timeline(client, reference)
    assert enquiry["status"] == "resolved"
    assert [e["status"] for e in events] == ["resolved", "in_progress"]


async def test_a_word_we_do_not_know_is_kept_without_changing_the_status(client, app):
    reference, remote = await delivered_enquiry(client, app)
    response = await push(client, update(remote["oxfordshire-county"], "Awaiting Parts"))
    assert response.json() == {"outcome": "recorded", "status": None}
    enquiry, [event] = await timeline(client, reference)
    assert enquiry["status"] == "dispatched"
    assert "Awaiting Parts" in event["detail"]


@pytest.mark.parametrize(
    ("word", "status"), [("received", "acknowledged"), ("Received", "acknowledged")]
)
async def test_a_back_office_that_says_received_has_acknowledged_it(client, app, word, status):
    reference, remote = await delivered_enquiry(client, app)
    response = await push(client, update(remote["oxfordshire-county"], word))
    assert response.json() == {"outcome": "recorded", "status": status}
    enquiry, _ = await timeline(client, reference)
    assert enquiry["status"] == "acknowledged"


@pytest.mark.parametrize("word", ["routed", "dispatched", "failed"])
async def test_our_own_progress_before_delivery_is_not_a_word_a_back_office_may_report(
    client, app, word
):
    """Taken as ours, these would move a delivered part back to before its delivery."""
    reference, remote = await delivered_enquiry(client, app)
    case = remote["oxfordshire-county"]
    await push(client, update(case, "in_progress", update_id="u1"))
    response = await push(client, update(case, word, update_id="u2"), message_id="m2")
    assert response.json() == {"outcome": "recorded", "status": None}
    enquiry, _ = await timeline(client, reference)
    assert enquiry["status"] == "in_progress"


async def test_not_our_responsibility_sends_the_enquiry_to_the_triage_desk(client, app):
    reference, remote = await delivered_enquiry(client, app)
    body = update(
        remote["oxfordshire-county"],
        "not_our_responsibility",
        description="This road is privately owned",
    )
    assert (await push(client, body)).json()["status"] == "not_our_responsibility"
    enquiry, [rerouted] = await timeline(client, reference, "enquiry.rerouted")
    assert "privately owned" in rerouted["detail"]
    assert enquiry["status"] == "routed"
    triage = [d for d in enquiry["destinations"] if d["organisation_id"] == "contact-centre"]
    assert [d["state"] for d in triage] == ["pending"]
    assert "privately owned" in triage[0]["reason"]
    await app.state.runtime.dispatcher.run_until_idle()
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "dispatched"
    assert {d["organisation_id"]: d["state"] for d in enquiry["destinations"]} == {
        "oxfordshire-county": "delivered",
        "contact-centre": "delivered",
    }


async def test_an_enquiry_shows_the_organisation_least_far_along(client, app):
    # Anti-social behaviour goes to the district council and the police.
    reference, remote = await delivered_enquiry(
        client,
        app,
        service_code="anti-social-behaviour",
        location={"postcode": "OX1 1BX"},
        attributes={},
    )
    assert set(remote) == {"oxford-city", "thames-valley-police"}
    response = await client.post(
        "/v1/inbound/oxford-city/servicerequestupdates",
        data=open311_form(service_request_id=remote["oxford-city"], status="fixed"),
    )
    assert response.json()["status"] == "resolved"
    enquiry, _ = await timeline(client, reference)
    assert enquiry["status"] == "dispatched"  # the police have not said anything yet
    destinations = {d["organisation_id"]: d for d in enquiry["destinations"]}
    assert destinations["oxford-city"]["remote_status"] == "resolved"
    assert destinations["thames-valley-police"]["remote_status"] is None


def open311_form(**fields):
    form = {
        "api_key": CITY_KEY,
        "jurisdiction_id": "oxford.gov.uk",
        "service_request_id": "",
        "update_id": "77",
        "updated_datetime": "2026-11-25T10:00:00+00:00",
        "status": "in_progress",
        "description": "Crew on the way",
    }
    return {**form, **fields}


async def test_an_open311_partner_pushes_updates_as_a_form(client, app):
    reference, case = await delivered_to_the_city(client, app)
    response = await client.post(
        "/v1/inbound/oxford-city/servicerequestupdates",
        data=open311_form(service_request_id=case),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"outcome": "recorded", "status": "in_progress"}
    again = await client.post(
        "/v1/inbound/oxford-city/servicerequestupdates",
        data=open311_form(service_request_id=case),
    )
    assert again.json()["outcome"] == "duplicate"
    enquiry, events = await timeline(client, reference)
    assert enquiry["status"] == "in_progress"
    assert len(events) == 1


async def test_an_open311_push_needs_the_api_key_and_valid_fields(client, app):
    url = "/v1/inbound/oxford-city/servicerequestupdates"
    wrong = await client.post(url, data=open311_form(api_key="guess", service_request_id="1"))
    assert wrong.status_code == 401
    missing = await client.post(
        url, data={k: v for k, v in open311_form().items() if k != "api_key"}
    )
    assert missing.status_code == 401
    bad = await client.post(url, data=open311_form(updated_datetime="soon", service_request_id="1"))
    assert bad.status_code == 422
    assert "#/updated_datetime" in {e["pointer"] for e in bad.json()["errors"]}
    # A form is accepted only where Open311 partners send one.
    form_to_webhook = await client.post("/v1/inbound/oxfordshire-county", data={"a": "b"})
    assert form_to_webhook.status_code == 415


# Times UTC cannot hold once their offset is applied, at both ends of the calendar.
OUT_OF_RANGE_TIMES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
NUL_FIELDS = ["remote_reference", "status", "update_id", "description"]


async def _nothing_recorded(client, reference):
    enquiry, events = await timeline(client, reference)
    assert events == []
    assert enquiry["status"] == "dispatched"


def _refused(response, pointer):
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert pointer in {e["pointer"] for e in response.json()["errors"]}


@pytest.mark.parametrize("moment", OUT_OF_RANGE_TIMES)
async def test_a_signed_update_at_a_time_utc_cannot_hold_is_refused(client, app, moment):
    reference, remote = await delivered_enquiry(client, app)
    body = {**update(remote["oxfordshire-county"], "in_progress"), "updated_at": moment}
    _refused(await push(client, body), "#/updated_at")
    await _nothing_recorded(client, reference)


@pytest.mark.parametrize("field", NUL_FIELDS)
async def test_a_signed_update_with_nul_in_its_text_is_refused(client, app, field):
    reference, remote = await delivered_enquiry(client, app)
    body = update(remote["oxfordshire-county"], "in_progress")
    body[field] = body[field][:3] + "\x00" + body[field][3:]
    _refused(await push(client, body), f"#/{field}")
    await _nothing_recorded(client, reference)


async def test_a_signed_update_at_the_last_moment_utc_holds_is_recorded(client, app):
    reference, remote = await delivered_enquiry(client, app)
    body = {
        **update(remote["oxfordshire-county"], "in_progress"),
        "updated_at": "9999-12-31T23:59:59Z",
    }
    response = await push(client, body)
    assert response.status_code == 200, response.text
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    county = [d for d in enquiry["destinations"] if d["organisation_id"] == "oxfordshire-county"]
    assert county[0]["remote_status_at"].startswith("9999-12-31T23:59:59")


@pytest.mark.parametrize("moment", [*OUT_OF_RANGE_TIMES, "0001-01-01T00:00:00+00:30"])
async def test_an_open311_update_at_a_time_utc_cannot_hold_is_refused(client, app, moment):
    reference, case = await delivered_to_the_city(client, app)
    form = open311_form(service_request_id=case, updated_datetime=moment)
    response = await client.post("/v1/inbound/oxford-city/servicerequestupdates", data=form)
    _refused(response, "#/updated_datetime")
    await _nothing_recorded(client, reference)


@pytest.mark.parametrize("field", ["service_request_id", "status", "update_id", "description"])
async def test_an_open311_update_with_nul_in_its_text_is_refused(client, app, field):
    reference, case = await delivered_to_the_city(client, app)
    form = open311_form(service_request_id=case)
    form[field] = form[field][:2] + "\x00" + form[field][2:]
    response = await client.post("/v1/inbound/oxford-city/servicerequestupdates", data=form)
    _refused(response, f"#/{field}")
    await _nothing_recorded(client, reference)
