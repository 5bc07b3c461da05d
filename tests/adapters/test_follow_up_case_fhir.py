"""Follow-ups meeting the sandbox's county case API and ICB FHIR server on loopback: more
information with two photos, a withdrawal and a reopening each arrive once, field by field, and
a repeat adds nothing; what the back-office then says comes back to the gateway sanely."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from sqlalchemy import update
from standardwebhooks import Webhook

from app.adapters import ADAPTER_TYPES
from app.adapters.base import Adapter, AttachmentFile, FollowUp, PermanentError, Receipt
from app.catalogue.catalogue import Catalogue, load_catalogue
from app.core.models import dispatch_table
from app.core.settings import SHIPPED_CONFIG_DIR
from app.core.vocabulary import Closure, MessageKind
from tests.adapters import factory
from tests.conftest import ThreadedServer, enquiry_body

COUNTY, ICB = "oxfordshire-county", "nhs-bob-icb"
COUNTY_SECRET = "whsec_aWFwIHNhbmRib3ggY291bnR5IHdlYmhvb2tzIDIwMjY="


@pytest.fixture(scope="module")
def catalogue(sandbox: ThreadedServer) -> Catalogue:
    return load_catalogue(
        SHIPPED_CONFIG_DIR,
        variables={
            "IAP_SANDBOX_URL": sandbox.url,
            "IAP_SANDBOX_SMTP_PORT": str(sandbox.smtp_port),  # type: ignore[attr-defined]
        },
    )


class Desk:
    """One organisation's adapter pointed at the sandbox, and what it delivers and follows up."""

    def __init__(self, catalogue: Catalogue, organisation_id: str, client: httpx.AsyncClient):
        self.organisation = catalogue.organisations[organisation_id]
        raw = self.organisation.adapter.model_dump()
        kind = ADAPTER_TYPES[raw["type"]]
        self.adapter: Adapter = kind(
            config=kind.config_model.model_validate(raw), client=client, timeout=5
        )

    async def deliver(self) -> Receipt:
        return await self.adapter.deliver(
            factory.delivery(self.organisation, citizen=factory.CITIZEN)
        )

    def follow_up(self, case: str, **fields: Any) -> FollowUp:
        return factory.follow_up(self.organisation, remote_reference=case, **fields)


@pytest.fixture
async def http(sandbox: ThreadedServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url) as client:
        yield client


@pytest.fixture
def county(catalogue: Catalogue, http: httpx.AsyncClient) -> Desk:
    return Desk(catalogue, COUNTY, http)


@pytest.fixture
def icb(catalogue: Catalogue, http: httpx.AsyncClient) -> Desk:
    return Desk(catalogue, ICB, http)


def two_photos() -> tuple[AttachmentFile, AttachmentFile]:
    return (
        factory.attachment_file(factory.photo(size=(40, 30)), number=1),
        factory.attachment_file(factory.photo(size=(24, 16)), number=2),
    )


def as_received(file: AttachmentFile) -> dict[str, Any]:
    return {
        "content_type": "image/jpeg",
        "size": len(file.content),
        "sha256": hashlib.sha256(file.content).hexdigest(),
        "exif": False,
    }


async def shown(http: httpx.AsyncClient, organisation: str, case_id: str) -> dict[str, Any]:
    """The case as GET /_sandbox/{org}/cases lists it."""
    listed = (await http.get(f"/_sandbox/{organisation}/cases")).json()["cases"]
    return next(c for c in listed if c["id"] == case_id)


# -- the county's case API --------------------------------------------------------------------


async def test_county_information_with_two_photos_arrives_once(county, back_office, http):
    case_id = (await county.deliver()).remote_reference
    photos = two_photos()
    first = await county.adapter.follow_up(county.follow_up(case_id, attachments=photos))
    again = await county.adapter.follow_up(county.follow_up(case_id, attachments=photos, attempt=2))
    assert first == again
    assert first.remote_reference.startswith("CMT-")
    case = await shown(http, COUNTY, case_id)
    [entry] = case["follow_ups"]
    assert entry["key"] == str(factory.FOLLOW_UP_ID)
    assert (entry["kind"], entry["status"]) == ("information", None)
    assert entry["text"] == "The pothole is on the north side, by the bus stop"
    assert entry["id"] == first.remote_reference
    assert [
        {k: a[k] for k in ("content_type", "size", "sha256", "exif")} for a in entry["attachments"]
    ] == [as_received(p) for p in photos]
    assert [a["filename"] for a in entry["attachments"]] == ["photo-1.jpg", "photo-2.jpg"]
    assert entry["received"]["author"] == "citizen"
    assert len(case["uploads"]) == 2  # the repeat uploaded nothing again
    assert back_office.follow_up_posts[(COUNTY, str(factory.FOLLOW_UP_ID))] == 2
    assert case["status"] == "new"  # information moves nothing


@pytest.mark.parametrize(
    ("kind", "word"), [(MessageKind.withdrawal, "withdrawn"), (MessageKind.reopening, "reopened")]
)
async def test_county_status_changes_arrive_once_and_move_the_case(
    county, back_office, http, kind, word
):
    case_id = (await county.deliver()).remote_reference
    said = county.follow_up(case_id, kind=kind, text="Fixed by a neighbour")
    first = await county.adapter.follow_up(said)
    again = await county.adapter.follow_up(county.follow_up(case_id, kind=kind, attempt=2))
    assert first == again
    case = await shown(http, COUNTY, case_id)
    assert case["status"] == word
    [move] = case["updates"]
    assert (move["status"], move["description"]) == (word, "Fixed by a neighbour")
    assert first.remote_reference == move["update_id"]
    [entry] = case["follow_ups"]
    assert (entry["kind"], entry["status"], entry["text"]) == (
        kind.value,
        word,
        "Fixed by a neighbour",
    )
    assert entry["received"] == {"status": word, "reason": "Fixed by a neighbour"}
    assert back_office.follow_up_posts[(COUNTY, str(factory.FOLLOW_UP_ID))] == 2


async def test_county_follow_ups_need_the_token(county, back_office, http):
    case_id = (await county.deliver()).remote_reference
    refused = await http.post(
        f"/{COUNTY}/api/cases/{case_id}/comments",
        json={"text": "hello"},
        headers={"Idempotency-Key": "k"},
    )
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_token"
    assert (await shown(http, COUNTY, case_id))["follow_ups"] == []


async def test_a_comment_naming_an_upload_not_on_the_case_is_refused(county, back_office, http):
    case_id = (await county.deliver()).remote_reference
    with pytest.raises(PermanentError):
        # A comment for a case the county does not hold: 404, a refusal, nothing filed.
        await county.adapter.follow_up(county.follow_up("OCC-999999"))
    assert (await shown(http, COUNTY, case_id))["follow_ups"] == []


# -- the ICB's FHIR server --------------------------------------------------------------------


async def test_fhir_information_with_two_photos_is_one_communication(icb, back_office, http):
    case_id = (await icb.deliver()).remote_reference
    photos = two_photos()
    first = await icb.adapter.follow_up(icb.follow_up(case_id, attachments=photos))
    again = await icb.adapter.follow_up(icb.follow_up(case_id, attachments=photos, attempt=2))
    assert first == again
    assert first.remote_reference.startswith("comm-")
    case = await shown(http, ICB, case_id)
    [communication] = case["communications"]
    assert communication["basedOn"] == [{"reference": f"ServiceRequest/{case_id}"}]
    [entry] = case["follow_ups"]
    assert (entry["key"], entry["kind"]) == (str(factory.FOLLOW_UP_ID), "information")
    assert entry["text"] == "The pothole is on the north side, by the bus stop"
    assert [
        {k: a[k] for k in ("content_type", "size", "sha256", "exif")} for a in entry["attachments"]
    ] == [as_received(p) for p in photos]
    assert [a["title"] for a in entry["attachments"]] == ["photo-1.jpg", "photo-2.jpg"]
    assert back_office.follow_up_posts[(ICB, str(factory.FOLLOW_UP_ID))] == 2


async def test_fhir_withdrawal_revokes_once(icb, back_office, http):
    case_id = (await icb.deliver()).remote_reference
    said = icb.follow_up(case_id, kind=MessageKind.withdrawal, text="Registered elsewhere")
    first = await icb.adapter.follow_up(said)
    again = await icb.adapter.follow_up(
        icb.follow_up(case_id, kind=MessageKind.withdrawal, attempt=2)
    )
    assert first == again == type(first)(remote_reference=f"{case_id}/_history/2")
    read = await http.get(f"/{ICB}/fhir/ServiceRequest/{case_id}")
    assert read.headers["etag"] == 'W/"2"'
    resource = read.json()
    ServiceRequest.model_validate(resource)
    assert resource["status"] == "revoked"
    assert resource["note"][-1]["text"] == "Registered elsewhere"
    case = await shown(http, ICB, case_id)
    [entry] = case["follow_ups"]
    assert (entry["kind"], entry["status"], entry["text"]) == (
        "withdrawal",
        "revoked",
        "Registered elsewhere",
    )
    assert [u["status"] for u in case["updates"]] == ["revoked"]


async def test_fhir_reopening_replaces_the_completed_request_once(icb, back_office, http):
    case_id = (await icb.deliver()).remote_reference
    moved = await http.post(
        f"/_sandbox/{ICB}/cases/{case_id}/status",
        json={"status": "completed", "description": "Registered"},
    )
    assert moved.status_code < 300
    said = icb.follow_up(case_id, kind=MessageKind.reopening, text="Still not registered")
    first = await icb.adapter.follow_up(said)
    again = await icb.adapter.follow_up(
        icb.follow_up(case_id, kind=MessageKind.reopening, attempt=2)
    )
    assert first == again
    new_id = first.case_reference
    assert new_id not in (None, case_id)
    assert first.remote_reference == new_id
    assert len(back_office.cases[ICB]) == 2  # the original and its one replacement
    replacement = (await http.get(f"/{ICB}/fhir/ServiceRequest/{new_id}")).json()
    ServiceRequest.model_validate(replacement)
    assert replacement["replaces"] == [{"reference": f"ServiceRequest/{case_id}"}]
    assert replacement["status"] == "active"
    original = await shown(http, ICB, case_id)
    assert original["status"] == "completed"
    [entry] = original["follow_ups"]
    assert (entry["kind"], entry["text"], entry["id"]) == (
        "reopening",
        "Still not registered",
        new_id,
    )
    assert back_office.duplicates(ICB) == {}


async def test_the_fhir_server_refuses_an_invalid_communication(icb, back_office, http):
    case_id = (await icb.deliver()).remote_reference
    refused = await http.post(
        f"/{ICB}/fhir/Communication",
        json={"resourceType": "Communication", "payload": "Ann Example"},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert refused.status_code == 400
    assert refused.json()["resourceType"] == "OperationOutcome"
    diagnostics = refused.json()["issue"][0]["diagnostics"]
    assert "payload" in diagnostics
    assert "Ann Example" not in diagnostics
    assert (await shown(http, ICB, case_id))["follow_ups"] == []


async def test_the_fhir_server_refuses_a_photo_that_is_not_what_it_says(icb, back_office, http):
    case_id = (await icb.deliver()).remote_reference
    body = {
        "resourceType": "Communication",
        "status": "completed",
        "basedOn": [{"reference": f"ServiceRequest/{case_id}"}],
        "payload": [
            {"contentAttachment": {"contentType": "image/jpeg", "data": "aGVsbG8=", "size": 9}}
        ],
    }
    refused = await http.post(
        f"/{ICB}/fhir/Communication",
        json=body,
        headers={"Content-Type": "application/fhir+json"},
    )
    assert refused.status_code == 400
    assert "size" in refused.json()["issue"][0]["diagnostics"]


async def test_a_stale_update_gets_412_and_changes_nothing(icb, back_office, http):
    case_id = (await icb.deliver()).remote_reference
    current = (await http.get(f"/{ICB}/fhir/ServiceRequest/{case_id}")).json()
    headers = {"Content-Type": "application/fhir+json"}
    for if_match in ('W/"7"', None):
        sent = headers | ({"If-Match": if_match} if if_match else {})
        stale = await http.put(
            f"/{ICB}/fhir/ServiceRequest/{case_id}",
            content=json.dumps({**current, "status": "revoked"}),
            headers=sent,
        )
        assert stale.status_code == 412
        assert stale.json()["resourceType"] == "OperationOutcome"
    assert (await shown(http, ICB, case_id))["status"] == "active"


# -- what the back-office says afterwards, back at the gateway ---------------------------------


async def delivered(client, app, **fields) -> tuple[str, str]:
    """An enquiry delivered to one organisation: its reference and the case id."""
    response = await client.post("/v1/enquiries", json=enquiry_body(**fields))
    assert response.status_code == 201, response.text
    reference = response.json()["reference"]
    await app.state.runtime.dispatcher.run_until_idle()
    [part] = (await client.get(f"/v1/enquiries/{reference}")).json()["destinations"]
    assert part["state"] == "delivered"
    return reference, part["remote_reference"]


async def withdrawn_here(engine, case_id: str) -> None:
    """The gateway closes the part as withdrawn (as the withdrawal does before telling them)."""
    async with engine.begin() as conn:
        await conn.execute(
            update(dispatch_table)
            .where(dispatch_table.c.remote_reference == case_id)
            .values(closure=Closure.withdrawn)
        )


def push(case_id: str, moved: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The county's signed webhook for one move of its case."""
    raw = json.dumps(
        {
            "update_id": moved["update_id"],
            "remote_reference": case_id,
            "status": moved["status"],
            "description": moved["description"],
            "updated_at": moved["updated_at"],
        }
    )
    at = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": f"msg_{moved['update_id']}",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(COUNTY_SECRET).sign(f"msg_{moved['update_id']}", at, raw),
    }
    return raw, headers


async def test_the_countys_withdrawn_comes_back_as_withdrawn(client, app, engine, http):
    reference, case_id = await delivered(client, app)
    organisation = app.state.runtime.poller.catalogue.organisations[COUNTY]
    await withdrawn_here(engine, case_id)
    adapter = app.state.runtime.adapters[COUNTY]
    said = factory.follow_up(organisation, kind=MessageKind.withdrawal, remote_reference=case_id)
    await adapter.follow_up(said)
    [moved] = (await shown(http, COUNTY, case_id))["updates"]
    raw, headers = push(case_id, moved)
    answer = await client.post(f"/v1/inbound/{COUNTY}", content=raw, headers=headers)
    assert answer.status_code < 300, answer.text
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "withdrawn"
    [part] = enquiry["destinations"]
    assert part["remote_status"] == "withdrawn"
    [event] = [e for e in enquiry["timeline"] if e["type"] == "status.updated"]
    assert event["status"] == "withdrawn"


async def test_a_revoked_request_polled_after_our_withdrawal_stays_withdrawn(
    client, app, engine, http
):
    reference, case_id = await delivered(
        client,
        app,
        service_code="health-enquiry",
        description="Which GP surgery takes new patients?",
        attributes={},
    )
    organisation = app.state.runtime.poller.catalogue.organisations[ICB]
    await withdrawn_here(engine, case_id)
    said = factory.follow_up(organisation, kind=MessageKind.withdrawal, remote_reference=case_id)
    await app.state.runtime.adapters[ICB].follow_up(said)
    assert await app.state.runtime.poller.poll(ICB) == 1
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "withdrawn"  # not cancelled: it was the citizen's word
    [part] = enquiry["destinations"]
    assert part["remote_status"] == "withdrawn"


async def county_token(http: httpx.AsyncClient, catalogue: Catalogue) -> str:
    config = catalogue.organisations[COUNTY].adapter.model_extra or {}
    form = {
        "grant_type": "client_credentials",
        "client_id": str(config["client_id"]),
        "client_secret": str(config["client_secret"]),
    }
    answer = await http.post(f"/{COUNTY}/oauth/token", data=form)
    return str(answer.json()["access_token"])


@pytest.mark.parametrize(
    ("path", "request_fields", "status", "error"),
    [
        ("comments", {"json": {"text": "x"}, "headers": {}}, 400, "invalid_request"),
        ("comments", {"content": b"[1]"}, 400, "invalid_request"),
        ("comments", {"json": {"text": 5}}, 422, "invalid_comment"),
        ("comments", {"json": {"text": "x", "attachments": ["ATT-404"]}}, 422, "invalid_comment"),
        ("comments", {"json": {"text": "x", "attachments": "ATT-1"}}, 422, "invalid_comment"),
        ("status", {"json": {"status": "completed"}}, 422, "invalid_status"),
        ("status", {"json": {"status": "withdrawn", "reason": ["x"]}}, 422, "invalid_status"),
        ("attachments", {"json": {"file": "x"}}, 415, "invalid_request"),
        ("attachments", {"files": {"other": ("a.jpg", b"x", "image/jpeg")}}, 422, None),
        ("attachments", {"files": {"file": ("a.jpg", b"", "image/jpeg")}}, 422, None),
        (
            "attachments",
            {
                "content": b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\nunterminated",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
            None,
            None,
        ),
    ],
)
async def test_the_county_refuses_what_it_cannot_take_and_files_nothing(
    county, catalogue, back_office, http, path, request_fields, status, error
):
    case_id = (await county.deliver()).remote_reference
    token = await county_token(http, catalogue)
    fields = dict(request_fields)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "k-1"}
    if "headers" in fields:
        headers = {"Authorization": f"Bearer {token}", **fields.pop("headers")}
    refused = await http.post(f"/{COUNTY}/api/cases/{case_id}/{path}", headers=headers, **fields)
    assert 400 <= refused.status_code < 500
    if status is not None:
        assert refused.status_code == status
    if error is not None:
        assert refused.json()["error"] == error
    case = await shown(http, COUNTY, case_id)
    assert (case["follow_ups"], case.get("uploads", []), case["status"]) == ([], [], "new")


def a_communication(case_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "basedOn": [{"reference": f"ServiceRequest/{case_id}"}],
        "payload": [{"contentString": "More detail"}],
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "status", "said"),
    [
        ({"basedOn": [{"reference": "ServiceRequest/sr-404"}]}, 422, "basedOn"),
        ({"basedOn": None}, 422, "basedOn"),
        (
            {"payload": [{"contentAttachment": {"contentType": "image/jpeg", "data": "***"}}]},
            400,
            "base64",
        ),
        (
            {"payload": [{"contentAttachment": {"data": "aGVsbG8=", "hash": "AAAA"}}]},
            400,
            "SHA-1",
        ),
    ],
)
async def test_the_fhir_server_refuses_a_communication_it_cannot_file(
    icb, back_office, http, changes, status, said
):
    case_id = (await icb.deliver()).remote_reference
    body = {k: v for k, v in a_communication(case_id, **changes).items() if v is not None}
    refused = await http.post(
        f"/{ICB}/fhir/Communication", json=body, headers={"Content-Type": "application/fhir+json"}
    )
    assert refused.status_code == status
    assert said in refused.json()["issue"][0]["diagnostics"]
    case = await shown(http, ICB, case_id)
    assert (case["follow_ups"], case.get("communications", [])) == ([], [])


async def test_the_fhir_server_refuses_a_replacement_for_a_request_it_lacks(icb, back_office, http):
    case_id = (await icb.deliver()).remote_reference
    current = (await http.get(f"/{ICB}/fhir/ServiceRequest/{case_id}")).json()
    body = {k: v for k, v in current.items() if k not in ("id", "meta")} | {
        "identifier": [{"system": "urn:iap:follow-up", "value": "f-1"}],
        "replaces": [{"reference": "ServiceRequest/sr-404"}],
    }
    refused = await http.post(
        f"/{ICB}/fhir/ServiceRequest", json=body, headers={"Content-Type": "application/fhir+json"}
    )
    assert refused.status_code == 422
    assert len(back_office.cases[ICB]) == 1


async def test_an_update_naming_another_id_is_refused(icb, back_office, http):
    case_id = (await icb.deliver()).remote_reference
    current = (await http.get(f"/{ICB}/fhir/ServiceRequest/{case_id}")).json()
    refused = await http.put(
        f"/{ICB}/fhir/ServiceRequest/{case_id}",
        json={**current, "id": "sr-other", "status": "revoked"},
        headers={"Content-Type": "application/fhir+json", "If-Match": 'W/"1"'},
    )
    assert refused.status_code == 400
    assert (await shown(http, ICB, case_id))["status"] == "active"


async def test_a_request_the_icb_revokes_by_itself_is_cancelled(client, app, http):
    reference, case_id = await delivered(
        client,
        app,
        service_code="health-enquiry",
        description="Which GP surgery takes new patients?",
        attributes={},
    )
    moved = await http.post(
        f"/_sandbox/{ICB}/cases/{case_id}/status",
        json={"status": "revoked", "description": "Referred in error"},
    )
    assert moved.status_code < 300
    assert await app.state.runtime.poller.poll(ICB) == 1
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert enquiry["status"] == "cancelled"  # no withdrawal of ours: the ICB's own word
