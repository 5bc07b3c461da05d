"""IAP_ENV=production at start-up: sandbox and internal targets, and placeholder secrets, are
refused with every offending field named and no secret shown; a proper configuration starts."""

from __future__ import annotations

import base64
import shutil
import socket
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import BaseModel, SecretStr

from app.clients.service import Scope
from app.core.crypto import DEVELOPMENT_KEY, DEVELOPMENT_LOOKUP_KEY, new_key
from app.core.errors import ConfigError
from app.core.settings import (
    SHIPPED_CONFIG_DIR,
    Environment,
    LocatorSettings,
    OutboundSettings,
    PrivacySettings,
)
from app.main import create_app
from app.production import looks_like_placeholder, secrets_in, shipped_defaults, weakness
from app.runtime import load_configured_catalogue
from tests.cli.test_cli import iap
from tests.conftest import bearer, enquiry_body, make_key, make_settings
from tests.core.test_outbound import PUBLIC, FakeResolver, Listener

COUNTY_HOST = "cases.oxfordshire.gov.uk"
STRONG = {
    "county": "k3J9vQ2mZr7WpL5aN8cT4bHf",
    "open311": "Rb7dKq2WzX9mLp4sVn6tHc3Y",
    "webhook": "whsec_" + base64.b64encode(bytes(range(1, 33))).decode(),
}
RESOLVER = {
    COUNTY_HOST: [PUBLIC],
    "open311.cherwell.gov.uk": ["81.2.69.161"],
    "postcodes.iap-partner.uk": ["81.2.69.162"],
    "smtp.thamesvalley.police.uk": ["81.2.69.163"],
}


def organisations(**county_adapter) -> list[dict]:
    """A small production configuration: the county, a district, the police and the desk."""
    county = {
        "type": "rest-json",
        "base_url": f"https://{COUNTY_HOST}/api",
        "token_url": f"https://{COUNTY_HOST}/oauth/token",
        "client_id": "iap-gateway",
        "client_secret": STRONG["county"],
        **county_adapter,
    }
    return [
        {
            "id": "oxfordshire-county",
            "name": "Oxfordshire County Council",
            "kind": "county",
            "areas": ["E10000025"],
            "adapter": county,
            "inbound": {"webhook_secret": STRONG["webhook"]},
        },
        {
            "id": "cherwell",
            "name": "Cherwell District Council",
            "kind": "district",
            "areas": ["E07000177"],
            "adapter": {
                "type": "open311",
                "base_url": "https://open311.cherwell.gov.uk/v2",
                "api_key": STRONG["open311"],
            },
        },
        {
            "id": "thames-valley-police",
            "name": "Thames Valley Police",
            "kind": "police",
            "areas": ["E23000029"],
            "adapter": {
                "type": "email",
                "host": "smtp.thamesvalley.police.uk",
                "port": 587,
                "starttls": True,
                "sender": "iap@oxfordshire.gov.uk",
                "recipients": ["enquiries@thamesvalley.police.uk"],
            },
        },
        {
            "id": "contact-centre",
            "name": "Contact centre",
            "kind": "triage",
            "adapter": {"type": "triage"},
        },
    ]


def config_dir(tmp_path: Path, entries: list[dict]) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "organisations.yaml").write_text(yaml.safe_dump({"organisations": entries}))
    for name in ("services.yaml", "postcode_areas.csv"):
        shutil.copy(SHIPPED_CONFIG_DIR / name, folder / name)
    return folder


def production_settings(
    database_url: str,
    folder: Path = SHIPPED_CONFIG_DIR,
    sandbox_url: str = "http://127.0.0.1:8090",
    **overrides,
):
    privacy = PrivacySettings(
        keys=[SecretStr(new_key())], lookup_key=SecretStr("Zq8vN3kLw7Rt2mXc9Pb4Hs6J")
    )
    return make_settings(
        database_url,
        sandbox_url,
        env=Environment.production,
        config_dir=folder,
        **{"privacy": privacy, **overrides},
    )


def refusal(settings, resolver=None) -> str:
    with pytest.raises(ConfigError) as caught:
        create_app(settings, resolver=resolver or FakeResolver(RESOLVER))
    return str(caught.value)


def test_the_shipped_configuration_is_refused_field_by_field_without_its_secrets(database_url):
    message = refusal(production_settings(database_url))
    catalogue = load_configured_catalogue(production_settings(database_url))
    assert message.startswith("IAP_ENV=production refuses this configuration:")
    for organisation in catalogue.organisations:
        if organisation != "contact-centre":
            assert f"organisations.yaml: {organisation}: adapter." in message
    assert "oxfordshire-county: adapter.token_url: http://127.0.0.1:8090/" in message
    assert (
        "thames-valley-police: adapter.host: 127.0.0.1:8025 is the sandbox's SMTP sink" in message
    )
    for field in ("adapter.client_secret", "inbound.webhook_secret", "adapter.api_key"):
        assert f"oxfordshire-county: {field}" in message or f"oxford-city: {field}" in message
    assert "oxford-city: inbound.api_key: is the sandbox's value shipped" in message
    secrets = [
        secret
        for organisation in catalogue.organisations.values()
        for _, secret in secrets_in(organisation.inbound)
    ]
    for secret in [*secrets, *(d for d in shipped_defaults() if d.startswith("sandbox-"))]:
        assert secret not in message


def test_the_shipped_configuration_is_refused_even_with_the_sandbox_moved(database_url):
    settings = production_settings(database_url, sandbox_url=f"https://{COUNTY_HOST}")
    message = refusal(settings)
    assert f"https://{COUNTY_HOST}/oxfordshire-county/api is the sandbox's address" in message


def test_the_worker_command_refuses_it_too(database_url):
    result = iap("worker", database_url=database_url, env={"IAP_ENV": "production"}, check=False)
    assert result.returncode == 2
    assert "IAP_ENV=production refuses this configuration" in result.stderr
    assert "cherwell: adapter.api_key: is the sandbox's value shipped" in result.stderr
    assert "sandbox-cherwell" not in result.stderr


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("10.4.5.6", "a private address"),
        ("169.254.169.254", "the cloud metadata address"),
        ("fd00::7", "a unique-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("239.0.0.1", "a multicast address"),
    ],
)
def test_an_organisation_whose_host_resolves_inside_is_refused_by_name(
    database_url, tmp_path, address, kind
):
    folder = config_dir(tmp_path, organisations())
    resolver = FakeResolver({**RESOLVER, COUNTY_HOST: [address]})
    message = refusal(production_settings(database_url, folder), resolver)
    expected = f"{COUNTY_HOST} resolves to {address}, which is {kind}"
    assert f"oxfordshire-county: adapter.base_url: {expected}" in message
    assert f"oxfordshire-county: adapter.token_url: {expected}" in message
    assert "cherwell" not in message


def test_plain_http_and_smtp_without_tls_are_refused(database_url, tmp_path):
    entries = organisations(base_url=f"http://{COUNTY_HOST}/api")
    entries[2]["adapter"]["starttls"] = False
    message = refusal(production_settings(database_url, config_dir(tmp_path, entries)))
    assert f"adapter.base_url: http://{COUNTY_HOST} is not encrypted" in message
    assert "adapter.host: smtp://smtp.thamesvalley.police.uk is not encrypted" in message


def test_the_postcode_locator_url_is_checked(database_url, tmp_path):
    settings = production_settings(
        database_url,
        config_dir(tmp_path, organisations()),
        locator=LocatorSettings(http_url="http://localhost:8000"),
    )
    expected = "IAP_LOCATOR__HTTP_URL: localhost resolves to 127.0.0.1, which is a loopback"
    assert expected in refusal(settings)


PLACEHOLDERS = {
    "empty": "",
    "short": "k3J9vQ2m",
    "change-me": "please-change-me-before-go-live",
    "changeme": "CHANGEME0123456789abc",
    "example": "example-client-secret-value",
    "placeholder": "Placeholder00000000000000",
    "sandbox": "sandbox-cherwell",
    "secret": "my-county-SECRET-2026-abcd",
    "test": "test-key-7Gh2Lp9QwXz4",
    "xxx": "xxxxxxxxxxxxxxxxxxxxxxxx",
    "few characters": "abababababababababababab",
}


@pytest.mark.parametrize(("label", "value"), list(PLACEHOLDERS.items()))
def test_a_placeholder_secret_is_refused_without_showing_it(database_url, tmp_path, label, value):
    folder = config_dir(tmp_path, organisations(client_secret=value))
    message = refusal(production_settings(database_url, folder))
    assert "organisations.yaml: oxfordshire-county: adapter.client_secret: " in message
    if value:
        assert value not in message
        assert value.lower() not in message.lower()


def test_every_offending_secret_is_listed_at_once(database_url, tmp_path):
    entries = organisations(client_secret="changeme")
    entries[0]["inbound"] = {
        "webhook_secret": "whsec_" + base64.b64encode(b"iap test webhook key 2026").decode(),
        "api_key": "sandbox-oxford-city-updates",
    }
    entries[1]["adapter"]["api_key"] = "xxx"
    message = refusal(production_settings(database_url, config_dir(tmp_path, entries)))
    assert "oxfordshire-county: adapter.client_secret: is shorter than 16 characters" in message
    assert "oxfordshire-county: inbound.webhook_secret: looks like a placeholder" in message
    assert "oxfordshire-county: inbound.api_key: is the sandbox's value shipped" in message
    assert "cherwell: adapter.api_key: is shorter than 16 characters" in message
    for value in ("changeme", "aWFwIHRlc3Qg", "sandbox-oxford-city-updates", "'xxx'"):
        assert value not in message


class VaultSettings(BaseModel):
    key: SecretStr = SecretStr("change-me")
    old_keys: list[SecretStr] = []
    by_purpose: dict[str, SecretStr] = {}


def test_a_secret_anywhere_in_the_settings_is_checked_without_being_listed(database_url, tmp_path):
    class SettingsWithVault(type(production_settings(database_url))):  # type: ignore[misc]
        vault: VaultSettings = VaultSettings()
        token: SecretStr = SecretStr("k3J9vQ2mZr7WpL5aN8cT4bHf")

    base = production_settings(database_url, config_dir(tmp_path, organisations()))
    vault = VaultSettings(
        old_keys=[SecretStr("GoodKey-8fJ2kLm9Qz4Rt7Wv"), SecretStr("")],
        by_purpose={"export": SecretStr("example")},
    )
    settings = SettingsWithVault(**{**base.model_dump(), "vault": vault})
    message = refusal(settings)
    assert "IAP_VAULT__KEY: " in message
    assert "IAP_VAULT__OLD_KEYS[1]: is empty" in message
    assert "IAP_VAULT__BY_PURPOSE__EXPORT: " in message
    assert "IAP_VAULT__OLD_KEYS[0]" not in message
    assert "IAP_TOKEN" not in message
    assert "change-me" not in message
    assert "GoodKey" not in message


@pytest.mark.parametrize(
    "secret",
    [
        STRONG["county"],
        STRONG["webhook"],
        "whsec_MfKQ9r2PEpNmJEdBZ9s4qHfEYXk7D3Hv",
        "iap_3000d09c0d83_47sdU5EOqLw8Z2vNf0cYb1tRhK9xPmGa",
    ],
)
def test_strong_secrets_pass(secret):
    assert weakness(secret) is None
    assert not looks_like_placeholder(secret)


async def test_a_proper_production_configuration_starts(database_url, tmp_path):
    resolver = FakeResolver(RESOLVER)
    settings = production_settings(
        database_url,
        config_dir(tmp_path, organisations()),
        locator=LocatorSettings(http_url="https://postcodes.iap-partner.uk"),
    )
    application = create_app(settings, run_dispatcher=False, resolver=resolver)
    assert set(resolver.asked) == set(RESOLVER)
    async with application.router.lifespan_context(application):
        assert application.state.runtime.client is not None


async def test_private_targets_start_when_listed(database_url, tmp_path):
    entries = organisations(base_url="http://case-api.internal:8080/api", token_url=None)
    entries[0]["adapter"]["api_key"] = STRONG["open311"] + "x"
    del entries[0]["adapter"]["client_id"], entries[0]["adapter"]["client_secret"]
    resolver = FakeResolver({**RESOLVER, "case-api.internal": ["10.20.1.5"]})
    outbound = OutboundSettings(
        allowed_private=["10.20.0.0/16"], allowed_plaintext=["10.20.0.0/16"]
    )
    settings = production_settings(database_url, config_dir(tmp_path, entries), outbound=outbound)
    create_app(settings, run_dispatcher=False, resolver=resolver)


@pytest.fixture
def no_system_dns(monkeypatch):
    """Any look-up of a name other than loopback's fails, so that a mistake in the guard cannot
    send a DNS query (or anything else) off this machine."""
    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(f"the test refuses to resolve {host}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)


async def test_a_name_that_later_points_at_loopback_makes_the_dispatch_dead_at_once(
    database_url, tmp_path, no_system_dns
):
    listener = await Listener().start()
    entries = organisations(
        base_url=f"https://{COUNTY_HOST}:{listener.port}/api",
        token_url=None,
        api_key=STRONG["open311"] + "c",
    )
    del entries[0]["adapter"]["client_id"], entries[0]["adapter"]["client_secret"]
    resolver = FakeResolver(dict(RESOLVER))
    settings = production_settings(
        database_url,
        config_dir(tmp_path, entries),
        outbound=OutboundSettings(resolve_cache_seconds=0),
    )
    application = create_app(settings, run_dispatcher=False, resolver=resolver)
    try:
        async with application.router.lifespan_context(application):
            resolver.table[COUNTY_HOST] = ["127.0.0.1"]  # DNS now points inside
            reference = await submit(application)
            await application.state.runtime.dispatcher.run_until_idle()
            enquiry = await read(application, reference)
    finally:
        listener.server.close()
        await listener.server.wait_closed()
    [county] = enquiry["destinations"]
    assert county["state"] == "dead"
    assert county["attempts"] == 1
    assert "outbound call refused" in county["last_error"]
    assert (
        f"{COUNTY_HOST} resolves to 127.0.0.1, which is a loopback address" in county["last_error"]
    )
    assert listener.connections == 0


async def submit(application) -> str:
    key = await make_key(application.state.iap.engine, Scope.admin)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://iap.test", headers=bearer(key)
    ) as http:
        response = await http.post("/v1/enquiries", json=enquiry_body())
    assert response.status_code == 201, response.text
    return str(response.json()["reference"])


async def read(application, reference: str) -> dict:
    key = await make_key(application.state.iap.engine, Scope.admin)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://iap.test", headers=bearer(key)
    ) as http:
        return dict((await http.get(f"/v1/enquiries/{reference}")).json())


def test_production_needs_its_own_keys_for_citizen_details(database_url, tmp_path):
    folder = config_dir(tmp_path, organisations())
    message = refusal(production_settings(database_url, folder, privacy=PrivacySettings()))
    assert "IAP_PRIVACY__KEYS: not set" in message
    assert "IAP_PRIVACY__LOOKUP_KEY: not set" in message
    public = PrivacySettings(
        keys=[SecretStr(DEVELOPMENT_KEY)], lookup_key=SecretStr(DEVELOPMENT_LOOKUP_KEY)
    )
    message = refusal(production_settings(database_url, folder, privacy=public))
    assert "IAP_PRIVACY__KEYS[0]: is the public development key" in message
    assert "IAP_PRIVACY__LOOKUP_KEY: is the public development key" in message
    assert DEVELOPMENT_KEY not in message


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("memory://", False),
        ("redis://10.0.0.5:6379/0", False),
        ("redis://:changeme@10.0.0.5:6379/0", True),
        ("redis://iap:Zq8vN3kLw7Rt2mXc9Pb4Hs6J@10.0.0.5:6379/0", False),
    ],
)
def test_a_connection_url_is_judged_by_its_password(url, refused):
    assert (weakness(url) is not None) is refused
