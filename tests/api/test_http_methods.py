"""HTTP at the edge as a client sees it: 405 with every method of the path in Allow, HEAD
wherever GET is, and 431 for absurd headers on a real server."""

from __future__ import annotations

import httpx
import pytest

from app.main import create_app
from tests.conftest import ThreadedServer

PROBLEM_JSON = "application/problem+json"


async def test_a_body_less_put_is_405_naming_every_method_of_the_path(client) -> None:
    answer = await client.put("/v1/enquiries")
    assert answer.status_code == 405
    assert answer.headers["content-type"] == PROBLEM_JSON
    # /v1/enquiries has a GET route (the list) and a POST route (intake).
    assert answer.headers["allow"] == "GET, HEAD, POST"
    assert "GET, HEAD, POST" in answer.json()["detail"]


async def test_a_put_with_a_json_body_is_405_too(client) -> None:
    answer = await client.put("/v1/enquiries", json={"service_code": "pothole"})
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, HEAD, POST"


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/v1/services"])
async def test_head_answers_wherever_get_does_without_a_body(client, path) -> None:
    get = await client.get(path)
    head = await client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


async def test_head_on_a_post_only_path_is_405(client) -> None:
    answer = await client.head("/v1/privacy/erasure")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"


@pytest.fixture
def served(settings):
    server = ThreadedServer(create_app(settings, run_dispatcher=False), lifespan="on").start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Big": "a" * 4_000_000}, id="one 4 MB header"),
        pytest.param({f"X-H{n}": "1" for n in range(5_000)}, id="5,000 headers"),
    ],
)
def test_absurd_headers_are_431_on_a_real_server(served, headers) -> None:
    answer = httpx.get(f"{served.url}/healthz", headers=headers, timeout=30)
    assert answer.status_code == 431
    assert answer.headers["content-type"] == PROBLEM_JSON
    assert answer.json()["type"] == "/problems/headers-too-large"


def test_a_real_clients_headers_pass(served) -> None:
    browser_like = {f"X-Header-{n}": "v" * 100 for n in range(40)}
    browser_like["Cookie"] = "c" * 4096
    assert httpx.get(f"{served.url}/healthz", headers=browser_like).status_code == 200
