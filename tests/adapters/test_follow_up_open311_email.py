"""Follow-ups from the open311 and email adapters to the real sandbox on loopback, as a council's
Open311 server and the police mailbox receive them: each kind once, field by field; a repeat
adding nothing; the council fetching each media_url (a real server here, as the gateway is
end to end) and getting the photo without EXIF; the email threaded on the first message; and
the citizen's language and accessibility needs reaching the districts (item 6)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response

from app.adapters.base import Delivery, FollowUp, PermanentError, RetryableError
from app.adapters.open311 import Open311Adapter, Open311Config
from app.adapters.smtp import EmailAdapter, EmailConfig
from app.catalogue.catalogue import Catalogue
from app.core.vocabulary import MessageKind
from app.sandbox import BackOffice, Behaviour
from tests.adapters import factory
from tests.conftest import ThreadedServer, serving

COUNCIL = "cherwell"
POLICE = "thames-valley-police"
PHOTOS = {1: factory.photo(), 2: factory.photo(size=(40, 30))}
WITH_EXIF = factory.photo(exif=True)


class Gateway:
    """Serves attachments as the gateway does at their signed URLs, counting each fetch."""

    def __init__(self) -> None:
        self.url = ""
        self.app = FastAPI()
        self.app.get("/v1/attachments/{name}")(self.serve)
        self.reset()

    def reset(self) -> None:
        self.fetched: list[str] = []

    async def serve(self, name: str, signature: str = "") -> Response:
        self.fetched.append(name)
        if signature != "good":
            return Response(status_code=403)
        if name == "exif":
            return Response(WITH_EXIF, media_type="image/jpeg")
        if name not in ("1", "2"):
            return Response(status_code=404)
        return Response(PHOTOS[int(name)], media_type="image/jpeg")

    def signed(self, name: str, *, signature: str = "good") -> str:
        return f"{self.url}/v1/attachments/{name}?expires=9999999999&signature={signature}"


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[Gateway]:
    with serving(Gateway()) as gateway:
        yield gateway


@pytest.fixture
def gateway(gateway_server: Gateway) -> Gateway:
    gateway_server.reset()
    return gateway_server


def catalogue(sandbox: ThreadedServer) -> Catalogue:
    found: Catalogue = sandbox.app.state.sandbox.catalogue  # type: ignore[attr-defined]
    return found


def open311(sandbox: ThreadedServer, client: httpx.AsyncClient, **overrides: Any) -> Open311Adapter:
    adapter = catalogue(sandbox).organisations[COUNCIL].adapter.model_dump()
    config = Open311Config.model_validate(adapter | overrides)
    return Open311Adapter(config=config, client=client, timeout=5)


def email(sandbox: ThreadedServer, client: httpx.AsyncClient) -> EmailAdapter:
    adapter = catalogue(sandbox).organisations[POLICE].adapter.model_dump()
    return EmailAdapter(config=EmailConfig.model_validate(adapter), client=client, timeout=5)


@pytest.fixture
async def client() -> Any:
    async with httpx.AsyncClient() as shared:
        yield shared


def first(organisation: str, **fields: Any) -> Delivery:
    values: dict[str, Any] = {
        "citizen": factory.CITIZEN,
        "service_code": "missed-bin" if organisation == COUNCIL else "anti-social-behaviour",
        "location": {"postcode": "OX16 1AA"},
    }
    return factory.delivery(organisation, **(values | fields))


def follow_up(organisation: str, remote_reference: str, **fields: Any) -> FollowUp:
    return factory.follow_up(
        organisation,
        remote_reference=remote_reference,
        service_code="missed-bin" if organisation == COUNCIL else "anti-social-behaviour",
        **fields,
    )


def photos(gateway: Gateway) -> tuple[Any, ...]:
    return tuple(
        factory.attachment_file(PHOTOS[n], number=n, url=gateway.signed(str(n))) for n in (1, 2)
    )


async def council_case(sandbox: ThreadedServer, client: httpx.AsyncClient) -> str:
    receipt = await open311(sandbox, client).deliver(first(COUNCIL))
    assert receipt.remote_reference is not None
    return receipt.remote_reference


# -- Open311: POST servicerequestupdates --------------------------------------------------------


async def test_information_with_two_photos_arrives_once_with_each_photo_fetched(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient, gateway: Gateway
):
    case_id = await council_case(sandbox, client)
    information = follow_up(COUNCIL, case_id, attachments=photos(gateway))
    receipt = await open311(sandbox, client).follow_up(information)

    case = back_office.cases[COUNCIL][case_id]
    [held] = case["follow_ups"]
    assert receipt.remote_reference == held["id"] == f"{case_id}-U1"
    assert held["key"] == str(factory.FOLLOW_UP_ID)
    assert held["kind"] == "information"
    assert held["text"] == "The pothole is on the north side, by the bus stop"
    assert held["status"] == "OPEN"
    assert held["attachments"] == [
        {
            "content_type": "image/jpeg",
            "size": len(PHOTOS[n]),
            "sha256": hashlib.sha256(PHOTOS[n]).hexdigest(),
            "exif": False,
        }
        for n in (1, 2)
    ]
    assert gateway.fetched == ["1", "2"]
    received = held["received"]
    assert received == {
        "jurisdiction_id": "cherwell",
        "service_request_id": case_id,
        "update_id": str(factory.FOLLOW_UP_ID),
        "updated_datetime": "2026-11-25T09:30:00Z",
        "status": "OPEN",
        "description": "The pothole is on the north side, by the bus stop",
        "email": "ann@example.org",
        "first_name": "Ann",
        "last_name": "Example",
        "phone": "01865 000000",
        "media_url": [f"{gateway.url}/v1/attachments/{n}" for n in (1, 2)],
    }
    assert "signature" not in str(case)
    assert case["status"] == "open"  # an update moves no status
    assert case["updates"] == []


async def test_a_repeat_update_id_adds_nothing_and_fetches_nothing(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient, gateway: Gateway
):
    case_id = await council_case(sandbox, client)
    adapter = open311(sandbox, client)
    information = follow_up(COUNCIL, case_id, attachments=photos(gateway))
    one = await adapter.follow_up(information)
    two = await adapter.follow_up(
        follow_up(COUNCIL, case_id, attempt=2, attachments=photos(gateway))
    )
    assert one == two
    assert len(back_office.cases[COUNCIL][case_id]["follow_ups"]) == 1
    assert back_office.follow_up_posts[(COUNCIL, str(factory.FOLLOW_UP_ID))] == 2
    assert gateway.fetched == ["1", "2"]


async def test_a_repeat_after_the_council_kept_the_update_and_went_quiet_adds_nothing(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient
):
    case_id = await council_case(sandbox, client)
    back_office.behaviour[COUNCIL] = Behaviour(timeout=True, latency_ms=1500)
    hasty = Open311Adapter(config=open311(sandbox, client).config, client=client, timeout=0.3)
    with pytest.raises(RetryableError, match="ReadTimeout") as caught:
        await hasty.follow_up(follow_up(COUNCIL, case_id))
    assert caught.value.ambiguous
    back_office.behaviour.clear()
    receipt = await open311(sandbox, client).follow_up(follow_up(COUNCIL, case_id, attempt=2))
    [held] = back_office.cases[COUNCIL][case_id]["follow_ups"]
    assert receipt.remote_reference == held["id"]


async def test_a_withdrawal_arrives_once_as_closed_with_its_reason(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient
):
    case_id = await council_case(sandbox, client)
    withdrawal = follow_up(
        COUNCIL, case_id, kind=MessageKind.withdrawal, text="Collected after all", share=False
    )
    await open311(sandbox, client).follow_up(withdrawal)
    [held] = back_office.cases[COUNCIL][case_id]["follow_ups"]
    assert (held["kind"], held["status"], held["text"]) == (
        "withdrawal",
        "CLOSED",
        "Collected after all",
    )
    assert held["attachments"] == []
    assert not {"email", "first_name", "last_name", "phone"} & set(held["received"])


@pytest.mark.parametrize(("extended", "status"), [(False, "OPEN"), (True, "REOPEN")])
async def test_a_reopening_of_a_fixed_case_arrives_once_as_a_reopening(
    sandbox: ThreadedServer,
    back_office: BackOffice,
    client: httpx.AsyncClient,
    extended: bool,
    status: str,
):
    case_id = await council_case(sandbox, client)
    moved = await client.post(
        f"{sandbox.url}/_sandbox/{COUNCIL}/cases/{case_id}/status",
        json={"status": "fixed", "description": "Collected"},
    )
    assert moved.status_code == 200
    reopening = follow_up(COUNCIL, case_id, kind=MessageKind.reopening, text="Missed again")
    await open311(sandbox, client, extended_statuses=extended).follow_up(reopening)
    shown = (await client.get(f"{sandbox.url}/_sandbox/{COUNCIL}/cases/{case_id}")).json()
    [held] = shown["follow_ups"]
    assert (held["kind"], held["status"], held["text"]) == ("reopening", status, "Missed again")


async def test_an_unknown_request_gets_open311s_error_and_is_permanent(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient
):
    with pytest.raises(PermanentError, match=r"HTTP 404 .*Service request 999999 not found"):
        await open311(sandbox, client).follow_up(follow_up(COUNCIL, "999999"))
    assert back_office.follow_up_posts == {(COUNCIL, str(factory.FOLLOW_UP_ID)): 1}


@pytest.mark.parametrize(
    ("change", "status", "said"),
    [
        ({"api_key": "wrong"}, 403, "Invalid api_key"),
        ({"update_id": ""}, 400, "Missing required fields: update_id"),
        ({"status": "DONE"}, 400, "status 'DONE' is not a status of ours"),
        ({"updated_datetime": "yesterday"}, 400, "updated_datetime is not an ISO 8601 date"),
        ({"description": None}, 400, "Missing required fields: description"),
    ],
)
async def test_a_form_the_council_cannot_take_gets_its_error_and_files_nothing(
    sandbox: ThreadedServer,
    back_office: BackOffice,
    client: httpx.AsyncClient,
    change: dict[str, Any],
    status: int,
    said: str,
):
    case_id = await council_case(sandbox, client)
    config = open311(sandbox, client).config
    form = {
        "api_key": config.api_key.get_secret_value(),
        "service_request_id": case_id,
        "update_id": "u-1",
        "status": "OPEN",
        "updated_datetime": "2026-11-25T09:30:00Z",
        "description": "More",
    } | change
    answer = await client.post(
        f"{str(config.base_url).rstrip('/')}/servicerequestupdates.json",
        data={k: v for k, v in form.items() if v is not None},
    )
    assert answer.status_code == status
    assert answer.json() == [{"code": status, "description": said}]
    assert back_office.cases[COUNCIL][case_id]["follow_ups"] == []


@pytest.mark.parametrize(
    ("signature", "name", "status"), [("bad", "1", 400), ("good", "gone", 400)]
)
async def test_a_media_url_that_cannot_be_fetched_files_nothing(
    sandbox: ThreadedServer,
    back_office: BackOffice,
    client: httpx.AsyncClient,
    gateway: Gateway,
    signature: str,
    name: str,
    status: int,
):
    case_id = await council_case(sandbox, client)
    broken = factory.attachment_file(url=gateway.signed(name, signature=signature))
    with pytest.raises(PermanentError, match=f"HTTP {status} .*media_url answered HTTP 40"):
        await open311(sandbox, client).follow_up(
            follow_up(COUNCIL, case_id, attachments=(photos(gateway)[0], broken))
        )
    assert back_office.cases[COUNCIL][case_id]["follow_ups"] == []


async def test_the_council_can_tell_a_photo_that_still_has_its_exif(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient, gateway: Gateway
):
    # The gateway never serves one (it re-encodes every image); this shows the check is real.
    case_id = await council_case(sandbox, client)
    raw = factory.attachment_file(WITH_EXIF, url=gateway.signed("exif"))
    await open311(sandbox, client).follow_up(follow_up(COUNCIL, case_id, attachments=(raw,)))
    [held] = back_office.cases[COUNCIL][case_id]["follow_ups"]
    assert [a["exif"] for a in held["attachments"]] == [True]


# -- email: a reply in the thread ------------------------------------------------------------


async def police_case(sandbox: ThreadedServer, client: httpx.AsyncClient) -> str:
    receipt = await email(sandbox, client).deliver(first(POLICE))
    assert receipt.remote_reference is not None
    return receipt.remote_reference


async def test_an_email_follow_up_with_two_photos_is_filed_on_the_case_it_answers(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient, gateway: Gateway
):
    case_id = await police_case(sandbox, client)
    assert case_id == f"{factory.DISPATCH_ID}@iap.invalid"
    information = follow_up(POLICE, case_id, attachments=photos(gateway))
    receipt = await email(sandbox, client).follow_up(information)
    assert receipt.remote_reference == f"{factory.FOLLOW_UP_ID}@iap.invalid"

    case = back_office.cases[POLICE][case_id]
    [held] = case["follow_ups"]
    assert held["key"] == f"{factory.FOLLOW_UP_ID}@iap.invalid"
    assert held["kind"] == "information"
    assert held["status"] is None
    assert "The pothole is on the north side, by the bus stop" in held["text"]
    assert held["attachments"] == [
        {
            "content_type": "image/jpeg",
            "size": len(PHOTOS[n]),
            "sha256": hashlib.sha256(PHOTOS[n]).hexdigest(),
            "exif": False,
            "filename": f"photo-{n}.jpg",
        }
        for n in (1, 2)
    ]
    assert held["received"]["in_reply_to"] == case_id
    assert held["received"]["references"] == f"<{case_id}>"
    assert held["received"]["subject"].startswith("Re: IAP enquiry ")
    assert gateway.fetched == []  # the files travel in the message itself
    # One case, one create: the reply opened nothing.
    assert list(back_office.cases[POLICE]) == [case_id]
    assert back_office.posts[POLICE] == 1
    assert [m["duplicate"] for m in back_office.mail] == [False, False]


async def test_a_repeated_email_follow_up_adds_nothing(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient
):
    case_id = await police_case(sandbox, client)
    adapter = email(sandbox, client)
    await adapter.follow_up(follow_up(POLICE, case_id))
    await adapter.follow_up(follow_up(POLICE, case_id, attempt=2))
    assert len(back_office.cases[POLICE][case_id]["follow_ups"]) == 1
    key = f"{factory.FOLLOW_UP_ID}@iap.invalid"
    assert back_office.follow_up_posts[(POLICE, key)] == 2
    assert [m["duplicate"] for m in back_office.mail] == [False, False, True]


@pytest.mark.parametrize("kind", [MessageKind.withdrawal, MessageKind.reopening])
async def test_an_email_withdrawal_and_reopening_arrive_once_as_their_kind(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient, kind: MessageKind
):
    case_id = await police_case(sandbox, client)
    said = follow_up(POLICE, case_id, kind=kind, text="Sorted with the neighbours")
    await email(sandbox, client).follow_up(said)
    [held] = back_office.cases[POLICE][case_id]["follow_ups"]
    assert held["kind"] == kind.value
    assert "Sorted with the neighbours" in held["text"]


async def test_a_reply_to_no_case_opens_none(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient
):
    stray = factory.follow_up(
        POLICE, remote_reference="x", dispatch_id=uuid.UUID(int=77), service_code="x"
    )
    await email(sandbox, client).follow_up(stray)
    assert POLICE not in back_office.cases
    assert len(back_office.mail) == 1


# -- item 6: language and accessibility needs reach the districts ---------------------------------


async def test_the_districts_receive_the_citizens_language_and_accessibility_needs(
    sandbox: ThreadedServer, back_office: BackOffice, client: httpx.AsyncClient
):
    case_id = await council_case(sandbox, client)
    case = back_office.cases[COUNCIL][case_id]
    assert case["citizen"] == {
        "name": "Ann Example",
        "email": "ann@example.org",
        "phone": "01865 000000",
        "language": "cy",
        "accessibility_needs": "Large print",
    }
    assert case["attributes"]["iap_language"] == "cy"
    assert case["attributes"]["iap_accessibility"] == "Large print"
    base = catalogue(sandbox).organisations[COUNCIL].adapter.model_dump()["base_url"]
    definition = (await client.get(f"{base}/services/CDC-BIN.json")).json()
    hidden = {a["code"]: a["variable"] for a in definition["attributes"] if not a["variable"]}
    assert hidden == {"iap_reference": False, "iap_language": False, "iap_accessibility": False}


@pytest.mark.parametrize(("share", "shares"), [(False, None), (True, ("name", "email"))])
async def test_without_consent_or_agreement_the_districts_receive_neither(
    sandbox: ThreadedServer,
    back_office: BackOffice,
    client: httpx.AsyncClient,
    share: bool,
    shares: tuple[str, ...] | None,
):
    receipt = await open311(sandbox, client).deliver(first(COUNCIL, share=share, shares=shares))
    case = back_office.cases[COUNCIL][str(receipt.remote_reference)]
    assert "iap_language" not in case["attributes"]
    assert "iap_accessibility" not in case["attributes"]
    assert not {"language", "accessibility_needs"} & set(case.get("citizen", {}))
