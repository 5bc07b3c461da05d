"""docs/integrating.md's webhook receiver, run as written: it verifies the gateway's real
messages with `standardwebhooks`, refuses a forged one and hands on a repeat only once."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.conftest import enquiry_body, free_port
from tests.partners.test_webhooks import deliver_all

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrating.md"
MARKER = "<!-- receiver: tests/partners/test_integrating.py runs this block as written -->"


def receiver_code() -> str:
    """The Python block just after the page's receiver marker."""
    after = DOC.read_text(encoding="utf-8").split(MARKER, 1)[1]
    found = re.match(r"\s*```python\n(.*?)```", after, re.S)
    assert found, "the receiver's code block must follow its marker"
    return found.group(1)


class Running:
    """The doc's receiver in its own process, and the lines it has printed."""

    def __init__(self, port: int, secret: str, folder: Path) -> None:
        script = folder / "receiver.py"
        script.write_text(receiver_code(), encoding="utf-8")
        self.url = f"http://127.0.0.1:{port}/events"
        self.out = folder / "receiver.out"
        env = {**os.environ, "IAP_WEBHOOK_SECRET": secret, "PORT": str(port)}
        with self.out.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(script)], env=env, stdout=out, stderr=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                assert self.process.poll() is None, "the receiver stopped"
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.05)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
async def subscribed(client: httpx.AsyncClient, port: int, tmp_path: Path) -> AsyncIterator[Any]:
    answer = await client.post(
        "/v1/webhooks",
        json={"url": f"http://127.0.0.1:{port}/events", "events": ["enquiry.received"]},
    )
    assert answer.status_code == 201, answer.text
    running = Running(port, answer.json()["secret"], tmp_path)
    yield running, answer.json()["secret"], answer.json()["id"]
    running.stop()


async def test_the_docs_receiver_verifies_the_gateways_messages(client, app, subscribed):
    running, _, subscription_id = subscribed
    made = await client.post("/v1/enquiries", json=enquiry_body())
    assert made.status_code == 201, made.text
    await deliver_all(app)
    [event] = running.events()
    assert event["type"] == "enquiry.received"
    assert event["data"]["reference"] == made.json()["reference"]
    detail = (await client.get(f"/v1/webhooks/{subscription_id}")).json()
    assert [d["state"] for d in detail["deliveries"]] == ["delivered"]
    assert detail["deliveries"][0]["last_status"] == 204


def signed(secret: str, message_id: str, body: str, **headers: str) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
        **headers,
    }


async def test_the_docs_receiver_refuses_a_forgery_and_passes_on_a_repeat_once(subscribed):
    running, secret, _ = subscribed
    body = json.dumps({"type": "ping", "timestamp": "2026-12-06T10:00:00+00:00", "data": {}})
    async with httpx.AsyncClient() as http:
        forged = signed(secret, "msg_1", body, **{"webhook-signature": "v1,Zm9yZ2Vk"})
        assert (await http.post(running.url, content=body, headers=forged)).status_code == 400
        for _ in range(2):
            sent = await http.post(running.url, content=body, headers=signed(secret, "msg_2", body))
            assert sent.status_code == 204
    assert [e["type"] for e in running.events()] == ["ping"]
