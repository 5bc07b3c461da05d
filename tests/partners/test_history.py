"""A subscription's delivery history at a real loopback endpoint: every attempt kept and read,
one delivery resent, a window of missed messages recovered once each under their own
webhook-ids, old rows pruned by the retention job, and a subscription failing for five days
disabled, which its client's other subscriptions hear of."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, update
from starlette.requests import Request
from starlette.responses import Response

from app.clients.service import Scope
from app.core.audit import Actor
from app.core.models import (
    audit_table,
    utcnow,
    webhook_attempt_table,
    webhook_delivery_table,
    webhook_subscription_table,
)
from app.core.settings import Settings, WebhookSettings
from app.privacy import service as privacy
from tests.conftest import bearer, enquiry_body, make_key, serving
from tests.partners.test_webhooks import Receiver, hook_url, subscribe, verified

s = webhook_subscription_table.c
w = webhook_delivery_table.c
a = webhook_attempt_table.c


class Answering(Receiver):
    """A Receiver that can also answer with a body, per endpoint name."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        super().__init__()

    async def hook(self, request: Request) -> Response:
        answer = await super().hook(request)
        body = self.bodies.get(request.path_params["name"])
        if body is None:
            return answer
        return Response(body, status_code=answer.status_code, media_type="text/plain")

    def reset(self) -> None:
        super().reset()
        self.bodies.clear()


@pytest.fixture(scope="module")
def answering_server() -> Iterator[Answering]:
    with serving(Answering()) as receiver:
        yield receiver


@pytest.fixture
def endpoint(answering_server: Answering) -> Answering:
    answering_server.reset()
    return answering_server


def ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["headers"]["webhook-id"] for m in messages]


async def send(app: Any) -> None:
    await app.state.runtime.webhooks.run_until_idle()


async def enquire(http: Any, **headers: str) -> None:
    answer = await http.post("/v1/enquiries", json=enquiry_body(), headers=headers)
    assert answer.status_code == 201, answer.text


async def deliveries(http: Any, subscription_id: str, **params: Any) -> list[dict[str, Any]]:
    answer = await http.get(f"/v1/webhooks/{subscription_id}/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


async def test_after_an_outage_recover_sends_exactly_the_missed_messages_once_each(
    client, app, endpoint
):
    made = await subscribe(client, endpoint, "outage", events=["enquiry.received"])
    path = f"/v1/webhooks/{made['id']}"
    began = utcnow()
    await enquire(client)  # A: delivered
    await send(app)
    endpoint.answers["outage"] = [(503, {})]  # down: B and C are given up after 3 attempts
    await enquire(client)
    await enquire(client)
    await send(app)
    await client.patch(path, json={"enabled": False})
    await enquire(client)  # D: made while disabled, never queued
    endpoint.answers["outage"] = [(200, {})]
    assert (await client.patch(path, json={"enabled": True})).status_code == 200
    await enquire(client)  # E: delivered once enabled
    await send(app)
    before = ids(endpoint.to("outage"))
    first_sent = Counter(before)
    assert sorted(first_sent.values()) == [1, 1, 3, 3]  # A, E; B and C three times each
    dead = await deliveries(client, made["id"], state="dead")
    assert len(dead) == 2

    answer = await client.post(f"{path}/recover", json={"since": began.isoformat()})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"queued": 3, "requeued": 2, "missed": 1}
    await send(app)

    again = endpoint.to("outage")[len(before) :]
    bodies = [verified(m, made["secret"]) for m in again]
    assert {b["type"] for b in bodies} == {"enquiry.received"}
    assert len(again) == len(set(ids(again))) == 3  # each once
    failed_ids = {i for i, n in first_sent.items() if n == 3}
    [missed_id] = set(ids(again)) - failed_ids  # B and C under their own webhook-ids, and D
    assert missed_id not in first_sent
    assert failed_ids <= set(ids(again))
    listed = await deliveries(client, made["id"])
    assert [d["state"] for d in listed] == ["delivered"] * 5
    assert {f"msg_{uuid.UUID(d['event_id']).hex}" for d in listed} == set(ids(again)) | set(before)
    nothing = await client.post(f"{path}/recover", json={"since": began.isoformat()})
    assert nothing.json() == {"queued": 0, "requeued": 0, "missed": 0}
    [(action, detail), _] = await audited(app, made["id"], "webhook.recovered")
    assert (action, detail["queued"], detail["missed"]) == ("webhook.recovered", 3, 1)


async def audited(app: Any, subject: str, action: str) -> list[tuple[str, dict[str, Any]]]:
    async with app.state.iap.engine.connect() as conn:
        rows = await conn.execute(
            select(audit_table.c.action, audit_table.c.detail)
            .where(audit_table.c.subject == subject, audit_table.c.action == action)
            .order_by(audit_table.c.at)
        )
        return [(row.action, row.detail) for row in rows]


async def test_each_attempt_is_kept_with_its_status_duration_and_answer_and_one_is_resent(
    client, app, endpoint
):
    made = await subscribe(client, endpoint, "answers", events=["enquiry.received"])
    endpoint.answers["answers"] = [(503, {}), (200, {})]
    endpoint.bodies["answers"] = b"\x00" + "\u00e9".encode() * 2000  # 4001 bytes
    await enquire(client)
    await send(app)
    [delivery] = await deliveries(client, made["id"])
    path = f"/v1/webhooks/{made['id']}/deliveries/{delivery['id']}"
    read = (await client.get(path)).json()
    assert (read["state"], read["attempts"]) == ("delivered", 2)
    second, first = read["attempt_log"]
    assert [(x["number"], x["status"], x["state"]) for x in (first, second)] == [
        (1, 503, "pending"),
        (2, 200, "delivered"),
    ]
    assert first["error"] == "HTTP 503 from 127.0.0.1"
    assert second["error"] is None
    # The first KiB: the NUL and the character cut in two replaced, nothing further read.
    assert first["response"] == "\ufffd" + "\u00e9" * 511 + "\ufffd"
    assert all(x["duration_ms"] >= 0 for x in (first, second))
    assert datetime.fromisoformat(first["started_at"]) <= datetime.fromisoformat(
        second["started_at"]
    )

    resent = await client.post(f"{path}/resend")
    assert resent.status_code == 202, resent.text
    assert (resent.json()["id"], resent.json()["state"]) == (delivery["id"], "pending")
    await send(app)
    one, two, three = endpoint.to("answers")
    assert (
        one["headers"]["webhook-id"]
        == two["headers"]["webhook-id"]
        == three["headers"]["webhook-id"]
    )
    assert verified(three, made["secret"]) == verified(two, made["secret"])
    read = (await client.get(path)).json()
    assert [x["number"] for x in read["attempt_log"]] == [3, 2, 1]
    assert (read["state"], read["attempts"]) == ("delivered", 1)  # a fresh budget
    [(_, detail)] = await audited(app, delivery["id"], "webhook.resent")
    assert detail["state"] == "delivered"


async def test_another_clients_deliveries_are_not_found_and_a_disabled_one_is_not_resent(
    app, anonymous, engine, endpoint
):
    owner_key = await make_key(engine, Scope.webhooks_manage, Scope.enquiries_submit)
    owner, other = bearer(owner_key), bearer(await make_key(engine, Scope.webhooks_manage))
    made = (
        await anonymous.post(
            "/v1/webhooks",
            json={"url": hook_url(endpoint, "owned"), "events": ["enquiry.received"]},
            headers=owner,
        )
    ).json()
    await enquire(anonymous, **owner)
    await send(app)
    base = f"/v1/webhooks/{made['id']}"
    [delivery] = (await anonymous.get(f"{base}/deliveries", headers=owner)).json()["items"]
    one = f"{base}/deliveries/{delivery['id']}"
    since = {"since": (utcnow() - timedelta(hours=1)).isoformat()}
    for answer in (
        await anonymous.get(f"{base}/deliveries", headers=other),
        await anonymous.get(one, headers=other),
        await anonymous.post(f"{one}/resend", headers=other),
        await anonymous.post(f"{base}/recover", json=since, headers=other),
        await anonymous.get(f"{base}/deliveries/{uuid.uuid4()}", headers=owner),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert (await anonymous.get(one, headers=owner)).status_code == 200

    await anonymous.patch(base, json={"enabled": False}, headers=owner)
    for refused in (
        await anonymous.post(f"{one}/resend", headers=owner),
        await anonymous.post(f"{base}/recover", json=since, headers=owner),
    ):
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
    await send(app)
    assert len(endpoint.to("owned")) == 1  # nothing was queued


async def test_the_delivery_list_pages_and_filters(client, app, endpoint):
    made = await subscribe(client, endpoint, "paged", events=["enquiry.received"])
    for _ in range(3):
        await enquire(client)
    await client.post(f"/v1/webhooks/{made['id']}/test")
    await send(app)
    first = await client.get(f"/v1/webhooks/{made['id']}/deliveries", params={"limit": 3})
    page = first.json()
    assert len(page["items"]) == 3
    assert page["next_cursor"]
    rest = await deliveries(client, made["id"], limit=3, cursor=page["next_cursor"])
    assert len(rest) == 1
    assert len({d["id"] for d in page["items"] + rest}) == 4
    assert [d["event_type"] for d in await deliveries(client, made["id"], event_type="ping")] == [
        "ping"
    ]
    assert await deliveries(client, made["id"], state="dead") == []
    later = (utcnow() + timedelta(minutes=1)).isoformat()
    assert await deliveries(client, made["id"], since=later) == []
    for params in ({"state": "lost"}, {"event_type": "enquiry"}, {"cursor": "nonsense"}):
        bad = await client.get(f"/v1/webhooks/{made['id']}/deliveries", params=params)
        assert bad.status_code == 422, params
        assert bad.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("window", "pointer"),
    [
        ({"since": -1, "until": -2}, "#/until"),  # reversed
        ({"since": -15}, "#/since"),  # longer than 14 days
        ({"since": -31, "until": -20}, "#/since"),  # older than delivered rows are kept
        ({"since": 1}, "#/since"),  # in the future
        ({"since": "2026-12-01T08:00:00"}, "#/since"),  # no offset
        ({"until": -1}, "#/since"),  # since is required
        ({"since": -1, "extra": 1}, "#/extra"),
    ],
)
async def test_a_bad_recovery_window_is_a_422_naming_the_field(client, endpoint, window, pointer):
    made = await subscribe(client, endpoint, "window")
    now = utcnow()
    body = {
        k: (now + timedelta(days=v)).isoformat() if isinstance(v, int) and k != "extra" else v
        for k, v in window.items()
    }
    answer = await client.post(f"/v1/webhooks/{made['id']}/recover", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert pointer in [e.get("pointer") for e in answer.json()["errors"]]


async def test_retention_deletes_only_old_deliveries_with_their_attempts(
    client, app, engine, endpoint
):
    made = await subscribe(client, endpoint, "kept", events=["enquiry.received"])
    for _ in range(5):
        await enquire(client)
    later = (429, {"Retry-After": "120"})
    endpoint.answers["kept"] = [(200, {}), (200, {}), (400, {}), (400, {}), later]
    await send(app)  # two delivered, two dead, one waiting to be tried again in 2 minutes
    await client.post(f"/v1/webhooks/{made['id']}/rotate-secret", json={"overlap_seconds": 60})
    now = utcnow()
    rows = await deliveries(client, made["id"])
    delivered = [d["id"] for d in rows if d["state"] == "delivered"]
    dead = [d["id"] for d in rows if d["state"] == "dead"]
    assert (len(delivered), len(dead)) == (2, 2)
    aged = {  # delivery → how many days ago it was delivered or given up
        delivered[0]: 31,  # past the 30 days delivered rows are kept: deleted
        delivered[1]: 29,
        dead[0]: 61,  # past the 60 days given-up rows are kept: deleted
        dead[1]: 45,
    }
    async with engine.begin() as conn:
        for delivery_id, days in aged.items():
            await conn.execute(
                update(webhook_delivery_table)
                .where(w.id == uuid.UUID(delivery_id))
                .values(
                    delivered_at=(now - timedelta(days=days)) if delivery_id in delivered else None,
                    updated_at=now - timedelta(days=days),
                )
            )
        await conn.execute(  # waiting for its retry: kept however old
            update(webhook_delivery_table)
            .where(w.state == "pending")
            .values(created_at=now - timedelta(days=90), updated_at=now - timedelta(days=90))
        )
    gone = {delivered[0], dead[0]}
    attempts_before = await attempts_of(engine, gone)
    assert attempts_before == 2

    await privacy.run_retention(
        engine=engine,
        catalogue=app.state.iap.catalogue,
        store=app.state.iap.attachments,
        actor=Actor("test"),
        now=now + timedelta(seconds=61),  # the rotation's overlap is over too
        webhooks=app.state.iap.settings.webhooks,
    )
    left = {d["id"] for d in await deliveries(client, made["id"])}
    assert left == {d["id"] for d in rows} - gone
    assert await attempts_of(engine, gone) == 0
    assert await attempts_of(engine, left) == 3  # one each, untouched
    async with engine.connect() as conn:
        previous = (
            await conn.execute(select(s.previous_secret_sealed, s.previous_secret_until))
        ).one()
    assert tuple(previous) == (None, None)
    [(_, detail)] = await audited(app, made["id"], "webhook.secret_rotated")
    assert detail["overlap_seconds"] == 60


async def attempts_of(engine: Any, delivery_ids: set[str]) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(webhook_attempt_table)
            .where(a.delivery_id.in_([uuid.UUID(i) for i in delivery_ids]))
        )
    return int(count or 0)


async def test_a_subscription_failing_for_five_days_is_disabled_and_its_clients_others_hear(
    client, app, anonymous, engine, endpoint
):
    partner_key = await make_key(engine, Scope.webhooks_manage, Scope.enquiries_submit)
    partner, stranger = bearer(partner_key), bearer(await make_key(engine, Scope.webhooks_manage))

    async def subscribe_as(headers: dict[str, str], name: str, events: list[str]) -> Any:
        body = {"url": hook_url(endpoint, name), "events": events}
        answer = await anonymous.post("/v1/webhooks", json=body, headers=headers)
        assert answer.status_code == 201, answer.text
        return answer.json()

    failing = await subscribe_as(partner, "failing", ["*"])
    sibling = await subscribe_as(partner, "sibling", ["webhook.*"])
    unrelated = await subscribe_as(stranger, "unrelated", ["*"])
    admin = await subscribe(client, endpoint, "admin", events=["webhook.*"])
    endpoint.answers["failing"] = [(503, {})]
    await enquire(anonymous, **partner)
    await send(app)
    path = f"/v1/webhooks/{failing['id']}"
    assert (await anonymous.get(path, headers=partner)).json()["state"] == "active"  # not 5 days

    async with engine.begin() as conn:  # the endpoint has been failing for six days
        await conn.execute(
            update(webhook_subscription_table)
            .where(s.id == uuid.UUID(failing["id"]))
            .values(created_at=utcnow() - timedelta(days=7))
        )
        for attempt_id, started_at in (await conn.execute(select(a.id, a.started_at))).all():
            await conn.execute(
                update(webhook_attempt_table)
                .where(a.id == attempt_id)
                .values(started_at=started_at - timedelta(days=6))
            )
    await enquire(anonymous, **partner)
    await send(app)
    read = (await anonymous.get(path, headers=partner)).json()
    assert read["state"] == "disabled"
    assert "every attempt failed from" in read["disabled_reason"]
    assert "with none delivered" in read["disabled_reason"]
    sent_to_failing = len(endpoint.to("failing"))
    [(_, detail)] = await audited(app, failing["id"], "webhook.subscription_disabled")
    assert detail["disabled_reason"] == read["disabled_reason"]

    await send(app)  # the webhook.disabled event is fed and sent
    [told] = [verified(m, sibling["secret"]) for m in endpoint.to("sibling")]
    assert told["type"] == "webhook.disabled"
    assert told["data"]["subscription_id"] == failing["id"]
    assert told["data"]["detail"] == read["disabled_reason"]
    assert [verified(m, admin["secret"])["type"] for m in endpoint.to("admin")] == [
        "webhook.disabled"
    ]
    assert endpoint.to("unrelated") == []  # another client's subscription hears nothing
    assert len(endpoint.to("failing")) == sent_to_failing  # nor the one disabled

    endpoint.answers["failing"] = [(200, {})]
    assert (await anonymous.post(f"{path}/enable", headers=partner)).status_code == 200
    await send(app)
    assert [verified(m, sibling["secret"])["type"] for m in endpoint.to("sibling")] == [
        "webhook.disabled",
        "webhook.enabled",
    ]
    assert endpoint.to("failing")[sent_to_failing:] == []  # not told of its own enabling
    assert unrelated["id"] != failing["id"]


def test_the_history_settings_have_iap_names_and_must_outlive_the_rules(monkeypatch):
    monkeypatch.setenv("IAP_WEBHOOKS__DISABLE_AFTER_DAYS", "3")
    monkeypatch.setenv("IAP_WEBHOOKS__DELIVERED_RETENTION_DAYS", "20")
    monkeypatch.setenv("IAP_WEBHOOKS__DEAD_RETENTION_DAYS", "7")
    monkeypatch.setenv("IAP_WEBHOOKS__RECOVER_MAX_DAYS", "10")
    webhooks = Settings().webhooks
    assert (
        webhooks.disable_after_days,
        webhooks.delivered_retention_days,
        webhooks.dead_retention_days,
        webhooks.recover_max_days,
    ) == (3, 20, 7, 10)
    for short in ({"disable_after_days": 31}, {"recover_max_days": 31}):
        with pytest.raises(ValidationError, match="delivered_retention_days must be at least"):
            WebhookSettings(**short)
