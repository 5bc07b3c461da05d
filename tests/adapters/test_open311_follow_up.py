"""The open311 adapter's follow-ups (respx): mySociety's POST servicerequestupdates field by field
for each kind, the citizen's details only as the agreement allows, a repeat under the same
update_id, every answer classified; and the agreed citizen attributes on a create (item 6)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from pydantic import ValidationError

from app.adapters.base import FollowUp, LeaseLost, PermanentError, RetryableError
from app.adapters.open311 import Open311Adapter, Open311Config
from app.core.vocabulary import MessageKind
from tests.adapters import factory

BASE = "http://bo.test/cherwell/open311/v2"
UPDATES = f"{BASE}/servicerequestupdates.json"
REQUESTS = f"{BASE}/requests.json"
FOLLOW_UP_ID = str(factory.FOLLOW_UP_ID)
SAID = "2026-11-25T09:30:00Z"  # factory.CREATED in the W3C form
PERSONAL = {"email", "first_name", "last_name", "phone"}
URLS = (
    "http://gateway.test/v1/attachments/a1?expires=9&signature=s1",
    "http://gateway.test/v1/attachments/a2?expires=9&signature=s2",
)


def config(**overrides: Any) -> Open311Config:
    return Open311Config(type="open311", base_url=BASE, api_key="k3y", **overrides)


def follow_up(**fields: Any) -> FollowUp:
    return factory.follow_up("cherwell", remote_reference="1234", **fields)


def taken(update_id: str = "U-77") -> httpx.Response:
    """open311-adapter's answer to an update."""
    return httpx.Response(200, json={"service_request_updates": [{"update_id": update_id}]})


async def send(f: FollowUp, **overrides: Any):
    async with httpx.AsyncClient() as client:
        adapter = Open311Adapter(config=config(**overrides), client=client, timeout=5)
        return await adapter.follow_up(f)


def form(route: respx.Route, call: int = -1) -> list[tuple[str, str]]:
    """A call's form body as sorted pairs (repeated keys kept)."""
    content = route.calls[call].request.content.decode()
    return sorted(parse_qsl(content, keep_blank_values=True))


# -- the update form, kind by kind -------------------------------------------------------------


@respx.mock
async def test_more_information_with_two_photos_field_by_field():
    route = respx.post(UPDATES).mock(return_value=taken())
    photos = tuple(
        factory.attachment_file(number=n, url=url) for n, url in enumerate(URLS, start=1)
    )
    receipt = await send(follow_up(attachments=photos, share=False), jurisdiction_id="cherwell")
    assert receipt.remote_reference == "U-77"
    assert receipt.case_reference is None
    assert form(route) == [
        ("api_key", "k3y"),
        ("description", "The pothole is on the north side, by the bus stop"),
        ("jurisdiction_id", "cherwell"),
        ("media_url", URLS[0]),
        ("media_url", URLS[1]),
        ("service_request_id", "1234"),
        ("status", "OPEN"),
        ("update_id", FOLLOW_UP_ID),
        ("updated_datetime", SAID),
    ]
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"


@respx.mock
async def test_a_withdrawal_closes_the_request_with_its_reason():
    route = respx.post(UPDATES).mock(return_value=taken())
    await send(follow_up(kind=MessageKind.withdrawal, text="Fixed by a neighbour", share=False))
    sent = dict(form(route))
    assert (sent["status"], sent["description"]) == ("CLOSED", "Fixed by a neighbour")
    assert "media_url" not in sent


@pytest.mark.parametrize(("extended", "status"), [(False, "OPEN"), (True, "REOPEN")])
@respx.mock
async def test_a_reopening_is_open_or_reopen_as_the_council_takes_statuses(extended, status):
    route = respx.post(UPDATES).mock(return_value=taken())
    reopening = follow_up(kind=MessageKind.reopening, text="Still there", share=False)
    await send(reopening, extended_statuses=extended)
    sent = dict(form(route))
    assert (sent["status"], sent["description"]) == (status, "Still there")


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        (MessageKind.information, "More information was added to this request."),
        (MessageKind.withdrawal, "The request was withdrawn at the citizen's request."),
        (MessageKind.reopening, "The citizen asks for this request to be reopened."),
    ],
)
@respx.mock
async def test_without_words_the_required_description_says_what_happened(kind, said):
    route = respx.post(UPDATES).mock(return_value=taken())
    await send(follow_up(kind=kind, text=None, attachments=(factory.attachment_file(),)))
    assert dict(form(route))["description"] == said


async def test_a_note_is_never_sent():
    with pytest.raises(PermanentError, match="note"):
        await send(follow_up(kind=MessageKind.note))


# -- the citizen's details -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("share", "shares", "expected"),
    [
        (
            True,
            None,
            {
                ("email", "ann@example.org"),
                ("first_name", "Ann"),
                ("last_name", "Example"),
                ("phone", "01865 000000"),
            },
        ),
        (True, ("email",), {("email", "ann@example.org")}),
        (True, ("language", "accessibility_needs"), set()),
        (True, (), set()),
        (False, None, set()),
    ],
)
@respx.mock
async def test_the_citizens_details_go_only_as_the_agreement_and_consent_allow(
    share, shares, expected
):
    route = respx.post(UPDATES).mock(return_value=taken())
    await send(follow_up(share=share, shares=shares))
    assert {pair for pair in form(route) if pair[0] in PERSONAL} == expected
    sent = str(form(route))
    # An update carries no attributes: the language and needs went with the create.
    assert "Large print" not in sent
    assert "'cy'" not in sent


# -- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "remote"),
    [
        (taken("U-1"), "U-1"),
        (httpx.Response(200, json=[{"update_id": 9}]), "9"),
        (httpx.Response(201, json={"update_id": "U-3"}), "U-3"),
        (httpx.Response(200, json={"service_request_updates": []}), None),
        (httpx.Response(204), None),
        (httpx.Response(200, text="<ok/>"), None),
    ],
)
@respx.mock
async def test_the_receipt_names_the_councils_update_id_when_it_gives_one(answer, remote):
    respx.post(UPDATES).mock(return_value=answer)
    assert (await send(follow_up())).remote_reference == remote


@respx.mock
async def test_a_repeat_after_a_timeout_carries_the_same_update_id_and_form():
    route = respx.post(UPDATES).mock(side_effect=[httpx.ReadTimeout("slow"), taken("U-5")])
    with pytest.raises(RetryableError, match="ReadTimeout") as caught:
        await send(follow_up())
    assert caught.value.ambiguous
    receipt = await send(follow_up(attempt=2))
    assert receipt.remote_reference == "U-5"
    assert form(route, 0) == form(route, 1)
    assert dict(form(route, 1))["update_id"] == FOLLOW_UP_ID


@respx.mock
async def test_already_taken_counts_as_taken():
    answer = [{"code": 400, "description": "Duplicate request: update already exists"}]
    respx.post(UPDATES).respond(400, json=answer)
    receipt = await send(follow_up(attempt=2))
    assert receipt.remote_reference is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 409, 425, 429])
@respx.mock
async def test_server_side_and_transient_answers_are_retryable(status):
    respx.post(UPDATES).respond(status, headers={"Retry-After": "7"})
    with pytest.raises(RetryableError) as caught:
        await send(follow_up())
    assert caught.value.retry_after == 7
    assert f"HTTP {status} from bo.test" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (400, [{"code": 400, "description": "service_request_id not found"}], "not found"),
        (403, [{"code": 403, "description": "Invalid api_key"}], "Invalid api_key"),
        (404, {"error": "no such request for ann@example.org"}, "no description"),
        (422, None, "no description"),
    ],
)
@respx.mock
async def test_other_client_errors_are_permanent_and_quote_only_the_councils_words(
    status, body, said
):
    respx.post(UPDATES).respond(status, json=body)
    with pytest.raises(PermanentError) as caught:
        await send(follow_up())
    assert str(caught.value).startswith(f"HTTP {status} from bo.test: ")
    assert said in str(caught.value)
    assert "ann@example.org" not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "ambiguous"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("slow"), False),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("dropped"), True),
    ],
)
@respx.mock
async def test_transport_failures_are_retryable(error, ambiguous):
    respx.post(UPDATES).mock(side_effect=error)
    with pytest.raises(RetryableError, match=type(error).__name__) as caught:
        await send(follow_up())
    assert caught.value.ambiguous is ambiguous


@respx.mock
async def test_a_case_known_only_by_its_token_waits_for_its_id():
    route = respx.post(UPDATES).mock(return_value=taken())
    pending = factory.follow_up("cherwell", remote_reference="token:abc")
    with pytest.raises(RetryableError, match="no id yet") as caught:
        await send(pending)
    assert not caught.value.ambiguous
    assert not route.called


@respx.mock
async def test_the_fence_is_awaited_before_the_update_is_posted():
    route = respx.post(UPDATES).mock(return_value=taken())

    async def lost() -> None:
        raise LeaseLost("no longer ours")

    with pytest.raises(LeaseLost):
        await send(replace(follow_up(), fence=lost))
    assert not route.called


@respx.mock
async def test_the_time_it_was_said_goes_in_utc():
    route = respx.post(UPDATES).mock(return_value=taken())
    summer = datetime(2026, 7, 1, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    await send(replace(follow_up(), created_at=summer))
    assert dict(form(route))["updated_datetime"] == "2026-07-01T09:30:00Z"


# -- item 6: the citizen's language and accessibility needs on a create -------------------------

AGREED = {"language": "iap_language", "accessibility_needs": "iap_accessibility"}


def created() -> httpx.Response:
    return httpx.Response(201, json=[{"service_request_id": "1234"}])


def attributes_sent(route: respx.Route) -> dict[str, str]:
    content = route.calls.last.request.content.decode()
    return {k: v for k, v in parse_qsl(content) if k.startswith("attribute[")}


async def deliver(**fields: Any) -> None:
    async with httpx.AsyncClient() as client:
        agreed = config(citizen_attributes=AGREED)
        adapter = Open311Adapter(config=agreed, client=client, timeout=5)
        values = {"attributes": {"size": "big"}} | fields
        await adapter.deliver(factory.delivery("cherwell", citizen=factory.CITIZEN, **values))


@respx.mock
async def test_a_create_carries_the_agreed_attributes_when_shared():
    route = respx.post(REQUESTS).mock(return_value=created())
    await deliver()
    assert attributes_sent(route) == {
        "attribute[size]": "big",
        "attribute[iap_reference]": factory.REFERENCE,
        "attribute[iap_language]": "cy",
        "attribute[iap_accessibility]": "Large print",
    }


@pytest.mark.parametrize(
    ("share", "shares", "expected"),
    [
        (True, ("name", "language"), {"attribute[iap_language]": "cy"}),
        (True, ("name", "email"), {}),
        (False, None, {}),
    ],
)
@respx.mock
async def test_the_agreed_attributes_go_only_as_the_agreement_and_consent_allow(
    share, shares, expected
):
    route = respx.post(REQUESTS).mock(return_value=created())
    await deliver(share=share, shares=shares)
    citizen = {k: v for k, v in attributes_sent(route).items() if k not in ATTRIBUTES_OF_ENQUIRY}
    assert citizen == expected


ATTRIBUTES_OF_ENQUIRY = {"attribute[size]", "attribute[iap_reference]"}


@respx.mock
async def test_an_enquiry_attribute_cannot_speak_for_the_citizen():
    route = respx.post(REQUESTS).mock(return_value=created())
    await deliver(share=False, attributes={"iap_language": "fr", "size": "big"})
    assert "attribute[iap_language]" not in attributes_sent(route)


@pytest.mark.parametrize(
    "agreed",
    [
        {"language": ""},
        {"language": "iap_reference"},
        {"language": "x", "accessibility_needs": "x"},
        {"email": "iap_email"},
    ],
)
def test_attribute_codes_must_be_their_own(agreed):
    with pytest.raises(ValidationError, match="citizen_attributes"):
        config(citizen_attributes=agreed)


def test_the_shipped_districts_agree_language_and_accessibility_attributes():
    districts = [o for o in factory.CATALOGUE.organisations.values() if o.adapter.type == "open311"]
    assert len(districts) == 5
    for district in districts:
        loaded = Open311Config.model_validate(district.adapter.model_dump())
        assert loaded.citizen_attributes == AGREED, district.id
        assert {"language", "accessibility_needs"} <= set(district.shares), district.id
