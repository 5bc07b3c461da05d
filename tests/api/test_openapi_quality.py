"""The OpenAPI document builds clients: readable unique operation ids, tags, summaries, and every
status and header an operation answers documented, checked against what the live app answers."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.api.openapi import OPERATION_ID_PATTERN, documented_routes
from app.api.problems import PROBLEM_JSON, PROBLEM_TYPES, problem_type
from app.clients.service import Scope
from app.core.reference import display, new_reference
from tests.conftest import bearer, enquiry_body, make_key

METHODS = {"get", "post", "put", "patch", "delete"}
PROBLEM_REF = "#/components/schemas/Problem"


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def label(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


def test_every_operation_has_a_readable_unique_id_a_described_tag_and_a_summary(app):
    document = app.openapi()
    described = {tag["name"] for tag in document["tags"] if tag.get("description")}
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)), "operation ids repeat"
    for method, path, operation in operations(document):
        where = label(method, path)
        assert re.match(OPERATION_ID_PATTERN, operation["operationId"]), where
        assert operation.get("tags"), where
        assert set(operation["tags"]) <= described, where
        assert operation.get("summary"), where
        assert operation.get("description"), where


def implied(method: str, operation: dict[str, Any], *, parsed_body: bool) -> set[str]:
    """What the document itself says an operation takes, and so the errors it must list; a
    body FastAPI parses answers bad JSON 400 (one read raw, as the inbound ones, 422)."""
    statuses: set[str] = set()
    security = operation.get("security")
    if security and {} not in security:  # a key is required: missing, bad, unscoped, over-used
        statuses |= {"401", "403", "429"}
    elif security:  # a key is optional, but a bad one is refused and every call is counted
        statuses |= {"401", "429"}
    if method in {"post", "put", "patch"}:
        statuses |= {"413", "415"}
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        statuses |= {"400", "422"} if parsed_body else {"422"}
    parameters = operation.get("parameters", [])
    if any(p["in"] == "path" for p in parameters):
        statuses |= {"404", "422"}
    if parameters:
        statuses.add("422")
    return statuses


def test_every_operation_lists_the_errors_what_it_takes_implies_as_problems(app):
    document = app.openapi()
    routes = documented_routes(app.routes)
    for method, path, operation in operations(document):
        where = label(method, path)
        responses = operation["responses"]
        parsed = routes[(method, path)].body_field is not None
        missing = implied(method, operation, parsed_body=parsed) - set(responses)
        assert not missing, f"{where} does not list {sorted(missing)}"
        for status, response in responses.items():
            if int(status) < 400:
                continue
            schema = response["content"][PROBLEM_JSON]["schema"]
            assert schema == {"$ref": PROBLEM_REF}, (where, status)
            types = response["x-problem-types"]
            assert types, (where, status)
            known = {problem_type(s): kind.status for s, kind in PROBLEM_TYPES.items()}
            assert all(known[t] == int(status) for t in types), (where, status, types)


def test_headers_servers_and_security_are_documented(app):
    document = app.openapi()
    assert document["servers"] == [{"url": app.state.iap.settings.public_url}]
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    for method, path, operation in operations(document):
        responses = operation["responses"]
        for status in ("429", "503"):
            if status in responses:
                assert "Retry-After" in responses[status]["headers"], label(method, path)
        parameters = operation.get("parameters", [])
        headers = {p["name"].lower() for p in parameters if p["in"] == "header"}
        if "idempotency-key" in headers:
            created = responses["201"]["headers"]
            assert {"Location", "Idempotent-Replayed"} <= set(created), label(method, path)
    create = document["paths"]["/v1/enquiries"]["post"]
    assert create["operationId"] == "createEnquiry"
    assert create["security"] == [{"ApiKey": []}]


def documented(app: FastAPI, method: str, path: str) -> dict[str, Any]:
    responses: dict[str, Any] = app.openapi()["paths"][path][method.lower()]["responses"]
    return responses


def check(app: FastAPI, method: str, path: str, answer: httpx.Response, status: int) -> None:
    """The answer has the status expected, the document lists it, with its type and headers."""
    assert answer.status_code == status, answer.text
    response = documented(app, method, path).get(str(status))
    assert response is not None, f"{method} {path} answered {status}, undocumented"
    if status >= 400:
        assert answer.headers["content-type"] == PROBLEM_JSON
        assert answer.json()["type"] in response["x-problem-types"]
    for header in response.get("headers", {}):
        if header != "Idempotent-Replayed" or "Idempotent-Replayed" in answer.headers:
            assert header in answer.headers or status == 429, (method, path, header)


async def test_what_the_live_app_answers_is_what_the_document_lists(app, anonymous, client):
    engine = app.state.iap.engine
    reader = bearer(await make_key(engine, Scope.enquiries_read))
    unknown = display(new_reference())
    post = "/v1/enquiries"

    check(app, "POST", post, await anonymous.post(post, json=enquiry_body()), 401)
    check(app, "POST", post, await anonymous.post(post, json={}, headers=reader), 403)
    check(app, "POST", post, await client.post(post, content=b"{", headers=_json()), 400)
    check(app, "POST", post, await client.post(post, json={"service_code": 1}), 422)
    plain = {"content-type": "text/plain"}
    check(app, "POST", post, await client.post(post, content=b"pothole", headers=plain), 415)
    big = b"[" + b" " * (app.state.iap.settings.api.max_body_bytes + 1) + b"]"
    check(app, "POST", post, await client.post(post, content=big, headers=_json()), 413)

    key = {"Idempotency-Key": uuid.uuid4().hex}
    created = await client.post(post, json=enquiry_body(), headers=key)
    check(app, "POST", post, created, 201)
    replayed = await client.post(post, json=enquiry_body(), headers=key)
    check(app, "POST", post, replayed, 201)
    assert replayed.headers["Idempotent-Replayed"] == "true"

    one = "/v1/enquiries/{reference}"
    check(app, "GET", one, await client.get(f"/v1/enquiries/{unknown}"), 404)
    check(app, "GET", one, await client.get("/v1/enquiries/NOT-A-REF"), 422)
    check(app, "GET", one, await anonymous.get(f"/v1/enquiries/{unknown}"), 401)
    claim = "/v1/triage/{reference}/claim"
    check(app, "POST", claim, await client.post(f"/v1/triage/{unknown}/claim"), 404)
    check(app, "POST", claim, await anonymous.post(f"/v1/triage/{unknown}/claim"), 401)
    hook = "/v1/webhooks/{subscription_id}"
    check(app, "GET", hook, await client.get(f"/v1/webhooks/{uuid.uuid4()}"), 404)
    someone = f"/v1/webhooks/{uuid.uuid4()}"
    check(app, "GET", hook, await anonymous.get(someone, headers=reader), 403)
    redrive = "/v1/dispatches/{dispatch_id}/redrive"
    check(app, "POST", redrive, await client.post(f"/v1/dispatches/{uuid.uuid4()}/redrive"), 404)
    check(app, "GET", "/v1/stuck", await anonymous.get("/v1/stuck", headers=reader), 403)
    problems = "/problems/{slug}"
    check(app, "GET", problems, await anonymous.get("/problems/no-such-type"), 404)
    check(app, "GET", "/v1/services", await anonymous.get("/v1/services"), 200)


@pytest.mark.parametrize("path", ["/v1/services", "/v1/organisations"])
async def test_a_bad_key_on_a_catalogue_route_is_a_documented_401(app, anonymous, path):
    answer = await anonymous.get(path, headers=bearer("iap_not-a-key"))
    check(app, "GET", path, answer, 401)


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}


def test_every_model_has_a_unique_name_and_title(app):
    # Client generators name a class by its schema's title: two of one title break them.
    schemas = app.openapi()["components"]["schemas"]
    titles = [model.get("title", name) for name, model in schemas.items()]
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)
    assert not [name for name in schemas if "__" in name]
