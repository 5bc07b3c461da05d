"""Changing a subscription: PATCH, re-enabling after 410, and rotating its secret with an
overlap window, each seen at a real loopback endpoint verified by `standardwebhooks`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from standardwebhooks.webhooks import WebhookVerificationError

from app.clients.service import Scope
from app.core.crypto import DEVELOPMENT_KEY, Sealer, new_key
from app.core.models import audit_table, utcnow, webhook_subscription_table
from app.main import create_app
from app.partners.subscriptions import reseal_secrets
from tests.conftest import bearer, enquiry_body, make_key, started
from tests.core.test_outbound import PUBLIC, FakeResolver
from tests.partners.test_webhooks import (
    Receiver,
    deliver_all,
    hook_url,
    receiver,
    receiver_server,
    subscribe,
    verified,
)
from tests.test_production import RESOLVER, config_dir, organisations, production_settings

__all__ = ["receiver", "receiver_server"]  # fixtures, shared with the feed's tests
s = webhook_subscription_table.c
IN = "10.1.2.3"  # an intranet address: never called in production


def refused_by(message: dict[str, Any], secret: str) -> bool:
    """Whether standardwebhooks refuses the message's signature for this secret."""
    try:
        verified(message, secret)
    except WebhookVerificationError:
        return True
    return False


async def stored(engine: Any, subscription_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(webhook_subscription_table).where(s.id == uuid.UUID(subscription_id))
            )
        ).mappings()
        return dict(row.one())


async def enquire_and_deliver(client: Any, app: Any) -> None:
    answer = await client.post("/v1/enquiries", json=enquiry_body())
    assert answer.status_code == 201, answer.text
    await deliver_all(app)


async def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new(
    client, app, engine, receiver
):
    made = await subscribe(client, receiver, "rotating", events=["enquiry.received"])
    old = made["secret"]
    answer = await client.post(f"/v1/webhooks/{made['id']}/rotate-secret")
    assert answer.status_code == 200, answer.text
    rotated = answer.json()
    new = rotated["secret"]
    assert new.startswith("whsec_")
    assert new != old
    until = datetime.fromisoformat(rotated["previous_secret_until"])
    assert abs(until - (utcnow() + timedelta(hours=24))) < timedelta(minutes=1)
    assert new not in str((await client.get(f"/v1/webhooks/{made['id']}")).json())

    await enquire_and_deliver(client, app)
    [during] = receiver.to("rotating")
    assert len(during["headers"]["webhook-signature"].split(" ")) == 2
    assert verified(during, old)["type"] == "enquiry.received"
    assert verified(during, new)["type"] == "enquiry.received"

    async with engine.begin() as conn:  # a day passes: the overlap is over
        await conn.execute(
            update(webhook_subscription_table)
            .where(s.id == uuid.UUID(made["id"]))
            .values(previous_secret_until=utcnow() - timedelta(seconds=1))
        )
    await enquire_and_deliver(client, app)
    after = receiver.to("rotating")[1]
    assert len(after["headers"]["webhook-signature"].split(" ")) == 1
    assert verified(after, new)["type"] == "enquiry.received"
    assert refused_by(after, old)


async def test_a_rotation_without_overlap_stops_the_old_secret_at_once(client, app, receiver):
    made = await subscribe(client, receiver, "abrupt", events=["enquiry.received"])
    answer = await client.post(
        f"/v1/webhooks/{made['id']}/rotate-secret", json={"overlap_seconds": 0}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["previous_secret_until"] is None
    await enquire_and_deliver(client, app)
    [message] = receiver.to("abrupt")
    assert verified(message, answer.json()["secret"])
    assert refused_by(message, made["secret"])


async def test_rotating_twice_keeps_only_the_secret_just_replaced(client, app, receiver):
    made = await subscribe(client, receiver, "twice", events=["enquiry.received"])
    path = f"/v1/webhooks/{made['id']}/rotate-secret"
    second = (await client.post(path, json={"overlap_seconds": 3600})).json()["secret"]
    third = (await client.post(path, json={"overlap_seconds": 3600})).json()["secret"]
    await enquire_and_deliver(client, app)
    [message] = receiver.to("twice")
    assert verified(message, second)
    assert verified(message, third)
    assert refused_by(message, made["secret"])


@pytest.mark.parametrize(
    "body",
    [
        {"overlap_seconds": -1},
        {"overlap_seconds": 604801},
        {"overlap_seconds": "60"},
        {"overlap_seconds": 1.5},
        {"overlap_seconds": None},
        {"overlap": 60},
        [],
    ],
)
async def test_a_bad_rotation_is_refused_and_changes_nothing(client, engine, receiver, body):
    made = await subscribe(client, receiver, "badrotate")
    before = await stored(engine, made["id"])
    answer = await client.post(f"/v1/webhooks/{made['id']}/rotate-secret", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert await stored(engine, made["id"]) == before


async def test_patch_changes_what_is_sent_and_where(client, app, receiver):
    made = await subscribe(client, receiver, "before", events=["enquiry.received"])
    await enquire_and_deliver(client, app)
    assert [verified(m, made["secret"])["type"] for m in receiver.to("before")] == [
        "enquiry.received"
    ]
    answer = await client.patch(
        f"/v1/webhooks/{made['id']}",
        json={"url": hook_url(receiver, "after"), "events": ["dispatch.delivered"]},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert answer.status_code == 200, answer.text
    changed = answer.json()
    assert (changed["url"], changed["events"]) == (
        hook_url(receiver, "after"),
        ["dispatch.delivered"],
    )
    assert (await client.get(f"/v1/webhooks/{made['id']}")).json()["events"] == [
        "dispatch.delivered"
    ]

    await enquire_and_deliver(client, app)
    assert len(receiver.to("before")) == 1
    # Only the new type, at the new URL (the first enquiry's too: it was not yet fed, and the
    # feed applies each subscription's list as it stands when it scans).
    after = {verified(m, made["secret"])["type"] for m in receiver.to("after")}
    assert after == {"dispatch.delivered"}
    unchanged = await client.patch(f"/v1/webhooks/{made['id']}", json={})
    assert unchanged.json() == changed
    described = await client.patch(
        f"/v1/webhooks/{made['id']}", json={"description": "Cases system, test"}
    )
    assert described.json() == {**changed, "description": "Cases system, test"}
    cleared = await client.patch(f"/v1/webhooks/{made['id']}", json={"description": None})
    assert cleared.json()["description"] is None
    assert (await client.get(f"/v1/webhooks/{made['id']}")).json()["description"] is None


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"url": "ftp://partner.example.org/x"}, "#/url"),
        ({"url": None}, "#/url"),
        ({"events": []}, "#/events"),
        ({"events": ["enquiry.recieved"]}, "#/events"),
        (
            {"events": ["dispatch.delivered"], "url": "https://user:pw@partner.example.org/"},
            "#/url",
        ),
        ({"events": None}, "#/events"),
        ({"enabled": "yes"}, "#/enabled"),
        ({"enabled": None}, "#/enabled"),
        ({"secret": "whsec_x"}, "#/secret"),
        ({"description": "x" * 501}, "#/description"),
        ({"description": 7}, "#/description"),
    ],
)
async def test_a_bad_patch_is_refused_with_the_field_named_and_nothing_stored(
    client, engine, receiver, body, pointer
):
    made = await subscribe(client, receiver, "badpatch")
    before = await stored(engine, made["id"])
    answer = await client.patch(f"/v1/webhooks/{made['id']}", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert pointer in [error.get("pointer") for error in answer.json()["errors"]]
    assert await stored(engine, made["id"]) == before


async def test_another_clients_subscription_cannot_be_patched_or_rotated(
    anonymous, engine, receiver
):
    owner = bearer(await make_key(engine, Scope.webhooks_manage))
    other = bearer(await make_key(engine, Scope.webhooks_manage))
    created = await anonymous.post(
        "/v1/webhooks", json={"url": hook_url(receiver, "owned"), "events": ["*"]}, headers=owner
    )
    made = created.json()
    before = await stored(engine, made["id"])
    path = f"/v1/webhooks/{made['id']}"
    for answer in (
        await anonymous.patch(path, json={"events": ["dispatch.delivered"]}, headers=other),
        await anonymous.post(f"{path}/rotate-secret", headers=other),
        await anonymous.patch(f"/v1/webhooks/{uuid.uuid4()}", json={}, headers=owner),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert await stored(engine, made["id"]) == before
    mine = await anonymous.patch(path, json={"events": ["dispatch.delivered"]}, headers=owner)
    assert mine.status_code == 200, mine.text


async def test_patch_re_enables_after_410_and_the_audit_log_says_so(
    client, app, engine, receiver: Receiver
):
    made = await subscribe(client, receiver, "back", events=["enquiry.received"])
    receiver.answers["back"] = [(410, {})]
    await enquire_and_deliver(client, app)
    assert (await client.get(f"/v1/webhooks/{made['id']}")).json()["state"] == "disabled"
    receiver.answers["back"] = [(200, {})]

    answer = await client.patch(f"/v1/webhooks/{made['id']}", json={"enabled": True})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["state"], answer.json()["disabled_reason"]) == ("active", None)
    async with engine.connect() as conn:
        audited = (
            await conn.execute(
                select(audit_table.c.action, audit_table.c.detail)
                .where(audit_table.c.subject == made["id"])
                .order_by(audit_table.c.at)
            )
        ).all()
    [(disabled, why), (enabled, detail)] = audited
    assert (disabled, enabled) == ("webhook.subscription_disabled", "webhook.subscription_enabled")
    assert "410 Gone" in why["disabled_reason"] == detail["disabled_reason"]

    await enquire_and_deliver(client, app)
    [_gone, again] = receiver.to("back")
    assert verified(again, made["secret"])["type"] == "enquiry.received"
    again_enabled = await client.patch(f"/v1/webhooks/{made['id']}", json={"enabled": True})
    assert again_enabled.status_code == 200  # already active: nothing to do, nothing audited
    assert (await client.post(f"/v1/webhooks/{made['id']}/enable")).status_code == 409


async def test_patch_can_pause_a_subscription_and_enable_resumes_it(client, app, receiver):
    made = await subscribe(client, receiver, "paused", events=["enquiry.received"])
    paused = await client.patch(f"/v1/webhooks/{made['id']}", json={"enabled": False})
    assert (paused.json()["state"], paused.json()["disabled_reason"]) == (
        "disabled",
        "disabled by its client",
    )
    await enquire_and_deliver(client, app)
    assert receiver.to("paused") == []
    resumed = await client.post(f"/v1/webhooks/{made['id']}/enable")
    assert resumed.status_code == 200, resumed.text
    await enquire_and_deliver(client, app)
    [message] = receiver.to("paused")
    assert verified(message, made["secret"])["type"] == "enquiry.received"


async def test_a_ping_reaches_only_the_subscription_tested_and_verifies(client, app, receiver):
    tested = await subscribe(client, receiver, "tested", events=["enquiry.received"])
    everything = await subscribe(client, receiver, "everything")
    answer = await client.post(f"/v1/webhooks/{tested['id']}/test")
    assert answer.status_code == 202, answer.text
    queued = answer.json()
    assert (queued["event_type"], queued["state"]) == ("ping", "pending")
    await deliver_all(app)
    [ping] = receiver.to("tested")
    body = verified(ping, tested["secret"])
    assert body["type"] == "ping"
    assert body["data"]["event_id"] == queued["event_id"]
    assert ping["headers"]["webhook-id"] == f"msg_{queued['event_id'].replace('-', '')}"
    assert receiver.to("everything") == []  # "*" does not take another subscription's ping
    [delivery] = (await client.get(f"/v1/webhooks/{tested['id']}")).json()["deliveries"]
    assert (delivery["id"], delivery["state"], delivery["last_status"]) == (
        queued["id"],
        "delivered",
        200,
    )
    assert everything["id"] != tested["id"]


async def test_a_disabled_or_unseen_subscription_is_not_pinged(anonymous, engine, receiver):
    owner = bearer(await make_key(engine, Scope.webhooks_manage))
    other = bearer(await make_key(engine, Scope.webhooks_manage))
    created = await anonymous.post(
        "/v1/webhooks", json={"url": hook_url(receiver, "quiet"), "events": ["*"]}, headers=owner
    )
    path = f"/v1/webhooks/{created.json()['id']}"
    hidden = await anonymous.post(f"{path}/test", headers=other)
    assert hidden.status_code == 404
    await anonymous.patch(path, json={"enabled": False}, headers=owner)
    refused = await anonymous.post(f"{path}/test", headers=owner)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await anonymous.get(path, headers=owner)).json()["deliveries"] == []


async def test_production_refuses_an_internal_endpoint_by_patch_too(database_url, tmp_path):
    resolver = FakeResolver({**RESOLVER, "partner.example.net": [PUBLIC], "in.example.net": [IN]})
    settings = production_settings(database_url, config_dir(tmp_path, organisations()))
    application = create_app(settings, run_dispatcher=False, resolver=resolver)
    async with started(application, Scope.webhooks_manage, base_url="https://iap.test") as http:
        public = "https://partner.example.net/events"
        made = (await http.post("/v1/webhooks", json={"url": public, "events": ["*"]})).json()
        for url in ("https://127.0.0.1:8443/events", "https://in.example.net/events"):
            refused = await http.patch(
                f"/v1/webhooks/{made['id']}", json={"url": url, "events": ["status.*"]}
            )
            assert refused.status_code == 422, url
            assert [e["pointer"] for e in refused.json()["errors"]] == ["#/url"]
        kept = (await http.get(f"/v1/webhooks/{made['id']}")).json()
        assert (kept["url"], kept["events"]) == (public, ["*"])


async def test_rotating_keys_reseals_the_previous_secret_too(client, engine, receiver):
    made = await subscribe(client, receiver, "resealed")
    await client.post(f"/v1/webhooks/{made['id']}/rotate-secret")
    newest = new_key()
    both = Sealer([SecretStr(newest), SecretStr(DEVELOPMENT_KEY)], SecretStr("lookup"))
    assert await reseal_secrets(engine=engine, sealer=both) == 1
    previous = (await stored(engine, made["id"]))["previous_secret_sealed"]
    only_newest = Sealer([SecretStr(newest)], SecretStr("lookup"))
    assert only_newest.open(previous) == {"secret": made["secret"]}
