"""What an operator reads: every line `iap serve` and `iap worker` write is one JSON object
with a time, a level and an event; each request is one `http.request` line naming its route's
template, never the path, query string or body; a request id ties a request's lines together."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import enquiry_body
from tests.e2e.conftest import Launcher, eventually

pytestmark = pytest.mark.e2e

CITIZEN = {
    "name": "Hermione Fairbrother-Quayle",
    "email": "h.fairbrother@example.org",
    "phone": "01865 731904",
    "preferred_contact": "email",
}
DESCRIPTION = "Crater outside number seventeen swallowed a bicycle wheel"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line, parsed; fails naming the first line that is not a JSON log event."""
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(entry, dict), line
        assert {"timestamp", "level", "event"} <= entry.keys(), line
        entries.append(entry)
    return entries


async def test_serve_and_worker_write_nothing_but_json_lines(iap: Launcher) -> None:
    async with (
        iap.serve("--no-worker", IAP_LOG_LEVEL="DEBUG") as gateway,
        iap.worker(IAP_LOG_LEVEL="DEBUG") as worker,
    ):
        created = await gateway.http.post("/v1/enquiries", json=enquiry_body())
        assert created.status_code == 201
        await worker.process.wait_for_event("dispatch.delivered")
        assert (await gateway.http.get("/nowhere")).status_code == 404
    served = json_lines(gateway.process.log_text())
    worked = json_lines(worker.process.log_text())
    # The server's own records come in the same format as ours.
    assert "uvicorn" in {e.get("logger") for e in served}
    assert {"http.request", "Application shutdown complete."} <= {e["event"] for e in served}
    assert {"dispatcher.started", "dispatch.delivered"} <= {e["event"] for e in worked}


async def test_each_request_is_one_line_with_its_route_and_never_its_path_or_body(
    iap: Launcher,
) -> None:
    async with iap.serve("--no-worker") as gateway:
        body = {
            **enquiry_body(description=DESCRIPTION),
            "citizen": CITIZEN,
            "consent": {"share_contact_details": True},
        }
        created = await gateway.http.post("/v1/enquiries", json=body)
        assert created.status_code == 201
        reference, token = created.json()["reference"], created.json()["access_token"]
        async with httpx.AsyncClient(base_url=gateway.http.base_url) as citizen:
            own = await citizen.get(f"/v1/enquiries/{reference}", params={"token": token})
            assert own.status_code == 200
            wrong = await citizen.get(f"/v1/enquiries/{reference}", params={"token": "x" * 40})
            assert wrong.status_code in (403, 404)

        async def three() -> list[dict[str, Any]] | None:
            found = gateway.process.events("http.request")
            requests = [e for e in found if e["route"] != "/readyz"]
            return requests if len(requests) == 3 else None

        post, read, refused = await eventually(three, within=5, what="three access log lines")
    assert post["method"] == "POST"
    assert post["route"] == "/v1/enquiries"
    assert post["status"] == 201
    assert post["client"].startswith("test-")
    assert post["request_id"] == created.headers["x-request-id"]
    assert read["route"] == "/v1/enquiries/{reference}"
    assert read["status"] == 200
    assert "client" not in read  # the citizen's token names no API client
    assert refused["status"] == wrong.status_code
    for entry in (post, read, refused):
        assert isinstance(entry["duration_ms"], float)
        assert entry["duration_ms"] > 0
    log = gateway.process.log_text()
    compact = reference.replace("-", "")
    personal = (CITIZEN["name"], CITIZEN["email"], CITIZEN["phone"], DESCRIPTION)
    for secret in (token, reference, compact, "x" * 40, *personal):
        assert secret not in log, f"the log shows {secret!r}"


async def test_a_request_id_is_on_every_line_of_its_request_and_comes_back(
    iap: Launcher,
) -> None:
    async with iap.serve("--no-worker") as gateway:
        sent = "front-end-7f3a9c"
        erased = await gateway.http.post(
            "/v1/privacy/erasure", json={"phone": "01865 731904"}, headers={"X-Request-ID": sent}
        )
        assert erased.status_code == 200
        request_id = erased.headers["x-request-id"]
        assert request_id != sent  # not trusted unless the settings say so

        async def its_lines() -> list[dict[str, Any]] | None:
            # The access line is written once the answer has gone, so it may come a moment
            # after the client has it.
            lines = [e for e in gateway.process.events() if e.get("request_id") == request_id]
            return lines if any(e["event"] == "http.request" for e in lines) else None

        lines = await eventually(its_lines, within=15, what="the request's access line")
    assert [e["event"] for e in lines] == ["privacy.erased", "http.request"]


async def test_a_trusted_front_ends_request_id_is_kept(iap: Launcher) -> None:
    async with iap.serve("--no-worker", IAP_API__TRUST_REQUEST_ID="true") as gateway:
        answered = await gateway.http.get("/v1/services", headers={"X-Request-ID": "lb-12ab34"})
        assert answered.headers["x-request-id"] == "lb-12ab34"
        odd = await gateway.http.get("/v1/services", headers={"X-Request-ID": "not an id; DROP"})
        assert odd.headers["x-request-id"] != "not an id; DROP"

        async def logged() -> bool:
            return any(e.get("request_id") == "lb-12ab34" for e in gateway.process.events())

        await eventually(logged, within=5, what="the front end's request id in the log")
