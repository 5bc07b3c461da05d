"""The event catalogue: a versioned payload model and an example for every event type, the
OpenAPI document's `webhooks` made from them, and what the sender really POSTs validated
against them, end to end through a loopback endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from app.casework.stuck import write_daily_summary
from app.catalogue.status import Status
from app.core.vocabulary import EventType
from app.partners.events import EVENT_VERSION, event_model, event_models, example, model_name
from tests.conftest import bearer, enquiry_body, make_person
from tests.partners.test_webhooks import (
    Receiver,
    deliver_all,
    receiver,
    receiver_server,
    subscribe,
    verified,
)
from tests.privacy.test_privacy import ADA, SHARED

__all__ = ["receiver", "receiver_server"]  # fixtures, used by name

COUNTY = "oxfordshire-county"


def undocumented(model: BaseModel, at: str = "") -> list[str]:
    """Fields a message carried that its model does not name (models accept them, as a
    receiver must, but the gateway should send none)."""
    found = [f"{at}{name}" for name in model.__pydantic_extra__ or {}]
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found += undocumented(value, f"{at}{name}.")
    return found


def conforming(body: dict[str, Any]) -> BaseModel:
    """The body validated against its own type's model, with nothing undocumented in it."""
    parsed = event_model(EventType(body["type"])).model_validate(body)
    assert undocumented(parsed) == [], body
    return parsed


@pytest.mark.parametrize("event", list(EventType))
def test_every_event_type_has_a_model_whose_example_validates(event):
    model = event_model(event)
    assert model.__name__ == model_name(event)
    assert model.__name__.endswith(f"V{EVENT_VERSION}")
    message = example(event)
    assert (message["type"], message["version"]) == (event.value, EVENT_VERSION)
    conforming(message)
    assert model.model_json_schema()["examples"] == [message]


def test_model_names_are_unique_and_cover_every_event_type():
    models = event_models()
    assert list(models) == list(EventType)
    assert len({model.__name__ for model in models.values()}) == len(EventType)


def test_a_model_refuses_a_body_that_is_not_its_own():
    delivered = example(EventType.dispatch_delivered)
    with pytest.raises(ValidationError):  # another type
        event_model(EventType.enquiry_received).model_validate(delivered)
    with pytest.raises(ValidationError):  # a part's event names its organisation
        event_model(EventType.dispatch_delivered).model_validate(
            {**delivered, "data": {**delivered["data"], "organisation_id": None}}
        )
    with pytest.raises(ValidationError):  # another version
        event_model(EventType.dispatch_delivered).model_validate({**delivered, "version": 2})
    later = {**delivered, "data": {**delivered["data"], "priority": "high"}, "trace": "x"}
    assert undocumented(event_model(EventType.dispatch_delivered).model_validate(later)) == [
        "trace",
        "data.priority",
    ]  # a field added later is accepted, as the promise says a receiver must


def test_the_openapi_document_lists_every_event_as_a_webhook(app):
    document = app.openapi()
    assert document["openapi"].startswith("3.1")
    webhooks = document["webhooks"]
    assert set(webhooks) == {event.value for event in EventType}
    schemas = document["components"]["schemas"]
    for event in EventType:
        operation = webhooks[event.value]["post"]
        body = operation["requestBody"]["content"]["application/json"]
        name = body["schema"]["$ref"].removeprefix("#/components/schemas/")
        assert name == model_name(event)
        assert schemas[name]["properties"]["type"]["const"] == event.value
        data = schemas[name]["properties"]["data"]["$ref"].removeprefix("#/components/schemas/")
        assert data in schemas
        assert body["example"] == example(event)
        assert event.when in operation["description"]
        headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert {"2XX", "410", "5XX", "default"} <= set(operation["responses"])
    ids = [w["post"]["operationId"] for w in webhooks.values()]
    paths = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(set(ids) | set(paths)) == len(ids) + len(paths)
    refs = {ref for ref in _refs(document) if ref.startswith("#/components/schemas/")}
    assert {ref.removeprefix("#/components/schemas/") for ref in refs} <= set(schemas)


def _refs(node: Any) -> list[str]:
    """Every `$ref` in a document."""
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    if not isinstance(node, dict):
        return []
    own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
    return own + [ref for value in node.values() for ref in _refs(value)]


async def test_what_the_sender_really_sends_validates_against_each_types_model(
    client, app, anonymous, engine, receiver: Receiver, back_office
):
    staff = await subscribe(client, receiver, "staff")
    county = await subscribe(client, receiver, "county", organisation_id=COUNTY)
    created = await client.post("/v1/enquiries", json=enquiry_body(citizen=ADA, consent=SHARED))
    reference, token = created.json()["reference"], created.json()["access_token"]
    await deliver_all(app)
    officer = await make_person(app, "agent", organisation=COUNTY, name="Sam Highways")
    moved = await anonymous.post(
        f"/v1/enquiries/{reference}/parts/{COUNTY}/updates",
        json={"status": "in_progress", "description": "Inspector booked"},
        headers=bearer(officer),
    )
    assert moved.status_code == 200, moved.text
    added = await anonymous.post(
        f"/v1/enquiries/{reference}/information",
        params={"token": token},
        json={"text": "It is on the north side"},
    )
    assert added.status_code == 201, added.text
    await app.state.runtime.follow_ups.run_until_idle()
    assert (await client.post(f"/v1/webhooks/{staff['id']}/test")).status_code == 202
    state = app.state.iap
    daily = state.settings.stuck.model_copy(update={"summary_hour": 0})
    assert await write_daily_summary(engine=engine, catalogue=state.catalogue, settings=daily)
    back_office.behaviour["*"] = back_office.behaviour_for("x").model_copy(update={"down": True})
    # Its delivery fails for now, and the citizen withdraws it before it is made.
    failing = (await client.post("/v1/enquiries", json=enquiry_body())).json()
    await deliver_all(app)
    withdrawn = await anonymous.post(
        f"/v1/enquiries/{failing['reference']}/withdraw",
        params={"token": failing["access_token"]},
        json={"reason": "Filled in this morning"},
    )
    assert withdrawn.status_code == 201, withdrawn.text
    erased = await client.post("/v1/privacy/erasure", json={"email": ADA["email"]})
    assert erased.status_code == 200, erased.text
    await deliver_all(app)

    feeds = {"staff": staff["secret"], "county": county["secret"]}
    seen: dict[str, set[str]] = {}
    for name, secret in feeds.items():
        bodies = [verified(message, secret) for message in receiver.to(name)]
        for body in bodies:
            conforming(body)
        seen[name] = {body["type"] for body in bodies}
        assert json.dumps(bodies).count(ADA["email"]) == 0
    assert {
        "enquiry.received",
        "dispatch.delivered",
        "enquiry.dispatched",
        "status.updated",
        "enquiry.in_progress",
        "enquiry.information_added",
        "follow_up.delivered",
        "ping",
        "work.stuck_summary",
        "dispatch.retry",
        "enquiry.withdrawn",
        "privacy.erasure_requested",
        "enquiry.anonymised",
    } <= seen["staff"], seen["staff"]
    assert {"enquiry.received", "status.updated", "work.stuck_summary"} <= seen["county"]
    assert "ping" not in seen["county"]
    [update] = [
        verified(m, staff["secret"])
        for m in receiver.to("staff")
        if '"status.updated"' in m["body"]
    ]
    assert update["data"]["status"] == Status.in_progress
