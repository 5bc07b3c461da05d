"""The OpenAPI document's conventions, in one place: operation ids, tags, and the error statuses
and headers each operation's dependencies imply, so a new route is documented right by default;
and the `webhooks` the gateway sends, from the event models (app.partners.events)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from app.api.auth import optional_caller
from app.api.middleware import BODY_METHODS
from app.api.problems import PROBLEM_JSON, PROBLEM_TYPES, problem_type
from app.api.ratelimit import RATE_LIMITED_RESPONSE
from app.core.vocabulary import EventType
from app.partners.events import event_models, example

# An operation id is the route's function name in lowerCamelCase; these names alone would be
# unclear in a generated client, so they are named here instead.
OPERATION_IDS: dict[str, str] = {
    "close": "closeEnquiry",
    "withdraw": "withdrawEnquiry",
    "reopen": "reopenEnquiry",
    "hand_on": "handOnEnquiry",
    "relocate": "relocateEnquiry",
    "claim_item": "claimTriageItem",
    "release_item": "releaseTriageItem",
    "subscribe": "createWebhook",
    "redrive_one": "redriveDispatch",
    "redrive_many": "redriveDispatches",
    "close_one": "closeDispatch",
    "redrive_webhook": "redriveWebhookDelivery",
    "read_stuck": "readStuckWork",
    "receive_webhook": "receiveInboundUpdate",
    "fetch_signed": "fetchSignedAttachment",
    "subject_access": "subjectAccessRequest",
    "erasure": "eraseCitizenData",
    "audit_log": "readAuditLog",
    "healthz": "checkHealth",
    "readyz": "checkReadiness",
}
OPERATION_ID_PATTERN = r"^[a-z][a-zA-Z0-9]*$"

TAGS: list[dict[str, str]] = [
    {"name": "enquiries", "description": "Submit an enquiry, read it back, list and search."},
    {
        "name": "conversation",
        "description": "After submission: the citizen adds information, withdraws or reopens; "
        "staff add notes.",
    },
    {"name": "triage", "description": "The triage desk: claim, hand on, relocate and close."},
    {"name": "parts", "description": "An organisation's share of an enquiry, and its updates."},
    {"name": "privacy", "description": "Subject access, erasure and the audit log."},
    {"name": "webhooks", "description": "Subscriptions to enquiry events, signed per secret."},
    {
        "name": "dead-letter desk",
        "description": "Deliveries that were given up: list, redrive or close them.",
    },
    {"name": "stuck work", "description": "Work that has not moved when it should have."},
    {
        "name": "inbound",
        "description": "Back-offices' updates, authenticated by their own signature or api_key.",
    },
    {"name": "catalogue", "description": "The services and organisations this gateway knows."},
    {"name": "attachments", "description": "Files attached to enquiries."},
    {"name": "alerts", "description": "Alert emails' unsubscribe links."},
    {"name": "meta", "description": "Health, readiness and the problem types' pages."},
]

# The one problem type behind each status a dependency implies.
_IMPLIED_DESCRIPTIONS: dict[int, str] = {
    400: "The body is not valid JSON",
    401: "No valid API key",
    403: "The API key lacks the scope this needs",
    404: "Nothing exists at this address",
    413: "The body is too large",
    415: "The body is not of a type this accepts",
    422: "A parameter or the body is not valid",
    429: "Too many requests from this API key or address",
}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_REPLAYED = {
    "description": "`true` when this is the stored answer to an earlier request with the same "
    "Idempotency-Key",
    "schema": {"type": "string", "enum": ["true"]},
}
_LOCATION = {"description": "The address of what was created", "schema": {"type": "string"}}


def operation_id(route: APIRoute) -> str:
    """A route's operationId: its function name in lowerCamelCase, unless named above."""
    if route.name in OPERATION_IDS:
        return OPERATION_IDS[route.name]
    head, *rest = route.name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def implied_statuses(route: APIRoute) -> set[int]:
    """The error statuses a route can answer because of what it depends on and takes."""
    calls = list(_calls(route.dependant))
    statuses: set[int] = set()
    if optional_caller in calls:  # a key is read: a bad one is 401, each call is counted
        statuses |= {401, 429}
    if any(getattr(call, "scopes", None) is not None for call in calls):
        statuses |= {401, 403}
    dependant = route.dependant
    if (
        route.methods or set()
    ) & BODY_METHODS:  # app.api.middleware.BodyGuard refuses any body first
        statuses |= {413, 415}
    if route.body_field is not None:
        statuses |= {400, 422}
    if dependant.path_params:
        statuses |= {404, 422}
    if dependant.query_params or dependant.header_params:
        statuses.add(422)
    return statuses


def _problem_types(status: int) -> list[str]:
    return sorted(problem_type(s) for s, kind in PROBLEM_TYPES.items() if kind.status == status)


def documented_routes(routes: Sequence[BaseRoute]) -> dict[tuple[str, str], APIRoute]:
    """The API's routes in the document, by (method, path) as the document names them."""
    found: dict[tuple[str, str], APIRoute] = {}
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.include_in_schema:
            for method in context.methods or ():
                found[(method.lower(), str(context.path_format))] = route
    return found


def unique_schema_names(schema: dict[str, Any]) -> dict[str, Any]:
    """The document with each model FastAPI named by its module (two models of one name) named
    by its module's last part instead, title too: client generators name classes by title."""
    schemas: dict[str, Any] = schema.get("components", {}).get("schemas", {})
    text = json.dumps(schema)
    for key in [k for k in schemas if "__" in k]:
        *modules, name = key.split("__")
        unique = modules[-1].removeprefix("schemas_").title().replace("_", "") + name
        text = text.replace(f'"#/components/schemas/{key}"', f'"#/components/schemas/{unique}"')
        text = text.replace(f'"{key}":', f'"{unique}":')
    renamed: dict[str, Any] = json.loads(text)
    for name, model in renamed.get("components", {}).get("schemas", {}).items():
        if name not in schemas:
            model["title"] = name
    return renamed


# Real answers of the live app, one per 2xx JSON answer (tests/api/test_openapi_examples.py).
ANSWER_EXAMPLES = Path(__file__).parent.parent / "data" / "openapi_examples.json"


def add_answer_examples(schema: dict[str, Any]) -> None:
    """Each answer's example: on its component schema, or on the answer itself when its schema
    is written inline (a list of services); after the schemas have their final names."""
    examples = json.loads(ANSWER_EXAMPLES.read_text(encoding="utf-8"))
    components = schema.get("components", {}).get("schemas", {})
    for name, answer in examples["schemas"].items():
        components[name]["examples"] = [answer]
    for path in schema["paths"].values():
        for operation in path.values():
            for code, response in operation.get("responses", {}).items():
                media = response.get("content", {}).get("application/json")
                if (
                    code.startswith("2")
                    and media
                    and operation["operationId"] in examples["operations"]
                ):
                    media["example"] = examples["operations"][operation["operationId"]]


def refine(schema: dict[str, Any], routes: Sequence[BaseRoute]) -> None:
    """Every operation's errors as problem+json with their types, and the headers it sends."""
    by_key = documented_routes(routes)
    for path_name, path in schema["paths"].items():
        for method, operation in path.items():
            route = by_key[(method, path_name)]
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status in implied_statuses(route):
                responses.setdefault(
                    str(status),
                    {"description": _IMPLIED_DESCRIPTIONS[status], "content": _PROBLEM_CONTENT},
                )
            for code, response in responses.items():
                _refine_response(int(code), response, route)
            operation["responses"] = dict(sorted(responses.items()))


def _refine_response(status: int, response: dict[str, Any], route: APIRoute) -> None:
    if status >= 400:
        response.setdefault("content", _PROBLEM_CONTENT)
        response["x-problem-types"] = _problem_types(status)
    if status == 429:
        response["headers"] = {**RATE_LIMITED_RESPONSE["headers"], **response.get("headers", {})}
    if status == 503:
        response["headers"] = {"Retry-After": RATE_LIMITED_RESPONSE["headers"]["Retry-After"]}
    takes_key = any(p.alias.lower() == "idempotency-key" for p in route.dependant.header_params)
    if takes_key and 200 <= status < 300:
        response.setdefault("headers", {})["Idempotent-Replayed"] = _REPLAYED
    # A creation that can be replayed (submitting an enquiry) says where its result is.
    if takes_key and status == 201:
        response["headers"]["Location"] = _LOCATION


# --- the partner event feed: what the gateway POSTs, as OpenAPI 3.1 `webhooks` -----------------

_WEBHOOK_HEADERS: list[dict[str, Any]] = [
    {
        "name": "webhook-id",
        "in": "header",
        "required": True,
        "description": "The message's id, the same on every attempt: keep the ids handled and "
        "skip a repeat",
        "schema": {"type": "string", "pattern": "^msg_[0-9a-f]{32}$"},
        "example": "msg_4b0c6f0e2d8a4b7f9a61c3e2b5d7f901",
    },
    {
        "name": "webhook-timestamp",
        "in": "header",
        "required": True,
        "description": "When this attempt was signed, in Unix seconds: refuse one more than "
        "five minutes from your clock",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "example": "1764152256",
    },
    {
        "name": "webhook-signature",
        "in": "header",
        "required": True,
        "description": "Space-separated `v1,<base64 HMAC-SHA256 of {webhook-id}.{webhook-"
        "timestamp}.{body}>` values, keyed with the subscription's secret (two during a "
        "rotation's overlap): one must match",
        "schema": {"type": "string"},
        "example": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    },
]
# What the sender does with each answer (app.partners.sender.classify).
_WEBHOOK_RESPONSES: dict[str, dict[str, str]] = {
    "2XX": {"description": "Accepted: the message is delivered. Answer quickly, work after."},
    "410": {"description": "Gone: the subscription is disabled and nothing more is sent to it"},
    "408": {"description": "Retried on the schedule"},
    "429": {"description": "Retried on the schedule, or after Retry-After if that is longer"},
    "5XX": {"description": "Retried on the schedule, or after Retry-After if that is longer"},
    "default": {
        "description": "Any other answer (a redirect, another 4xx): this message is given up "
        "at once; the subscription stays active"
    },
}


def add_webhooks(schema: dict[str, Any]) -> None:
    """The `webhooks` section: one POST per event type, its body's model among the components
    (so generated clients have the event models), signed per Standard Webhooks."""
    models = event_models()
    _, defs = models_json_schema(
        [(model, "validation") for model in models.values()],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model_schema in defs.get("$defs", {}).items():
        if schemas.setdefault(name, model_schema) != model_schema:
            raise ValueError(f"two different schemas are named {name}")
    schema["webhooks"] = {
        str(event): {"post": _webhook_operation(event, model.__name__)}
        for event, model in models.items()
    }


def _webhook_operation(event: EventType, name: str) -> dict[str, Any]:
    head, *rest = event.value.replace(".", "_").split("_")
    return {
        "operationId": head + "".join(word.capitalize() for word in rest) + "Event",
        "tags": ["webhooks"],
        "summary": f"The `{event}` event",
        "description": f"Sent when {event.when}. Every message is signed; see docs/webhooks.md.",
        "parameters": _WEBHOOK_HEADERS,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{name}"},
                    "example": example(event),
                }
            },
        },
        "responses": _WEBHOOK_RESPONSES,
    }
