"""The front door on a real loopback server, as civic apps meet it: the third-party
`georeport` client reading it in JSON and XML, the XML's element names and nesting as the
spec gives them, and a FixMyStreet-shaped flow end to end: the services list, a POST with
answers and a photo, the enquiry delivered once to Cherwell's Open311 back-office (the
sandbox) with the photo following it once without its EXIF, the back-office moving the case,
and that status fetched back through servicerequestupdates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import georeport
import georeport.georeport
import httpx
import pytest
import requests

from app.clients.service import Scope
from app.core.db import create_engine
from app.core.settings import Settings
from app.main import create_app
from tests.attachments.images import phone_photo
from tests.conftest import ThreadedServer, free_port, make_key
from tests.open311.helpers import (
    V2,
    Files,
    as_list,
    file_server,
    missed_bin_form,
)

JURISDICTION = "oxfordshire.gov.uk"


@dataclass
class Live:
    url: str  # the Open311 endpoint: http://127.0.0.1:PORT/open311/v2
    key: str  # enquiries:submit and enquiries:read, as a FixMyStreet install would hold


@pytest.fixture
async def live(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Live]:
    """The gateway under uvicorn with its dispatcher and poller running (statuses polled
    every half second), reached at its own port (the signed links of its files), no gazetteer
    (the Banbury pin is placed by the built-in table, as on a fresh install), and a key."""
    monkeypatch.setenv("IAP_STATUS_POLL_SECONDS", "0.5")
    engine = create_engine(settings.database_url)
    try:
        key = await make_key(engine, Scope.enquiries_submit, Scope.enquiries_read)
    finally:
        await engine.dispose()
    # Reached where it serves, so a back-office can fetch the signed links of its files.
    port = free_port()
    settings = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}"})
    server = ThreadedServer(create_app(settings), port=port, lifespan="on").start()
    try:
        yield Live(url=f"{server.url}{V2}", key=key)
    finally:
        await asyncio.to_thread(server.stop)


@pytest.fixture(scope="module")
def photos() -> Iterator[Files]:
    with file_server() as files:
        files.files["bin.jpg"] = (phone_photo(), "image/jpeg")
        yield files


def client(live: Live, fmt: str, monkeypatch: pytest.MonkeyPatch) -> georeport.GeoReport:
    """The georeport client pointed at the gateway. It sends no api_key on reads, so its HTTP
    calls go through a session that carries the key as a bearer header (which the front door
    takes, as it takes api_key)."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {live.key}"
    monkeypatch.setattr(georeport.georeport, "requests", session)
    return georeport.GeoReport(live.url, jurisdiction=JURISDICTION, output_format=fmt)


def post_request(live: Live, fmt: str, **overrides: str) -> requests.Response:
    return requests.post(
        f"{live.url}/requests.{fmt}", data=missed_bin_form(live.key, **overrides), timeout=10
    )


async def eventually(check: Any, *, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = await asyncio.to_thread(check)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within} s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_the_georeport_client_reads_the_front_door(live, fmt, monkeypatch):
    made = await asyncio.to_thread(post_request, live, fmt)
    assert made.status_code == 201, made.text
    if fmt == "json":
        reference = made.json()[0]["service_request_id"]
    else:
        reference = ElementTree.fromstring(made.content).findtext("request/service_request_id")
    georeport_client = client(live, fmt, monkeypatch)

    services = await asyncio.to_thread(georeport_client.get_service_list)
    codes = [s["service_code"] for s in services]
    assert "missed-bin" in codes
    assert "pothole" in codes
    definition = await asyncio.to_thread(georeport_client.get_service_definition, "missed-bin")
    attributes = as_list(
        definition["attributes"] if fmt == "json" else definition["attributes"]["attribute"]
    )
    assert [a["code"] for a in attributes] == ["bin_type", "collection_date"]

    listed = await asyncio.to_thread(
        georeport_client.get_service_requests, service_request_id=reference
    )
    [request] = as_list(listed)
    assert request["service_request_id"] == reference
    assert request["status"] == "open"
    assert request["service_code"] == "missed-bin"
    one = await asyncio.to_thread(georeport_client.get_service_request, reference)
    assert one["service_request_id"] == reference
    assert one["agency_responsible"] == "Cherwell District Council"
    if fmt == "json":  # (georeport cannot read an empty XML list: xmltodict gives it None)
        closed = await asyncio.to_thread(georeport_client.get_service_requests, status="closed")
        assert closed == []


def children(element: ElementTree.Element) -> list[str]:
    return [child.tag for child in element]


async def test_the_xml_has_the_specs_element_names_and_nesting(live):
    def get(path: str, **params: str) -> ElementTree.Element:
        answer = requests.get(f"{live.url}/{path}", params=params, timeout=10)
        assert answer.headers["content-type"].startswith("text/xml"), answer.text
        return ElementTree.fromstring(answer.content)

    made = await asyncio.to_thread(post_request, live, "xml")
    created = ElementTree.fromstring(made.content)
    assert created.tag == "service_requests"
    assert children(created) == ["request"]
    assert set(children(created[0])) >= {"service_request_id", "service_notice", "account_id"}
    reference = created.findtext("request/service_request_id")

    services = await asyncio.to_thread(get, "services.xml")
    assert services.tag == "services"
    assert set(children(services)) == {"service"}
    assert children(services[0]) == [
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    ]
    definition = await asyncio.to_thread(get, "services/missed-bin.xml")
    assert definition.tag == "service_definition"
    assert children(definition) == ["service_code", "attributes"]
    attribute = definition.find("attributes/attribute")
    assert attribute is not None
    assert set(children(attribute)) == {
        "variable",
        "code",
        "datatype",
        "required",
        "datatype_description",
        "order",
        "description",
        "values",
    }
    assert children(attribute.find("values/value")) == ["key", "name"]  # type: ignore[arg-type]

    requests_list = await asyncio.to_thread(get, "requests.xml", api_key=live.key)
    assert requests_list.tag == "service_requests"
    assert set(children(requests_list)) == {"request"}
    assert set(children(requests_list[0])) == {
        "service_request_id",
        "status",
        "status_notes",
        "service_name",
        "service_code",
        "description",
        "agency_responsible",
        "service_notice",
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
        "address",
        "address_id",
        "zipcode",
        "lat",
        "long",
        "media_url",
    }
    one = await asyncio.to_thread(get, f"requests/{reference}.xml", api_key=live.key)
    assert (one.tag, children(one)) == ("service_requests", ["request"])
    updates = await asyncio.to_thread(get, "servicerequestupdates.xml", api_key=live.key)
    assert updates.tag == "service_request_updates"
    assert set(children(updates)) == {"request_update"}
    assert set(children(updates[0])) == {
        "update_id",
        "service_request_id",
        "status",
        "updated_datetime",
        "description",
        "media_url",
        "external_status_code",
    }
    errors = ElementTree.fromstring(
        (await asyncio.to_thread(post_request, live, "xml", service_code="nope")).content
    )
    assert (errors.tag, children(errors), children(errors[0])) == (
        "errors",
        ["error"],
        ["code", "description"],
    )
    discovery = await asyncio.to_thread(get, "discovery.xml")
    assert children(discovery) == ["changeset", "contact", "key_service", "endpoints"]
    endpoint = discovery.find("endpoints/endpoint")
    assert endpoint is not None
    assert children(endpoint) == ["specification", "url", "changeset", "type", "formats"]
    assert [f.text for f in endpoint.findall("formats/format")] == ["application/json", "text/xml"]


async def test_a_fixmystreet_shaped_flow_end_to_end(live, photos, back_office, sandbox):
    # 1. The services list, as FixMyStreet syncs its categories.
    services = await asyncio.to_thread(requests.get, f"{live.url}/services.xml", timeout=10)
    assert b"<service_code>missed-bin</service_code>" in services.content

    # 2. The report: a pin in Banbury, the answer to the service's question, a photo.
    made = await asyncio.to_thread(
        post_request, live, "xml", media_url=f"{photos.url}/bin.jpg", jurisdiction_id=JURISDICTION
    )
    assert made.status_code == 201, made.text
    reference = ElementTree.fromstring(made.content).findtext("request/service_request_id")
    assert reference

    # 3. Delivered once, to Cherwell's Open311 back-office (the district collects bins).
    def at_cherwell() -> dict[str, Any] | None:
        cases = back_office.cases.get("cherwell", {})
        found = [case for case in cases.values() if case["reference"] == reference]
        return found[0] if found else None

    case = await eventually(at_cherwell, within=15, what="the case at Cherwell")
    assert back_office.posts.get("cherwell") == 1
    assert [org for org, cases in back_office.cases.items() if cases] == ["cherwell"]
    assert case["received"]["service_code"] == "CDC-BIN"  # Cherwell's own code for it
    assert case["received"]["attributes"]["bin_type"] == "garden"
    assert (case["received"]["lat"], case["received"]["long"]) == ("52.0601", "-1.3402")

    def read_back() -> dict[str, Any]:
        answer = requests.get(
            f"{live.url}/requests/{reference}.json", params={"api_key": live.key}, timeout=10
        )
        [request] = answer.json()
        return dict(request)

    request = await asyncio.to_thread(read_back)
    assert request["agency_responsible"] == "Cherwell District Council"
    assert request["media_url"].startswith(f"{live.url.removesuffix(V2)}/v1/attachments/")

    # The photo follows the delivery, once, fetched by Cherwell without its EXIF.
    def photo_at_cherwell() -> list[dict[str, Any]]:
        return [
            file
            for entry in case.get("follow_ups", [])
            if entry["kind"] == "information"
            for file in entry["attachments"]
        ]

    [photo] = await eventually(photo_at_cherwell, within=15, what="the photo at Cherwell")
    assert (photo["content_type"], photo["exif"]) == ("image/jpeg", False)

    # 4. The back-office moves the case; the gateway polls it.
    async with httpx.AsyncClient(base_url=f"{sandbox.url}/_sandbox", timeout=5) as admin:
        moved = await admin.post(
            f"/cherwell/cases/{case['id']}/status",
            json={"status": "in_progress", "description": "Crew sent"},
        )
        assert moved.status_code == 200, moved.text

    # 5. FixMyStreet fetches the change back.
    def in_progress() -> list[dict[str, Any]]:
        answer = requests.get(
            f"{live.url}/servicerequestupdates.json", params={"api_key": live.key}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        return [
            u
            for u in answer.json()
            if u["service_request_id"] == reference and u["status"] == "in_progress"
        ]

    [update] = await eventually(in_progress, within=15, what="the in_progress update")
    assert update["external_status_code"] == "in_progress"
    assert update["updated_datetime"].endswith("Z")
    assert back_office.posts.get("cherwell") == 1  # still once
