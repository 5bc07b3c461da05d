"""The partner event feed: subscriptions, and timeline events POSTed to a real loopback
endpoint, signed per Standard Webhooks, each once, retried, and stopped by 410 Gone."""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, text
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.clients.service import Scope
from app.core.crypto import DEVELOPMENT_KEY, Sealer, new_key
from app.core.models import event_table, utcnow, webhook_subscription_table
from app.main import create_app
from app.partners.sender import feed
from app.partners.subscriptions import reseal_secrets
from tests.conftest import bearer, enquiry_body, free_port, make_key, serving, started
from tests.core.test_outbound import PUBLIC, FakeResolver
from tests.privacy.test_privacy import ADA, SHARED, asb
from tests.sandbox.conftest import eventually
from tests.test_production import RESOLVER, config_dir, organisations, production_settings


class Receiver:
    """A partner's endpoint: records each POST, and answers with the statuses queued for it."""

    def __init__(self) -> None:
        self.url = ""
        self.lock = threading.Lock()
        self.received: list[dict[str, Any]] = []
        self.answers: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.app = Starlette(routes=[Route("/hooks/{name}", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = (await request.body()).decode()
        with self.lock:
            self.received.append({"name": name, "headers": dict(request.headers), "body": body})
            queued = self.answers.get(name) or [(200, {})]
            status, headers = queued.pop(0) if len(queued) > 1 else queued[0]
        return Response(status_code=status, headers=headers)

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.answers.clear()

    def to(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if r["name"] == name]


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    with serving(Receiver()) as receiver:
        yield receiver


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    receiver_server.reset()
    return receiver_server


def hook_url(receiver: Receiver, name: str) -> str:
    return f"{receiver.url}/hooks/{name}"


async def subscribe(http: Any, receiver: Receiver, name: str, **body: Any) -> dict[str, Any]:
    answer = await http.post(
        "/v1/webhooks", json={"url": hook_url(receiver, name), "events": ["*"], **body}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def verified(message: dict[str, Any], secret: str) -> dict[str, Any]:
    """The message's body, once its Standard Webhooks signature has been checked."""
    parsed: dict[str, Any] = Webhook(secret).verify(message["body"], message["headers"])
    return parsed


async def deliver_all(app: Any) -> None:
    await app.state.runtime.dispatcher.run_until_idle()
    await app.state.runtime.webhooks.run_until_idle()


async def test_a_subscription_is_made_listed_read_and_removed(client, receiver):
    made = await subscribe(client, receiver, "crud", events=["enquiry.*", "enquiry.*"])
    secret = made.pop("secret")
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert made["events"] == ["enquiry.*"]
    assert made["state"] == "active"
    listed = (await client.get("/v1/webhooks")).json()["items"]
    assert listed == [made]
    read = (await client.get(f"/v1/webhooks/{made['id']}")).json()
    assert read == {**made, "deliveries": []}
    assert "secret" not in str(listed) + str(read)

    assert (await client.delete(f"/v1/webhooks/{made['id']}")).status_code == 204
    gone = await client.get(f"/v1/webhooks/{made['id']}")
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"
    assert (await client.delete(f"/v1/webhooks/{made['id']}")).status_code == 404


async def test_a_client_manages_only_its_own_subscriptions_and_admin_every_one(
    client, anonymous, engine, receiver
):
    partner = bearer(await make_key(engine, Scope.webhooks_manage))
    other = bearer(await make_key(engine, Scope.webhooks_manage))
    created = await anonymous.post(
        "/v1/webhooks", json={"url": hook_url(receiver, "p"), "events": ["*"]}, headers=partner
    )
    mine = created.json()
    assert created.status_code == 201
    path = f"/v1/webhooks/{mine['id']}"

    assert (await anonymous.get("/v1/webhooks", headers=other)).json()["items"] == []
    assert (await anonymous.get(path, headers=other)).status_code == 404
    assert (await anonymous.delete(path, headers=other)).status_code == 404
    assert [s["id"] for s in (await client.get("/v1/webhooks")).json()["items"]] == [mine["id"]]
    assert (await anonymous.get(path, headers=partner)).status_code == 200
    assert (await client.delete(path)).status_code == 204


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"url": "ftp://127.0.0.1/x", "events": ["*"]}, "#/url"),
        ({"url": "https://user:pw@127.0.0.1/x", "events": ["*"]}, "#/url"),
        ({"url": "https://127.0.0.1/x", "events": []}, "#/events"),
        ({"url": "https://127.0.0.1/x", "events": ["enquriy.*"]}, "#/events"),
        ({"url": "https://127.0.0.1/x", "events": ["enquiry.*.received"]}, "#/events"),
        ({"url": "https://127.0.0.1/x", "events": ["*"], "organisation_id": "mi5"}, None),
        ({"url": "https://127.0.0.1/x", "events": ["*"], "secret": "mine"}, "#/secret"),
    ],
)
async def test_a_bad_subscription_is_refused_with_the_field_named(client, body, pointer):
    answer = await client.post("/v1/webhooks", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    pointers = [e.get("pointer") for e in answer.json()["errors"]]
    assert (pointer or "#/organisation_id") in pointers


async def test_events_arrive_signed_and_each_exactly_once_even_when_rescanned(
    client, app, engine, receiver, back_office
):
    before = (await client.post("/v1/enquiries", json=enquiry_body())).json()["reference"]
    await deliver_all(app)  # all of its events come before the subscription
    made = await subscribe(client, receiver, "all")
    created = await client.post("/v1/enquiries", json=enquiry_body(citizen=ADA, consent=SHARED))
    reference = created.json()["reference"]
    await deliver_all(app)
    for _ in range(3):  # each scan re-reads the overlap window: nothing is sent twice
        await app.state.runtime.webhooks.run_until_idle()

    messages = receiver.to("all")
    bodies = {b["type"]: b for b in (verified(m, made["secret"]) for m in messages)}
    assert len(messages) == len(bodies) == 3  # ordering between events is not promised
    assert set(bodies) == {"enquiry.received", "dispatch.delivered", "enquiry.dispatched"}
    assert {b["data"]["reference"] for b in bodies.values()} == {reference}
    assert before not in str(messages)
    ids = sorted(m["headers"]["webhook-id"] for m in messages)
    assert ids == sorted(f"msg_{uuid.UUID(b['data']['event_id']).hex}" for b in bodies.values())
    delivered = bodies["dispatch.delivered"]["data"]
    assert delivered["organisation_id"] == "oxfordshire-county"
    assert delivered["enquiry_status"] == "dispatched"
    assert delivered["dispatch_id"]
    assert bodies["enquiry.dispatched"]["data"]["status"] == "dispatched"
    assert set(bodies["enquiry.received"]) == {"type", "version", "timestamp", "data"}
    for value in (ADA["name"], ADA["email"], "900123"):
        assert value not in str(messages)
    read = (await client.get(f"/v1/webhooks/{made['id']}")).json()
    assert sorted(
        (d["event_type"], d["state"], d["attempts"], d["last_status"]) for d in read["deliveries"]
    ) == sorted((kind, "delivered", 1, 200) for kind in bodies)


async def test_an_event_committed_late_with_an_earlier_time_is_still_sent(
    client, app, engine, receiver
):
    made = await subscribe(client, receiver, "late", events=["enquiry.received", "status.*"])
    reference = (await client.post("/v1/enquiries", json=enquiry_body())).json()["reference"]
    await app.state.runtime.webhooks.run_until_idle()
    async with engine.begin() as conn:
        enquiry_id = await conn.scalar(select(event_table.c.enquiry_id))
        subscribed, fed_until = (
            await conn.execute(
                select(
                    webhook_subscription_table.c.created_at, webhook_subscription_table.c.fed_until
                )
            )
        ).one()
        late = subscribed + (fed_until - subscribed) / 2  # before the high-water mark
        assert late < fed_until
        await conn.execute(
            event_table.insert(),
            {
                "id": uuid.uuid4(),
                "enquiry_id": enquiry_id,
                "type": "status.updated",
                "status": "in_progress",
                "detail": "Crew assigned",
                "created_at": late,
            },
        )
    assert await feed(engine, app.state.iap.settings.webhooks) == 1
    assert await feed(engine, app.state.iap.settings.webhooks) == 0
    await app.state.runtime.webhooks.run_until_idle()
    bodies = [verified(m, made["secret"]) for m in receiver.to("late")]
    assert [(b["type"], b["data"]["reference"]) for b in bodies] == [
        ("enquiry.received", reference),
        ("status.updated", reference),
    ]
    assert bodies[1]["data"]["status"] == "in_progress"


async def test_feeders_scanning_at_once_queue_each_event_once(client, app, engine, receiver):
    await subscribe(client, receiver, "racing", events=["enquiry.received"])
    for _ in range(3):
        await client.post("/v1/enquiries", json=enquiry_body())
    settings = app.state.iap.settings.webhooks
    made = await asyncio.gather(*(feed(engine, settings) for _ in range(4)))
    assert sum(made) == 3  # whoever lost a race inserted nothing
    async with engine.connect() as conn:
        queued = await conn.scalar(text("SELECT count(*) FROM webhook_delivery"))
    assert queued == 3


async def test_an_organisations_subscription_hears_only_of_its_own_enquiries(
    client, app, anonymous, engine, receiver, back_office
):
    city = await subscribe(client, receiver, "city", organisation_id="oxford-city")
    partner_key = await make_key(engine, Scope.webhooks_manage, Scope.enquiries_submit)
    partner = await anonymous.post(
        "/v1/webhooks",
        json={"url": hook_url(receiver, "partner"), "events": ["enquiry.*"]},
        headers=bearer(partner_key),
    )
    noise = (await client.post("/v1/enquiries", json=enquiry_body(**asb()))).json()["reference"]
    pothole = (await client.post("/v1/enquiries", json=enquiry_body())).json()["reference"]
    own = await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=bearer(partner_key))
    await deliver_all(app)

    bodies = [verified(m, city["secret"]) for m in receiver.to("city")]
    assert {b["data"]["reference"] for b in bodies} == {noise}
    assert pothole not in str(bodies)
    delivered = [b["data"]["organisation_id"] for b in bodies if b["type"] == "dispatch.delivered"]
    assert delivered == ["oxford-city"]  # not the police's part in it
    assert "enquiry.dispatched" in [b["type"] for b in bodies]
    theirs = [verified(m, partner.json()["secret"]) for m in receiver.to("partner")]
    assert {b["data"]["reference"] for b in theirs} == {own.json()["reference"]}
    assert {b["type"] for b in theirs} == {"enquiry.received", "enquiry.dispatched"}


async def test_each_organisations_feed_carries_only_its_own_parts_of_a_shared_enquiry(
    client, app, engine, receiver, back_office
):
    # Anti-social behaviour goes to the district council and the police: two parts.
    feeds = {
        organisation: await subscribe(client, receiver, organisation, organisation_id=organisation)
        for organisation in ("oxford-city", "thames-valley-police")
    }
    await client.post("/v1/enquiries", json=enquiry_body(**asb()))
    await deliver_all(app)
    async with engine.connect() as conn:
        owners = dict((await conn.execute(text("SELECT id, organisation_id FROM dispatch"))).all())
    owner_of = {str(uuid.UUID(str(k))): v for k, v in owners.items()}
    for organisation, subscription in feeds.items():
        bodies = [verified(m, subscription["secret"]) for m in receiver.to(organisation)]
        data = [b["data"] for b in bodies]
        assert {d["organisation_id"] for d in data} <= {None, organisation}, data
        dispatches = {d["dispatch_id"] for d in data} - {None}
        assert {owner_of[d] for d in dispatches} == {organisation}, data
        other = ({"oxford-city", "thames-valley-police"} - {organisation}).pop()
        # Nothing says who else was sent the enquiry: enquiry.received keeps only its own line.
        assert other not in str(bodies)
        [received] = [b for b in bodies if b["type"] == "enquiry.received"]
        assert received["data"]["detail"].startswith(f"{organisation}: ")
        # The enquiry as a whole still reaches both, naming neither part.
        [dispatched] = [b for b in bodies if b["type"] == "enquiry.dispatched"]
        assert (dispatched["data"]["organisation_id"], dispatched["data"]["dispatch_id"]) == (
            None,
            None,
        )


async def test_a_failing_endpoint_is_retried_with_the_same_webhook_id(client, app, receiver):
    made = await subscribe(client, receiver, "flaky", events=["enquiry.received"])
    receiver.answers["flaky"] = [(503, {}), (200, {})]
    await client.post("/v1/enquiries", json=enquiry_body())
    await app.state.runtime.webhooks.run_until_idle()

    first, second = receiver.to("flaky")
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert verified(first, made["secret"]) == verified(second, made["secret"])
    [delivery] = (await client.get(f"/v1/webhooks/{made['id']}")).json()["deliveries"]
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "delivered",
        2,
        200,
    )
    assert delivery["last_error"] is None


async def test_retry_after_is_honoured(client, app, receiver):
    made = await subscribe(client, receiver, "busy", events=["enquiry.received"])
    receiver.answers["busy"] = [(429, {"Retry-After": "120"})]
    await client.post("/v1/enquiries", json=enquiry_body())
    await app.state.runtime.webhooks.run_until_idle()
    [delivery] = (await client.get(f"/v1/webhooks/{made['id']}")).json()["deliveries"]
    assert (delivery["state"], delivery["last_status"]) == ("pending", 429)
    assert delivery["last_error"] == "HTTP 429 from 127.0.0.1"
    due = datetime.fromisoformat(delivery["next_attempt_at"])
    assert due > utcnow() + timedelta(seconds=110)
    assert len(receiver.to("busy")) == 1


async def test_an_endpoint_that_stays_down_is_given_up_on(client, app):
    closed = f"http://127.0.0.1:{free_port()}/events"
    made = (
        await client.post("/v1/webhooks", json={"url": closed, "events": ["enquiry.received"]})
    ).json()
    await client.post("/v1/enquiries", json=enquiry_body())
    await app.state.runtime.webhooks.run_until_idle()
    [delivery] = (await client.get(f"/v1/webhooks/{made['id']}")).json()["deliveries"]
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == ("dead", 3, None)
    assert delivery["last_error"].startswith("gave up after 3 attempts: ConnectError")


async def test_410_disables_the_subscription_and_other_refusals_are_not_retried(
    client, app, receiver, back_office
):
    gone = await subscribe(client, receiver, "gone", events=["enquiry.received"])
    refusing = await subscribe(client, receiver, "refusing", events=["enquiry.received"])
    receiver.answers["gone"] = [(410, {})]
    receiver.answers["refusing"] = [(400, {})]
    await client.post("/v1/enquiries", json=enquiry_body())
    await deliver_all(app)
    await client.post("/v1/enquiries", json=enquiry_body())
    await deliver_all(app)

    assert len(receiver.to("gone")) == 1  # nothing more after 410
    read = (await client.get(f"/v1/webhooks/{gone['id']}")).json()
    assert read["state"] == "disabled"
    assert "410 Gone" in read["disabled_reason"]
    [delivery] = read["deliveries"]  # the second enquiry was not even queued for it
    assert (delivery["state"], delivery["last_status"]) == ("dead", 410)
    assert len(receiver.to("refusing")) == 2  # one per enquiry, neither retried
    refused = (await client.get(f"/v1/webhooks/{refusing['id']}")).json()
    assert refused["state"] == "active"
    assert [(d["state"], d["attempts"], d["last_status"]) for d in refused["deliveries"]] == [
        ("dead", 1, 400)
    ] * 2


async def test_erasure_reaches_the_organisation_that_received_the_enquiry(
    client, app, receiver, back_office
):
    city = await subscribe(
        client,
        receiver,
        "city-erasure",
        events=["privacy.erasure_requested"],
        organisation_id="oxford-city",
    )
    created = await client.post(
        "/v1/enquiries", json=enquiry_body(citizen=ADA, consent=SHARED, **asb())
    )
    reference = created.json()["reference"]
    await deliver_all(app)
    enquiry = (await client.get(f"/v1/enquiries/{reference}")).json()
    [remote] = [
        d["remote_reference"]
        for d in enquiry["destinations"]
        if d["organisation_id"] == "oxford-city"
    ]
    erased = await client.post("/v1/privacy/erasure", json={"email": ADA["email"]})
    assert erased.status_code == 200
    await app.state.runtime.webhooks.run_until_idle()

    [message] = receiver.to("city-erasure")
    body = verified(message, city["secret"])
    assert body["type"] == "privacy.erasure_requested"
    assert body["data"]["reference"] == reference
    assert body["data"]["organisation_id"] == "oxford-city"
    assert f"your reference {remote}" in body["data"]["detail"]
    for value in (ADA["name"], ADA["email"], "900123", "Loud parties"):
        assert value not in message["body"]


async def test_the_secret_is_stored_only_sealed(client, engine, receiver):
    made = await subscribe(client, receiver, "sealed")
    async with engine.connect() as conn:
        rows = [
            repr(tuple(r)) for r in await conn.execute(text("SELECT * FROM webhook_subscription"))
        ]
    assert len(rows) == 1
    assert "whsec_" not in rows[0]
    assert made["secret"].removeprefix("whsec_") not in rows[0]


async def test_the_worker_feeds_and_sends_by_itself(settings, receiver, back_office):
    application = create_app(settings)
    async with started(application, Scope.admin) as http:
        made = await subscribe(http, receiver, "worker", events=["enquiry.dispatched"])
        reference = (await http.post("/v1/enquiries", json=enquiry_body())).json()["reference"]
        [message] = await eventually(lambda: receiver.to("worker"), within=10, what="the webhook")
    body = verified(message, made["secret"])
    assert (body["type"], body["data"]["reference"]) == ("enquiry.dispatched", reference)


async def test_production_refuses_an_internal_endpoint_at_registration(database_url, tmp_path):
    resolver = FakeResolver(
        {**RESOLVER, "partner.example.net": [PUBLIC], "intranet.example.net": ["10.1.2.3"]}
    )
    settings = production_settings(database_url, config_dir(tmp_path, organisations()))
    application = create_app(settings, run_dispatcher=False, resolver=resolver)
    async with started(application, Scope.webhooks_manage, base_url="https://iap.test") as http:
        for url in (
            "https://127.0.0.1:8443/events",
            "https://intranet.example.net/events",
            "http://partner.example.net/events",
        ):
            refused = await http.post("/v1/webhooks", json={"url": url, "events": ["*"]})
            assert refused.status_code == 422, url
            [error] = refused.json()["errors"]
            assert error["pointer"] == "#/url"
        public = "https://partner.example.net/events"
        made = await http.post("/v1/webhooks", json={"url": public, "events": ["*"]})
        assert made.status_code == 201, made.text


async def test_rotating_keys_reseals_the_secrets_so_the_old_key_can_go(client, engine, receiver):
    made = await subscribe(client, receiver, "rotated")
    newest = new_key()
    both = Sealer([SecretStr(newest), SecretStr(DEVELOPMENT_KEY)], SecretStr("lookup"))
    assert await reseal_secrets(engine=engine, sealer=both) == 1
    async with engine.connect() as conn:
        sealed = await conn.scalar(select(webhook_subscription_table.c.secret_sealed))
    only_newest = Sealer([SecretStr(newest)], SecretStr("lookup"))
    assert only_newest.open(sealed) == {"secret": made["secret"]}


async def test_only_an_admin_key_may_subscribe_to_an_organisations_events(anonymous, engine):
    partner = await make_key(engine, Scope.webhooks_manage)
    body = {"url": "https://127.0.0.1/hook", "events": ["*"], "organisation_id": "oxford-city"}
    refused = await anonymous.post("/v1/webhooks", json=body, headers=bearer(partner))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    listed = await anonymous.get("/v1/webhooks", headers=bearer(partner))
    assert listed.status_code == 200
    assert "oxford-city" not in listed.text  # nothing was made


async def test_back_office_errors_are_shown_to_staff_only(
    client, app, anonymous, engine, receiver, back_office
):
    back_office.behaviour["*"] = back_office.behaviour_for("x").model_copy(update={"down": True})
    partner_key = await make_key(
        engine, Scope.enquiries_submit, Scope.enquiries_read, Scope.webhooks_manage
    )
    partner = bearer(partner_key)
    staff_feed = await subscribe(client, receiver, "staff")
    partner_feed = await anonymous.post(
        "/v1/webhooks",
        json={"url": hook_url(receiver, "partner"), "events": ["*"]},
        headers=partner,
    )
    created = await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=partner)
    reference, token = created.json()["reference"], created.json()["access_token"]
    await deliver_all(app)

    def errors(enquiry: dict[str, Any]) -> list[str]:
        return [d["last_error"] for d in enquiry["destinations"]] + [
            e["detail"] for e in enquiry["timeline"] if e["type"].startswith("dispatch.")
        ]

    agent = await make_key(engine, Scope.enquiries_read_all)
    for_staff = (await anonymous.get(f"/v1/enquiries/{reference}", headers=bearer(agent))).json()
    assert all("HTTP 503" in text for text in errors(for_staff)), errors(for_staff)
    for query in ({"headers": partner}, {"params": {"token": token}}):
        shown = errors((await anonymous.get(f"/v1/enquiries/{reference}", **query)).json())
        assert len(shown) == len(errors(for_staff)), shown
        assert not any("HTTP" in text or "127.0.0.1" in text for text in shown), shown
        assert {
            "it will be retried" in t or "the contact centre can see why" in t for t in shown
        } == {True}, shown
    staff_bodies = [verified(m, staff_feed["secret"]) for m in receiver.to("staff")]
    assert any("HTTP 503" in (b["data"]["detail"] or "") for b in staff_bodies)
    partner_bodies = [verified(m, partner_feed.json()["secret"]) for m in receiver.to("partner")]
    retried = [b["data"]["detail"] for b in partner_bodies if b["type"].startswith("dispatch.")]
    assert retried, partner_bodies
    assert not any("HTTP" in text for text in retried), retried
