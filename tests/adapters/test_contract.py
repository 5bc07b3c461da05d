"""What every adapter promises the dispatcher, checked once for each: it delivers and names the
back-office's reference; it sends nothing the data-sharing rules withhold; a refusal is
permanent, a failure of the moment or of the network retryable, and no error quotes the
citizen. What only one protocol does stays in that protocol's own test file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import FrozenInstanceError, dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus

import httpx
import pytest
import respx

from app.adapters import ADAPTER_TYPES
from app.adapters.base import (
    Adapter,
    Delivery,
    EnquirySnapshot,
    PermanentError,
    Receipt,
    RetryableError,
)
from app.adapters.fhir import FhirAdapter
from app.adapters.open311 import Open311Adapter
from app.adapters.rest_json import RestJsonAdapter
from app.adapters.smtp import EmailAdapter
from tests.adapters import factory
from tests.adapters.factory import CITIZEN
from tests.adapters.mailserver import Mailbox, Server, free_port, readable

WITHHELD_UNLESS_SHARED = ("Ann Example", "01865 000000", "Large print")


@dataclass(frozen=True)
class HttpKind:
    """An HTTP back-office: where an enquiry is created, and how it says it was."""

    adapter: type[Adapter]
    config: dict[str, Any]
    organisation_id: str
    url: str
    created: Callable[[], httpx.Response]
    remote_reference: str
    # What a refusal with a body of no known shape adds after "HTTP 4xx from bo.test".
    refusal_suffix: str = ""
    # The header by which the back-office knows a repeat (Open311 looks before it posts instead).
    repeat_header: str | None = None


HTTP_KINDS = {
    "fhir": HttpKind(
        FhirAdapter,
        {"type": "fhir", "base_url": "http://bo.test/nhs-bob-icb/fhir"},
        "nhs-bob-icb",
        "http://bo.test/nhs-bob-icb/fhir/ServiceRequest",
        lambda: httpx.Response(201, json={"resourceType": "ServiceRequest", "id": "sr-1"}),
        "sr-1",
        repeat_header="if-none-exist",
    ),
    "open311": HttpKind(
        Open311Adapter,
        {"type": "open311", "base_url": "http://bo.test/cherwell/open311/v2", "api_key": "k3y"},
        "cherwell",
        "http://bo.test/cherwell/open311/v2/requests.json",
        lambda: httpx.Response(201, json=[{"service_request_id": "1234"}]),
        "1234",
        refusal_suffix=": no description",
    ),
    "rest-json": HttpKind(
        RestJsonAdapter,
        {"type": "rest-json", "base_url": "http://bo.test/oxfordshire-county/api"},
        "oxfordshire-county",
        "http://bo.test/oxfordshire-county/api/cases",
        lambda: httpx.Response(201, json={"id": "OCC-1"}),
        "OCC-1",
        repeat_header="idempotency-key",
    ),
}


class BackOffice(Protocol):
    """One organisation's system as a test sees it."""

    organisation_id: str
    remote_reference: str

    async def deliver(self, delivery: Delivery) -> Receipt: ...

    def sent(self) -> str:
        """Everything the last delivery carried, decoded: headers, address and body."""
        ...


class HttpBackOffice:
    def __init__(self, kind: HttpKind, router: respx.MockRouter) -> None:
        self.kind = kind
        self.organisation_id = kind.organisation_id
        self.remote_reference = kind.remote_reference
        self.route = router.post(kind.url).mock(side_effect=lambda _: kind.created())

    def answer(self, answer: httpx.Response | Exception) -> None:
        self.route.mock(side_effect=[answer])

    async def deliver(self, delivery: Delivery) -> Receipt:
        config = self.kind.adapter.config_model.model_validate(self.kind.config)
        async with httpx.AsyncClient() as client:
            adapter = self.kind.adapter(config=config, client=client, timeout=5)
            return await adapter.deliver(delivery)

    def sent(self) -> str:
        request = self.route.calls.last.request
        return unquote_plus(f"{request.url}\n{request.headers}\n{request.content.decode()}")


class MailBackOffice:
    organisation_id = "thames-valley-police"
    remote_reference = f"{factory.DISPATCH_ID}@iap.invalid"

    def __init__(self, server: Server | None) -> None:
        self.server = server

    async def deliver(self, delivery: Delivery) -> Receipt:
        port = self.server.port if self.server else free_port()
        config = EmailAdapter.config_model.model_validate(
            {
                "type": "email",
                "host": "127.0.0.1",
                "port": port,
                "sender": "iap@example.org",
                "recipients": ["enquiries@police.example.org"],
            }
        )
        async with httpx.AsyncClient() as client:
            return await EmailAdapter(config=config, client=client, timeout=5).deliver(delivery)

    def sent(self) -> str:
        assert self.server is not None
        [received] = self.server.mailbox.received
        return f"{received.mail_from}\n{received.rcpt_tos}\n{readable(received.raw)}"


@pytest.fixture(params=sorted(HTTP_KINDS))
def http_office(request: pytest.FixtureRequest) -> Iterator[HttpBackOffice]:
    with respx.mock(assert_all_called=False) as router:
        yield HttpBackOffice(HTTP_KINDS[request.param], router)


@pytest.fixture(params=[*sorted(HTTP_KINDS), "email"])
async def office(
    request: pytest.FixtureRequest, start_server: Callable[..., Server]
) -> AsyncIterator[BackOffice]:
    if request.param == "email":
        yield MailBackOffice(start_server(Mailbox()))
        return
    with respx.mock(assert_all_called=False) as router:
        yield HttpBackOffice(HTTP_KINDS[request.param], router)


def delivery(
    office: BackOffice, *, share: bool, shares: tuple[str, ...] | None = None, attempt: int = 1
) -> Delivery:
    return factory.delivery(
        office.organisation_id,
        citizen=CITIZEN,
        share=share,
        shares=shares,
        attempt=attempt,
        location={"postcode": "OX16 1AA"},
        attributes={"size": "large"},
    )


# -- delivering ------------------------------------------------------------------------------


def test_every_adapter_is_registered_by_its_type():
    for kind in HTTP_KINDS.values():
        assert ADAPTER_TYPES[kind.config["type"]] is kind.adapter
    assert ADAPTER_TYPES["email"] is EmailAdapter


async def test_delivers_and_returns_the_back_offices_reference(office: BackOffice):
    receipt = await office.deliver(delivery(office, share=True))
    assert receipt.remote_reference == office.remote_reference
    sent = office.sent()
    assert factory.REFERENCE in sent
    assert "ann@example.org" in sent


# -- the data-sharing rules ------------------------------------------------------------------


async def test_without_consent_nothing_about_the_citizen_is_sent(office: BackOffice):
    await office.deliver(delivery(office, share=False))
    sent = office.sent()
    for value in CITIZEN.values():
        if value not in ("email", "cy"):  # words that occur anyway
            assert value not in sent


async def test_a_narrow_agreement_sends_only_its_fields(office: BackOffice):
    await office.deliver(delivery(office, share=True, shares=("email",)))
    sent = office.sent()
    assert "ann@example.org" in sent
    for value in WITHHELD_UNLESS_SHARED:
        assert value not in sent


async def test_an_agreement_sharing_nothing_sends_nothing_about_the_citizen(office: BackOffice):
    await office.deliver(delivery(office, share=True, shares=()))
    sent = office.sent()
    for value in (*WITHHELD_UNLESS_SHARED, "ann@example.org"):
        assert value not in sent


def test_only_the_fields_an_agreement_lists_are_shared():
    limited = factory.CATALOGUE.organisations["cherwell"].model_copy(
        update={"shares": ("name", "phone")}
    )

    def shared(organisation: Any, *, share: bool) -> Any:
        enquiry = factory.stored_enquiry(share=share)
        return EnquirySnapshot.of(
            enquiry, citizen=CITIZEN, organisation=organisation, service_name=None
        ).citizen

    assert shared(limited, share=True) == {"name": "Ann Example", "phone": "01865 000000"}
    nothing = limited.model_copy(update={"shares": ()})
    assert shared(nothing, share=True) is None
    assert shared(limited, share=False) is None


# -- what each failure means -----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409, 425, 429])
async def test_server_side_and_transient_answers_are_retryable(
    http_office: HttpBackOffice, status: int
):
    http_office.answer(httpx.Response(status, headers={"Retry-After": "7"}))
    with pytest.raises(RetryableError) as caught:
        await http_office.deliver(delivery(http_office, share=False))
    assert caught.value.retry_after == 7
    assert str(status) in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_other_client_errors_are_permanent(http_office: HttpBackOffice, status: int):
    http_office.answer(httpx.Response(status, text="nope"))
    with pytest.raises(PermanentError) as caught:
        await http_office.deliver(delivery(http_office, share=False))
    assert str(caught.value) == f"HTTP {status} from bo.test{http_office.kind.refusal_suffix}"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(403, text="Forbidden: ann@example.org"),
        httpx.Response(422, json={"error": "bad email ann@example.org"}),
    ],
)
async def test_a_refusal_never_echoes_its_body(http_office: HttpBackOffice, answer):
    # A body of no known shape may repeat what we sent, the citizen's details among it.
    http_office.answer(answer)
    with pytest.raises(PermanentError) as caught:
        await http_office.deliver(delivery(http_office, share=True))
    status = answer.status_code
    assert str(caught.value) == f"HTTP {status} from bo.test{http_office.kind.refusal_suffix}"


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("x"),
    ],
)
async def test_transport_failures_are_retryable(http_office: HttpBackOffice, error: Exception):
    http_office.answer(error)
    with pytest.raises(RetryableError, match=type(error).__name__):
        await http_office.deliver(delivery(http_office, share=False))


@pytest.mark.parametrize("name", sorted(n for n, kind in HTTP_KINDS.items() if kind.repeat_header))
async def test_a_repeat_after_a_timeout_sends_the_same_key_and_body(name: str):
    kind = HTTP_KINDS[name]
    with respx.mock(assert_all_called=False) as router:
        office = HttpBackOffice(kind, router)
        already = httpx.Response(200, json=kind.created().json())
        office.route.mock(side_effect=[httpx.ReadTimeout("slow"), already])
        with pytest.raises(RetryableError, match="ReadTimeout"):
            await office.deliver(delivery(office, share=True))
        receipt = await office.deliver(delivery(office, share=True, attempt=2))
    assert receipt.remote_reference == kind.remote_reference
    first, second = (call.request for call in office.route.calls)
    assert first.headers[kind.repeat_header] == second.headers[kind.repeat_header]
    assert first.content == second.content


async def test_a_mail_server_that_cannot_be_reached_is_retryable():
    office = MailBackOffice(None)
    with pytest.raises(RetryableError, match="SMTPConnectError"):
        await office.deliver(delivery(office, share=False))


def test_the_snapshot_cannot_be_changed_by_an_adapter():
    snapshot = delivery(MailBackOffice(None), share=True).enquiry
    with pytest.raises(FrozenInstanceError):
        snapshot.description = "changed"  # type: ignore[misc]
    for mapping in (snapshot.attributes, snapshot.location, snapshot.citizen):
        with pytest.raises(TypeError):
            mapping["size"] = "small"  # type: ignore[index]
