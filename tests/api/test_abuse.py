"""Abuse: rate limits per client and per address (in memory, and shared through a real Redis),
CORS for front ends, security headers on every answer, and trusted hosts. Limits are set tiny
("2/hour") so a test reaches them in a few calls and never waits on a clock."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio
from limits import parse_many
from pydantic import SecretStr, ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from app.api.ratelimit import MemoryCounter
from app.clients.service import Scope
from app.core.models import enquiry_table, idempotency_table
from app.core.settings import ApiSettings, Environment, Settings
from app.main import create_app
from tests.conftest import bearer, enquiry_body, free_port, make_key, make_settings
from tests.core.test_outbound import FakeResolver
from tests.test_production import RESOLVER, config_dir, organisations, production_settings

REDIS_URL = "redis://127.0.0.1:6379/0"
HOME = ("192.0.2.10", 50000)  # the address calls come from unless a test says otherwise
FRONT_END = "https://report.oxfordshire.example"


def limited(settings: Settings, *, env: Environment | None = None, **api: Any) -> Settings:
    """The test settings with these API settings changed (limits, hosts, origins)."""
    changed = settings.api.model_copy(update=api)
    return settings.model_copy(update={"api": changed, "env": env or settings.env})


class Gateway:
    """A running app, called from whichever address a test chooses."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.engine: AsyncEngine = app.state.iap.engine

    @asynccontextmanager
    async def http(
        self, address: tuple[str, int] = HOME, key: str | None = None, host: str = "iap.test"
    ) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=self.app, client=address)
        headers = bearer(key) if key else {}
        async with httpx.AsyncClient(
            transport=transport, base_url=f"http://{host}", headers=headers
        ) as http:
            yield http


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Gateway]:
    app = create_app(settings, run_dispatcher=False)
    async with app.router.lifespan_context(app):
        yield Gateway(app)


@asynccontextmanager
async def calling(settings: Settings, **how: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with these settings, called from HOME without a key (or as `how` says)."""
    async with running(settings) as gateway, gateway.http(**how) as http:
        yield http


async def count(engine: AsyncEngine, table: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


def assert_rate_limited(answer: httpx.Response, policy: str) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/rate-limited"
    assert re.fullmatch(r"[1-9][0-9]*", answer.headers["Retry-After"])
    assert answer.headers["RateLimit-Policy"] == policy
    assert answer.headers["RateLimit"].endswith(f";r=0;t={answer.headers['Retry-After']}")


async def test_a_client_over_its_limit_gets_429_and_its_enquiry_is_not_stored(settings):
    async with running(limited(settings, rate_limit_client="2/hour")) as gateway:
        key = await make_key(gateway.engine, Scope.enquiries_submit)
        async with gateway.http(key=key) as http:
            for n in range(2):
                headers = {"Idempotency-Key": f"call-{n}"}
                answer = await http.post("/v1/enquiries", json=enquiry_body(), headers=headers)
                assert answer.status_code == 201
            refused = await http.post(
                "/v1/enquiries", json=enquiry_body(), headers={"Idempotency-Key": "call-2"}
            )
        assert_rate_limited(refused, '"client";q=2;w=3600')
        assert "this API key" in refused.json()["detail"]
        assert await count(gateway.engine, enquiry_table) == 2
        assert await count(gateway.engine, idempotency_table) == 2


async def test_one_clients_burst_does_not_limit_another(settings):
    async with running(limited(settings, rate_limit_client="1/hour")) as gateway:
        kiosk = await make_key(gateway.engine, Scope.enquiries_submit)
        partner = await make_key(gateway.engine, Scope.enquiries_submit)
        async with gateway.http(key=kiosk) as http:
            assert (await http.post("/v1/enquiries", json=enquiry_body())).status_code == 201
            assert (await http.post("/v1/enquiries", json=enquiry_body())).status_code == 429
        # Same address, another key: its own count.
        async with gateway.http(key=partner) as http:
            assert (await http.post("/v1/enquiries", json=enquiry_body())).status_code == 201


async def test_a_call_counts_once_even_where_a_route_checks_the_key_twice(settings):
    # /v1/organisations is a catalogue route (counted) that also requires a scope.
    async with running(limited(settings, rate_limit_client="2/hour")) as gateway:
        key = await make_key(gateway.engine, Scope.enquiries_read_all)
        async with gateway.http(key=key) as http:
            assert (await http.get("/v1/organisations")).status_code == 200
            assert (await http.get("/v1/organisations")).status_code == 200
            assert (await http.get("/v1/services")).status_code == 429


async def test_calls_without_a_key_are_counted_per_address(settings):
    async with running(limited(settings, rate_limit_anonymous="2/hour")) as gateway:
        submitter = await make_key(gateway.engine, Scope.enquiries_submit)
        async with gateway.http(key=submitter) as http:
            created = (await http.post("/v1/enquiries", json=enquiry_body())).json()
        look_up = f"/v1/enquiries/{created['reference']}"
        token = {"token": created["access_token"]}
        async with gateway.http() as citizen:
            assert (await citizen.get("/v1/services")).status_code == 200
            assert (await citizen.get(look_up, params=token)).status_code == 200
            refused = await citizen.get(look_up, params=token)
            assert_rate_limited(refused, '"anonymous";q=2;w=3600')
            assert "this address" in refused.json()["detail"]
            assert (await citizen.get("/v1/services/pothole")).status_code == 429
            assert (await citizen.get("/healthz")).status_code == 200  # never limited
            assert (await citizen.get("/readyz")).status_code == 200
        async with gateway.http(address=("198.51.100.9", 40000)) as neighbour:
            assert (await neighbour.get(look_up, params=token)).status_code == 200
        # The limited address still gets through with an API key: that counts per client.
        async with gateway.http(key=submitter) as http:
            assert (await http.post("/v1/enquiries", json=enquiry_body())).status_code == 201


async def test_guessing_keys_is_counted_against_the_address(settings):
    async with running(limited(settings, rate_limit_anonymous="2/hour")) as gateway:
        async with gateway.http(key="iap_000000000000_guess") as guesser:
            assert (await guesser.get("/v1/enquiries")).status_code == 401
            assert (await guesser.get("/v1/enquiries")).status_code == 401
            assert (await guesser.get("/v1/enquiries")).status_code == 429
        async with gateway.http() as same_address:
            assert (await same_address.get("/v1/services")).status_code == 429


async def test_ipv6_callers_are_counted_by_their_64_bit_prefix(settings):
    async with running(limited(settings, rate_limit_anonymous="1/hour")) as gateway:
        async with gateway.http(address=("2001:db8:1:2::1", 1)) as first:
            assert (await first.get("/v1/services")).status_code == 200
        async with gateway.http(address=("2001:db8:1:2::ffff", 1)) as same_subscriber:
            assert (await same_subscriber.get("/v1/services")).status_code == 429
        async with gateway.http(address=("2001:db8:1:3::1", 1)) as another:
            assert (await another.get("/v1/services")).status_code == 200


async def test_inbound_pushes_are_counted_per_address_before_their_signature(settings):
    async with calling(limited(settings, rate_limit_inbound="1/hour")) as pusher:
        forged = await pusher.post("/v1/inbound/oxfordshire-county", json={})
        assert forged.status_code == 401
        refused = await pusher.post("/v1/inbound/oxfordshire-county", json={})
        assert_rate_limited(refused, '"inbound";q=1;w=3600')


JSON_TYPE = {"content-type": "application/json"}
BAD_BODIES = {
    "malformed JSON": ({"content": b'{"service_code": ', "headers": JSON_TYPE}, 400),
    "over the size limit": ({"content": b"x" * 300_000, "headers": JSON_TYPE}, 413),
    "not JSON": ({"content": b"a=b", "headers": {"content-type": "text/plain"}}, 415),
}


@pytest.mark.parametrize("kind", list(BAD_BODIES))
async def test_a_bad_body_without_a_key_is_401_and_counted_before_it_is_looked_at(settings, kind):
    how, _ = BAD_BODIES[kind]
    async with calling(limited(settings, rate_limit_anonymous="2/hour")) as anonymous:
        for _ in range(2):
            answer = await anonymous.post("/v1/enquiries", **how)
            assert answer.status_code == 401, answer.text
            assert answer.json()["type"] == "/problems/unauthenticated"
        assert_rate_limited(await anonymous.post("/v1/enquiries", **how), '"anonymous";q=2;w=3600')


@pytest.mark.parametrize("kind", list(BAD_BODIES))
async def test_a_client_over_its_limit_sending_bad_bodies_gets_429(settings, kind):
    how, status = BAD_BODIES[kind]
    async with running(limited(settings, rate_limit_client="2/hour")) as gateway:
        key = await make_key(gateway.engine, Scope.enquiries_submit)
        async with gateway.http(key=key) as http:
            for _ in range(2):
                assert (await http.post("/v1/enquiries", **how)).status_code == status
            assert_rate_limited(await http.post("/v1/enquiries", **how), '"client";q=2;w=3600')


async def test_bad_pushes_count_against_the_inbound_limit(settings):
    async with calling(limited(settings, rate_limit_inbound="1/hour")) as pusher:
        big = await pusher.post(
            "/v1/inbound/oxfordshire-county", content=b"x" * 300_000, headers=JSON_TYPE
        )
        assert big.status_code == 413
        refused = await pusher.post(
            "/v1/inbound/oxfordshire-county", content=b"{", headers=JSON_TYPE
        )
        assert_rate_limited(refused, '"inbound";q=1;w=3600')


async def test_a_limit_set_to_none_is_off(settings):
    async with running(
        limited(settings, rate_limit_client=None, rate_limit_anonymous=None)
    ) as gateway:
        key = await make_key(gateway.engine, Scope.admin)
        async with gateway.http(key=key) as http:
            for _ in range(30):
                assert (await http.get("/v1/services")).status_code == 200


def test_limits_are_on_by_default_and_read_from_the_environment(monkeypatch):
    defaults = ApiSettings()
    assert defaults.rate_limit_client == "600/minute"
    assert defaults.rate_limit_anonymous == "60/minute"
    assert defaults.rate_limit_storage.get_secret_value() == "memory://"
    monkeypatch.setenv("IAP_API__RATE_LIMIT_CLIENT", "0")
    monkeypatch.setenv("IAP_API__RATE_LIMIT_ANONYMOUS", "10/second;100/hour")
    monkeypatch.setenv("IAP_API__RATE_LIMIT_STORAGE", REDIS_URL)
    monkeypatch.setenv("IAP_API__CORS_ORIGINS", f'["{FRONT_END}"]')
    read = Settings().api
    assert read.rate_limit_client is None
    assert read.rate_limit_anonymous == "10/second;100/hour"
    assert read.rate_limit_storage.get_secret_value() == REDIS_URL
    assert read.cors_origins == [FRONT_END]
    for wrong in ({"rate_limit_client": "lots"}, {"rate_limit_storage": "mongodb://x"}):
        with pytest.raises(ValidationError):
            ApiSettings(**wrong)


async def test_several_windows_are_each_kept(settings):
    async with calling(limited(settings, rate_limit_anonymous="5/hour;1/day")) as http:
        assert (await http.get("/v1/services")).status_code == 200
        refused = await http.get("/v1/services")
        assert_rate_limited(refused, '"anonymous";q=1;w=86400')


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_the_memory_count_weighs_the_last_window_and_its_retry_after_is_true():
    (item,) = parse_many("10/minute")
    clock = Clock(60 * 1000 + 59)  # 59 s into a minute
    counter = MemoryCounter(clock)
    assert [await counter.hit(item, "a") for _ in range(11)] == [True] * 10 + [False]
    assert await counter.hit(item, "b")  # another bucket counts alone
    clock.now += 2  # 1 s into the next minute: 59/60 of the last one's 10 still count
    assert not await counter.hit(item, "a")
    wait = await counter.seconds_to_wait(item, "a")
    assert wait == 5  # at 6 s in, 9 of the last minute's count: one more fits
    clock.now += wait - 1
    assert not await counter.hit(item, "a")
    clock.now += 1
    assert await counter.hit(item, "a")
    assert not await counter.hit(item, "a")
    clock.now += 120  # two windows on, nothing of them is left: a whole window's worth again
    assert [await counter.hit(item, "a") for _ in range(11)] == [True] * 10 + [False]
    clock.now += 61  # 7 s into the next: 53/60 of the last one's ten leave room for one
    assert [await counter.hit(item, "a") for _ in range(2)] == [True, False]


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own in the local Redis, its keys deleted afterwards."""
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (redis.RedisError, OSError):
        await client.aclose()
        if os.environ.get("CI"):
            raise
        pytest.skip("no Redis on 127.0.0.1:6379")
    prefix = f"iap-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_gateways_sharing_a_redis_share_the_count(settings, redis_prefix):
    shared = limited(
        settings,
        rate_limit_client="2/hour",
        rate_limit_storage=SecretStr(REDIS_URL),
        rate_limit_key_prefix=redis_prefix,
    )
    async with running(shared) as first, running(shared) as second:
        key = await make_key(first.engine, Scope.enquiries_submit)
        async with first.http(key=key) as one, second.http(key=key) as other:
            assert (await one.post("/v1/enquiries", json=enquiry_body())).status_code == 201
            assert (await other.post("/v1/enquiries", json=enquiry_body())).status_code == 201
            assert_rate_limited(
                await one.post("/v1/enquiries", json=enquiry_body()), '"client";q=2;w=3600'
            )
            assert (await other.post("/v1/enquiries", json=enquiry_body())).status_code == 429
        assert await count(first.engine, enquiry_table) == 2
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    assert [key async for key in client.scan_iter(match=f"{redis_prefix}*")]  # counted there
    await client.aclose()


async def test_a_redis_that_does_not_answer_lets_calls_through_and_is_logged(settings):
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with calling(limited(settings, rate_limit_storage=SecretStr(down))) as http:
        with capture_logs() as logs:
            for _ in range(3):
                assert (await http.get("/v1/services")).status_code == 200
    failures = [entry for entry in logs if entry["event"] == "ratelimit.storage_failed"]
    assert len(failures) == 1  # then left alone for a few seconds, not waited on every call


async def test_cors_lets_a_listed_front_end_in_and_no_other(settings):
    async with calling(limited(settings, cors_origins=[FRONT_END])) as browser:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        }
        allowed = await browser.options("/v1/enquiries", headers={"Origin": FRONT_END, **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["Access-Control-Allow-Origin"] == FRONT_END
        assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
        assert "idempotency-key" in allowed.headers["Access-Control-Allow-Headers"].lower()
        assert "Access-Control-Allow-Credentials" not in allowed.headers

        refused = await browser.options(
            "/v1/enquiries", headers={"Origin": "https://evil.example", **preflight}
        )
        assert refused.status_code == 400
        assert "Access-Control-Allow-Origin" not in refused.headers
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "/problems/cors-refused"
        assert "origin" in refused.json()["detail"]

        answer = await browser.get("/v1/services", headers={"Origin": FRONT_END})
        assert answer.headers["Access-Control-Allow-Origin"] == FRONT_END
        exposed = answer.headers["Access-Control-Expose-Headers"]
        for header in ("Location", "Retry-After", "RateLimit", "Idempotent-Replayed"):
            assert header in exposed
        other = await browser.get("/v1/services", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers


async def test_without_listed_origins_there_is_no_cors(anonymous):
    preflight = await anonymous.options(
        "/v1/enquiries",
        headers={"Origin": FRONT_END, "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    answer = await anonymous.get("/v1/services", headers={"Origin": FRONT_END})
    assert "Access-Control-Allow-Origin" not in answer.headers


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


async def test_every_answer_carries_the_security_headers(client, anonymous):
    created = (await client.post("/v1/enquiries", json=enquiry_body())).json()
    answers = [
        await client.get(f"/v1/enquiries/{created['reference']}"),
        await anonymous.get("/v1/enquiries"),  # 401 problem
        await anonymous.get("/nowhere"),  # 404 problem
        await anonymous.post("/v1/enquiries", content=b"x", headers={"Content-Type": "text/plain"}),
        await anonymous.get("/healthz"),
    ]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers[name] == value, (answer.request.url, name)
        assert answer.headers["Cache-Control"] == "no-store"
        policy = answer.headers["Content-Security-Policy"]
        assert policy == "default-src 'none'; frame-ancestors 'none'"
        assert "Strict-Transport-Security" not in answer.headers  # not in production


async def test_an_unexpected_error_is_a_problem_with_the_security_headers_too(app):
    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken", broken)
    app.middleware_stack = None  # rebuilt on the next call, with the new route
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://iap.test") as http:
        answer = await http.get("/broken")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert "a bug" not in answer.text  # nothing of the error's own text goes out
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value, name
    assert answer.headers["Cache-Control"] == "no-store"


async def test_the_docs_pages_may_load_their_scripts_but_not_be_framed(anonymous):
    for page in ("/docs", "/redoc"):
        answer = await anonymous.get(page)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        # Swagger UI and ReDoc load from a CDN and run an inline script: no default-src here.
        assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        assert answer.headers["X-Frame-Options"] == "DENY"
    schema = await anonymous.get("/openapi.json")
    assert schema.status_code == 200


async def test_production_answers_ask_browsers_for_https_only(database_url, tmp_path):
    settings = production_settings(database_url, config_dir(tmp_path, organisations()))
    app = create_app(settings, run_dispatcher=False, resolver=FakeResolver(RESOLVER))
    async with app.router.lifespan_context(app), Gateway(app).http() as http:
        answer = await http.get("/healthz")
    assert answer.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


async def test_a_host_that_is_not_trusted_is_refused(settings):
    async with running(settings) as gateway:
        async with gateway.http(host="evil.example") as http:
            refused = await http.get("/healthz")
        assert refused.status_code == 400
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "/problems/untrusted-host"
        assert refused.headers["X-Content-Type-Options"] == "nosniff"
        async with gateway.http(host="127.0.0.1:8000") as http:
            assert (await http.get("/healthz")).status_code == 200


async def test_the_default_hosts_are_the_development_ones_and_star_allows_any(settings):
    assert ApiSettings().trusted_hosts == ["localhost", "127.0.0.1", "[::1]"]
    defaults = limited(settings, trusted_hosts=ApiSettings().trusted_hosts)
    async with running(defaults) as gateway:
        for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000"):
            async with gateway.http(host=host) as http:
                assert (await http.get("/healthz")).status_code == 200, host
        async with gateway.http() as http:  # iap.test is trusted by the tests' settings only
            assert (await http.get("/healthz")).status_code == 400
    async with calling(limited(settings, trusted_hosts=["*"]), host="anything.example") as http:
        assert (await http.get("/healthz")).status_code == 200


def test_the_shipped_test_settings_keep_limits_out_of_reach():
    api = make_settings("sqlite+aiosqlite:///unused.db", "http://127.0.0.1:8090").api
    assert api.rate_limit_client == "1000000/minute"
