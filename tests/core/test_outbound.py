"""The outbound rules: which addresses production may call, at start-up and on every call.

No traffic leaves loopback: addresses are literals or `localhost`, and names that would resolve
publicly are answered by a fake resolver handed to the guard.
"""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import ValidationError

from app.adapters.base import Delivery, PermanentError
from app.adapters.rest_json import RestJsonAdapter, RestJsonConfig
from app.adapters.smtp import EmailAdapter, EmailConfig
from app.catalogue.catalogue import AdapterConfig, Organisation
from app.catalogue.locate import HttpLocator
from app.core.outbound import (
    OutboundGuard,
    OutboundPolicy,
    OutboundRefused,
    outbound_client,
    parse_target,
)
from app.core.settings import Environment, OutboundSettings, Settings
from tests.adapters.factory import delivery as adapter_delivery

PUBLIC = "81.2.69.160"  # any globally routable address; nothing is ever sent to it


class FakeResolver:
    """Host names answered from a table; remembers what it was asked."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def resolve(self, host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"unknown host {host}")
        return [ipaddress.ip_address(a) for a in self.table[host]]

    async def resolve_async(
        self, host: str, port: int
    ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return self.resolve(host, port)


class Listener:
    """A TCP server on 127.0.0.1 that counts connections and answers each with HTTP 200."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> Listener:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    started = await Listener().start()
    yield started
    assert started.server is not None
    started.server.close()
    await started.server.wait_closed()


def production(*, private=(), plaintext=(), resolver=None, cache_seconds=10.0) -> OutboundGuard:
    policy = OutboundPolicy(enforce=True, allowed_private=private, allowed_plaintext=plaintext)
    return OutboundGuard(policy, resolver=resolver, cache_seconds=cache_seconds)


def settings_for(env: Environment, **outbound) -> Settings:
    return Settings(env=env, outbound=OutboundSettings(**outbound))


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "unique-local"),
        ("fc00::1", "unique-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "not a publicly routable"),
        ("192.0.2.1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),
        ("2002:a00:1::", "private"),
    ],
)
async def test_production_refuses_every_class_of_internal_address(address, kind):
    host = f"[{address}]" if ":" in address else address
    url = f"https://{host}/cases"
    guard = production()
    assert kind in (guard.refusal_now(url) or "")
    with pytest.raises(OutboundRefused, match=kind):
        await guard.check_url(url)


@pytest.mark.parametrize("address", [PUBLIC, "2a00:1450:4009:81f::200e"])
async def test_production_calls_public_addresses_over_https(address):
    host = f"[{address}]" if ":" in address else address
    await production().check_url(f"https://{host}/cases")
    assert production().refusal_now(f"https://{host}:8443/x") is None


def test_production_refuses_plain_http_and_smtp_without_tls():
    guard = production()
    assert "not encrypted" in (guard.refusal_now(f"http://{PUBLIC}/cases") or "")
    assert "not encrypted" in (guard.refusal_now(f"smtp://{PUBLIC}:25") or "")
    assert guard.refusal_now(f"smtps://{PUBLIC}:587") is None


def test_plain_http_is_allowed_for_listed_hosts_and_networks():
    resolver = FakeResolver({"legacy.council.uk": [PUBLIC]})
    by_name = production(plaintext=["legacy.council.uk"], resolver=resolver)
    assert by_name.refusal_now("http://legacy.council.uk/open311") is None
    by_network = production(plaintext=["81.2.69.0/24"], resolver=resolver)
    assert by_network.refusal_now("http://legacy.council.uk/open311") is None
    assert by_network.refusal_now("http://81.2.70.1/open311") is not None


def test_a_listed_network_allows_its_addresses_only():
    guard = production(private=["10.20.0.0/16"], plaintext=["10.20.0.0/16"])
    assert guard.refusal_now("http://10.20.3.4:8080/api") is None
    assert "private" in (guard.refusal_now("http://10.21.0.1:8080/api") or "")
    assert "cloud metadata" in (guard.refusal_now("https://169.254.169.254/latest") or "")


def test_a_listed_host_name_allows_what_it_resolves_to():
    resolver = FakeResolver(
        {"case-api.internal": ["10.9.9.9"], "other.internal": ["10.9.9.10"], "a.corp.uk": ["::1"]}
    )
    guard = production(private=["case-api.internal", ".corp.uk"], resolver=resolver)
    assert guard.refusal_now("https://case-api.internal/v1") is None
    assert guard.refusal_now("https://a.corp.uk/v1") is None  # ".corp.uk" covers its subdomains
    refused = guard.refusal_now("https://other.internal/v1") or ""
    assert "other.internal resolves to 10.9.9.10, which is a private address" in refused
    assert "IAP_OUTBOUND__ALLOWED_PRIVATE" in refused


def test_every_address_a_name_resolves_to_is_checked():
    resolver = FakeResolver({"mixed.council.uk": [PUBLIC, "192.168.0.7"]})
    refused = production(resolver=resolver).refusal_now("https://mixed.council.uk/") or ""
    assert "192.168.0.7" in refused


def test_localhost_is_loopback_without_asking_the_resolver():
    resolver = FakeResolver({})
    guard = production(resolver=resolver)
    assert "loopback" in (guard.refusal_now("https://localhost:8443/") or "")
    assert "loopback" in (guard.refusal_now("https://api.localhost/") or "")
    assert resolver.asked == []


def test_a_name_that_does_not_resolve_at_start_up_is_left_to_request_time():
    assert production(resolver=FakeResolver({})).refusal_now("https://later.council.uk/") is None


def test_only_http_https_and_smtp_targets_are_understood():
    assert "scheme" in (production().refusal_now("ftp://files.council.uk/") or "")
    assert "no host" in (production().refusal_now("https:///path") or "")
    with pytest.raises(ValueError, match="scheme"):
        parse_target("file:///etc/passwd")


async def test_an_unknown_scheme_is_refused_at_request_time():
    with pytest.raises(OutboundRefused, match="scheme"):
        await production().check_url("gopher://council.uk/")


@pytest.mark.parametrize("env", [Environment.development, Environment.test])
async def test_development_and_test_allow_loopback_and_plain_http(env):
    guard = OutboundGuard(OutboundPolicy.from_settings(settings_for(env)))
    assert not guard.enforcing
    assert guard.refusal_now("http://127.0.0.1:8090/oxfordshire-county/api") is None
    await guard.check_url("http://127.0.0.1:8090/oxfordshire-county/api")


def test_settings_read_the_allowed_lists_from_the_environment(monkeypatch):
    monkeypatch.setenv("IAP_ENV", "production")
    monkeypatch.setenv("IAP_OUTBOUND__ALLOWED_PRIVATE", '["10.20.0.0/16","case-api.internal"]')
    monkeypatch.setenv("IAP_OUTBOUND__ALLOWED_PLAINTEXT", '["10.20.0.0/16"]')
    policy = OutboundPolicy.from_settings(Settings())
    target = parse_target("http://10.20.1.2/api")
    assert policy.refusal(target, [ipaddress.ip_address("10.20.1.2")]) is None
    assert policy.allowed_private.covers_name("case-api.internal")


@pytest.mark.parametrize("entry", ["not a host", "10.0.0.0/33", "http://case-api.internal"])
def test_an_entry_that_is_no_host_or_network_is_refused(entry):
    with pytest.raises(ValidationError, match="neither a host name"):
        OutboundSettings(allowed_private=[entry])


async def test_a_name_that_now_points_inside_is_refused_once_its_answer_expires():
    resolver = FakeResolver({"partner.council.uk": [PUBLIC]})
    guard = production(resolver=resolver, cache_seconds=0)
    await guard.check_url("https://partner.council.uk/hook")
    resolver.table["partner.council.uk"] = ["10.0.0.5"]
    with pytest.raises(OutboundRefused, match=r"resolves to 10\.0\.0\.5"):
        await guard.check_url("https://partner.council.uk/hook")


async def test_answers_are_kept_for_the_cache_time():
    resolver = FakeResolver({"partner.council.uk": [PUBLIC]})
    guard = production(resolver=resolver, cache_seconds=60)
    for _ in range(3):
        await guard.check_url("https://partner.council.uk/hook")
    assert resolver.asked == ["partner.council.uk"]


async def test_the_shared_client_never_connects_to_a_refused_loopback_server(listener):
    url = f"http://127.0.0.1:{listener.port}/cases"
    refused = production()
    async with outbound_client(settings_for(Environment.production), refused) as client:
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 is a loopback address"):
            await client.post(url, json={"reference": "K7Q-M4X-PB6"})
    assert listener.connections == 0
    # The same request with the address allowed reaches it: the server was there to be reached.
    allowed = production(private=["127.0.0.1"], plaintext=["127.0.0.1"])
    async with outbound_client(settings_for(Environment.production), allowed) as client:
        assert (await client.post(url, json={})).status_code == 200
    assert listener.connections == 1


async def test_an_unresolvable_host_is_a_connection_error():
    async with outbound_client(
        settings_for(Environment.production), production(resolver=FakeResolver({}))
    ) as client:
        with pytest.raises(httpx.ConnectError, match="cannot resolve"):
            await client.get("https://nowhere.council.uk/")


def delivery() -> Delivery:
    organisation = Organisation(
        id="county",
        name="County",
        kind="county",
        areas=("E10000025",),
        adapter=AdapterConfig(type="rest-json"),
    )
    return adapter_delivery(
        organisation,
        citizen=None,
        dispatch_id=uuid.uuid4(),
        service_name="Pothole",
        service_code="pothole",
        description="A pothole",
        channel="web",
        created_at=datetime.now(UTC),
    )


async def test_an_adapter_call_refused_at_request_time_is_a_permanent_error(listener):
    guard = production()
    config = RestJsonConfig(
        type="rest-json",
        base_url=f"https://127.0.0.1:{listener.port}/api",
        api_key="k3J9vQ2mZr7WpL5aN8cT4bHf",
    )
    async with outbound_client(settings_for(Environment.production), guard) as client:
        adapter = RestJsonAdapter(config=config, client=client, timeout=5, outbound=guard)
        with pytest.raises(PermanentError, match="outbound call refused"):
            await adapter.deliver(delivery())
    assert listener.connections == 0


async def test_the_email_adapter_checks_its_server_before_connecting(listener):
    config = EmailConfig(
        type="email",
        host="127.0.0.1",
        port=listener.port,
        starttls=True,
        sender="iap@council.uk",
        recipients=["enquiries@police.uk"],
    )
    adapter = EmailAdapter(config=config, client=None, timeout=5, outbound=production())
    with pytest.raises(PermanentError, match=r"127\.0\.0\.1 is a loopback address"):
        await adapter.deliver(delivery())
    assert listener.connections == 0


async def test_the_email_adapter_retries_a_server_name_that_does_not_resolve():
    config = EmailConfig(
        type="email",
        host="mail.police.uk",
        port=587,
        starttls=True,
        sender="iap@council.uk",
        recipients=["enquiries@police.uk"],
    )
    guard = production(resolver=FakeResolver({}))
    adapter = EmailAdapter(config=config, client=None, timeout=5, outbound=guard)
    with pytest.raises(Exception, match="unknown host") as caught:
        await adapter.deliver(delivery())
    assert not isinstance(caught.value, PermanentError)


async def test_the_postcode_locator_falls_back_when_its_target_is_refused(listener):
    async with outbound_client(settings_for(Environment.production), production()) as client:
        locator = HttpLocator(client, f"https://127.0.0.1:{listener.port}", 3.0)
        place = await locator.locate(postcode="OX1 1AA", latitude=None, longitude=None)
    assert place is None
    assert listener.connections == 0
