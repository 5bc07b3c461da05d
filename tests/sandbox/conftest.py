"""The sandbox driven in-process (httpx.ASGITransport) against a catalogue that binds the
Oxfordshire organisations to every protocol; a real loopback receiver stands in for the gateway
where updates are pushed."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook, WebhookVerificationError

from app.catalogue.catalogue import AdapterConfig, Catalogue, Inbound, load_catalogue
from app.core.settings import SHIPPED_CONFIG_DIR
from app.sandbox import BackOffice, create_sandbox_app
from tests.conftest import serving

SANDBOX = "http://sandbox.test"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"county-signing-secret-0123456789").decode()
CHERWELL_PUSH_KEY = "cherwell-push-key"
POLICE_INBOX = "enquiries@thamesvalley.police.uk"
T = TypeVar("T")

ADAPTERS: dict[str, dict[str, Any]] = {
    "cherwell": {
        "type": "open311",
        "base_url": f"{SANDBOX}/cherwell/open311/v2",
        "api_key": "cherwell-key",
        "service_codes": {"missed-bin": "CDC-BIN"},
    },
    "oxford-city": {
        "type": "open311",
        "base_url": f"{SANDBOX}/oxford-city/open311/v2",
        "api_key": "city-key",
        "jurisdiction_id": "oxford.gov.uk",
    },
    "oxfordshire-county": {
        "type": "rest-json",
        "base_url": f"{SANDBOX}/oxfordshire-county/api",
        "token_url": f"{SANDBOX}/oxfordshire-county/oauth/token",
        "client_id": "iap-gateway",
        "client_secret": "county-secret",
    },
    "nhs-bob-icb": {"type": "fhir", "base_url": f"{SANDBOX}/nhs-bob-icb/fhir"},
    "thames-valley-police": {
        "type": "email",
        "host": "127.0.0.1",
        "port": 8025,
        "sender": "iap@example.org",
        "recipients": [POLICE_INBOX],
    },
}
INBOUND = {
    "cherwell": Inbound(api_key=CHERWELL_PUSH_KEY),
    "oxfordshire-county": Inbound(webhook_secret=WEBHOOK_SECRET),
}


def protocol_catalogue() -> Catalogue:
    """The shipped services and organisations, each bound to its own protocol's simulator."""
    shipped = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": SANDBOX})
    organisations = {
        org_id: organisation.model_copy(
            update={
                "adapter": AdapterConfig.model_validate(ADAPTERS[org_id]),
                "inbound": INBOUND.get(org_id, Inbound()),
            }
        )
        if org_id in ADAPTERS
        else organisation
        for org_id, organisation in shipped.organisations.items()
    }
    return shipped.model_copy(update={"organisations": organisations})


def rebind(catalogue: Catalogue, organisation_id: str, **adapter: Any) -> Catalogue:
    """The catalogue with one organisation's adapter config changed."""
    organisation = catalogue.organisations[organisation_id]
    config = AdapterConfig.model_validate({**organisation.adapter.model_dump(), **adapter})
    organisations = {
        **catalogue.organisations,
        organisation_id: organisation.model_copy(update={"adapter": config}),
    }
    return catalogue.model_copy(update={"organisations": organisations})


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return protocol_catalogue()


@pytest.fixture
def make_sandbox(catalogue: Catalogue) -> Callable[..., FastAPI]:
    """A sandbox app for this catalogue; keyword arguments as create_sandbox_app takes them."""

    def make(**options: Any) -> FastAPI:
        return create_sandbox_app(catalogue, push_delays=(0.05, 0.05, 0.05), **options)

    return make


@pytest.fixture
def sandbox_app(make_sandbox: Callable[..., FastAPI]) -> FastAPI:
    return make_sandbox()


@pytest.fixture
def office(sandbox_app: FastAPI) -> BackOffice:
    office: BackOffice = sandbox_app.state.office
    return office


@pytest.fixture
async def http(sandbox_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sandbox_app) as client:
        yield client
    await sandbox_app.state.sandbox.stop()


def client_for(app: FastAPI) -> httpx.AsyncClient:
    """A client calling the sandbox in-process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SANDBOX)


async def eventually(
    check: Callable[[], Awaitable[T | None] | T | None], *, within: float = 5, what: str
) -> T:
    """Poll `check` until it gives something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


class Gateway:
    """What a gateway's inbound endpoints receive: webhooks verified with standardwebhooks,
    Open311 pushes checked for their api_key; the first `fail_first` calls get 503."""

    def __init__(self) -> None:
        self.url = ""
        self.reset()
        self.app = FastAPI()
        self.app.post("/v1/inbound/{organisation}/servicerequestupdates")(self.open311)
        self.app.post("/v1/inbound/{organisation}")(self.webhook)

    def reset(self) -> None:
        self.webhooks: list[dict[str, Any]] = []
        self.forms: list[dict[str, str]] = []
        self.refused = 0
        self.fail_first = 0
        self.calls = 0

    async def webhook(self, organisation: str, request: Request) -> Response:
        if self._failing():
            return Response(status_code=503)
        body = (await request.body()).decode()
        try:
            payload = Webhook(WEBHOOK_SECRET).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.refused += 1
            return Response(status_code=401)
        self.webhooks.append(
            {"organisation": organisation, "headers": dict(request.headers), **payload}
        )
        return Response(status_code=204)

    async def open311(self, organisation: str, request: Request) -> Response:
        if self._failing():
            return Response(status_code=503)
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("api_key") != CHERWELL_PUSH_KEY:
            self.refused += 1
            return Response(status_code=403)
        self.forms.append({"organisation": organisation, **form})
        return Response(status_code=200)

    def _failing(self) -> bool:
        self.calls += 1
        return self.calls <= self.fail_first


@pytest.fixture(scope="session")
def gateway_server() -> Iterator[Gateway]:
    with serving(Gateway()) as gateway:
        yield gateway


@pytest.fixture
def gateway(gateway_server: Gateway) -> Gateway:
    """The loopback gateway, with nothing received yet."""
    gateway_server.reset()
    return gateway_server
