"""The OpenAPI document's examples are real answers: every JSON request body and every 2xx JSON
answer has one, each fits its own schema, and each request example, sent to the live app on
the test database (with a seeded enquiry or subscription where the path names one), is answered
with the documented status and a body that fits the documented schema."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from standardwebhooks import Webhook

from app.core.models import utcnow
from tests.casework.test_deliveries import dead_county_enquiries
from tests.conftest import enquiry_body
from tests.updates.test_inbound import COUNTY_SECRET

METHODS = {"get", "post", "put", "patch", "delete"}
JSON = "application/json"
# The reference the examples are written with; a replay swaps in a seeded enquiry's.
EXAMPLE_REFERENCE = "K7Q-M4X-PB6"
RECOVER_SINCE = "2026-12-01T08:00:00Z"  # RecoverIn's example


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        *_, name = schema["$ref"].split("/")
        schema = document["components"]["schemas"][name]
    return schema


def answer_example(document: dict[str, Any], operation: dict[str, Any]) -> Any:
    """The example of the operation's 2xx JSON answer: on the answer, or on its schema."""
    [response] = [r for s, r in operation["responses"].items() if s[0] == "2"]
    media = response.get("content", {}).get(JSON, {})
    return media["example"] if "example" in media else example_of(document, media["schema"])


def example_of(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The schema's first example, looking through a reference and a nullable body's anyOf."""
    schema = resolved(document, schema)
    if "examples" in schema:
        return schema["examples"][0]
    for branch in schema.get("anyOf", []):
        if branch.get("type") != "null" and "examples" in resolved(document, branch):
            return resolved(document, branch)["examples"][0]
    return None


def validator(document: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of `schema` whose #/components/... references resolve in the document."""
    return Draft202012Validator({**schema, "components": document["components"]})


def request_schema(operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {})
    schema: dict[str, Any] | None = content.get(JSON, {}).get("schema")
    return schema


def success(operation: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """The operation's one 2xx status, and its JSON schema (None: no JSON body)."""
    [(status, response)] = [(s, r) for s, r in operation["responses"].items() if s[0] == "2"]
    return int(status), response.get("content", {}).get(JSON, {}).get("schema")


def test_every_json_body_and_every_success_answer_has_an_example_that_fits_its_schema(app):
    document = app.openapi()
    missing: list[str] = []
    checked = 0
    for method, path, operation in operations(document):
        _, answer_schema = success(operation)
        for what, schema in (("request", request_schema(operation)), ("answer", answer_schema)):
            if schema is None:
                continue
            if what == "request":
                example = example_of(document, schema)
            else:
                example = answer_example(document, operation)
            if example is None:
                missing.append(f"{method.upper()} {path} {what}")
                continue
            errors = [e.message for e in validator(document, schema).iter_errors(example)]
            assert not errors, (method, path, what, errors)
            checked += 1
    assert not missing, f"no example: {missing}"
    assert checked >= 50  # 17 request bodies and 39 answers when this was written


def _signed(raw: str) -> dict[str, str]:
    at = datetime.now(UTC)
    return {
        "content-type": JSON,
        "webhook-id": "msg_example",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(COUNTY_SECRET).sign("msg_example", at, raw),
    }


Seed = Callable[[], Awaitable[dict[str, str]]]


@pytest.fixture
def seeds(app: FastAPI, client: httpx.AsyncClient, back_office: Any) -> dict[str, Seed]:
    """What each operation's path needs, made fresh: by operation id, its path parameters."""
    dispatcher = app.state.runtime.dispatcher

    async def submitted(**change: Any) -> str:
        created = await client.post("/v1/enquiries", json=enquiry_body(**change))
        assert created.status_code == 201, created.text
        return str(created.json()["reference"])

    async def enquiry() -> dict[str, str]:
        return {"reference": await submitted()}

    async def at_triage() -> dict[str, str]:
        # No location: the router cannot choose a district, so the desk holds it.
        return {
            "reference": await submitted(service_code="council-tax", location=None, attributes={})
        }

    async def closed() -> dict[str, str]:
        parameters = await at_triage()
        note = {"outcome": "first_contact", "note": "Told the caller how to pay online"}
        answer = await client.post(f"/v1/enquiries/{parameters['reference']}/close", json=note)
        assert answer.status_code == 200, answer.text
        return parameters

    async def delivered() -> dict[str, str]:
        reference = await submitted()
        await dispatcher.run_until_idle()
        return {"reference": reference, "organisation_id": "oxfordshire-county"}

    async def subscription() -> dict[str, str]:
        body = {"url": "https://partner.example.org/iap/events", "events": ["enquiry.*"]}
        created = await client.post("/v1/webhooks", json=body)
        assert created.status_code == 201, created.text
        return {"subscription_id": str(created.json()["id"])}

    async def given_up() -> dict[str, str]:
        [reference] = await dead_county_enquiries(app, client, back_office)
        listed = (await client.get("/v1/dispatches", params={"state": "dead"})).json()["items"]
        [dispatch] = [d for d in listed if d["reference"] == reference]
        return {"dispatch_id": dispatch["id"]}

    return {
        "addInformation": enquiry,
        "addNote": enquiry,
        "withdrawEnquiry": enquiry,
        "reopenEnquiry": closed,
        "handOnEnquiry": at_triage,
        "relocateEnquiry": at_triage,
        "closeEnquiry": at_triage,
        "movePart": delivered,
        "receiveInboundUpdate": lambda: _organisation(delivered),
        "updateWebhook": subscription,
        "rotateWebhookSecret": subscription,
        "recoverWebhook": subscription,
        "closeDispatch": given_up,
    }


async def _organisation(delivered: Seed) -> dict[str, str]:
    return {**await delivered(), "organisation": "oxfordshire-county"}


async def test_every_request_example_is_answered_as_documented(app, client, seeds):
    document = app.openapi()
    replayed = []
    for method, path, operation in operations(document):
        schema = request_schema(operation)
        if schema is None:
            continue
        parameters = await seeds[operation["operationId"]]() if "{" in path else {}
        reference = parameters.get("reference", EXAMPLE_REFERENCE)
        raw = json.dumps(example_of(document, schema)).replace(EXAMPLE_REFERENCE, reference)
        # A recovery window is at most 14 days back from now: the example's day ages out.
        raw = raw.replace(RECOVER_SINCE, (utcnow() - timedelta(hours=1)).isoformat())
        headers = {"content-type": JSON}
        if operation["operationId"] == "receiveInboundUpdate":  # signed by the organisation
            headers = _signed(raw)
        url = path.format(**parameters)
        answer = await client.request(method.upper(), url, content=raw, headers=headers)
        status, answer_schema = success(operation)
        assert answer.status_code == status, (method, path, answer.text)
        if answer_schema is not None:
            errors = [
                e.message for e in validator(document, answer_schema).iter_errors(answer.json())
            ]
            assert not errors, (method, path, errors)
        replayed.append(operation["operationId"])
    assert len(replayed) >= 17, replayed
