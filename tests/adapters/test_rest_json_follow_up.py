"""The rest-json adapter's follow-ups, field by field: a comment naming its uploads, a status
change for a withdrawal or a reopening, each under its own Idempotency-Key; every error class."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import respx

from app.adapters.base import FollowUp, PermanentError, RetryableError
from app.adapters.rest_json import RestJsonAdapter, RestJsonConfig, upload_key
from app.core.vocabulary import MessageKind
from tests.adapters import factory
from tests.adapters.factory import FOLLOW_UP_ID

BASE = "http://bo.test/oxfordshire-county/api"
CASE = f"{BASE}/cases/OCC-000123"
TOKEN_URL = "http://bo.test/oxfordshire-county/oauth/token"


def follow_up(**fields) -> FollowUp:
    return factory.follow_up("oxfordshire-county", remote_reference="OCC-000123", **fields)


def photos() -> tuple:
    return (
        factory.attachment_file(factory.photo(size=(40, 30)), number=1),
        factory.attachment_file(factory.photo(size=(20, 10)), number=2),
    )


async def send(item: FollowUp, **config):
    fields = {
        "type": "rest-json",
        "base_url": BASE,
        "token_url": TOKEN_URL,
        "client_id": "iap",
        "client_secret": "client-s3cret",
        **config,
    }
    async with httpx.AsyncClient() as client:
        adapter = RestJsonAdapter(config=RestJsonConfig(**fields), client=client, timeout=5)
        return await adapter.follow_up(item)


def tokens(*issued: str):
    answers = [
        httpx.Response(200, json={"access_token": t, "token_type": "Bearer", "expires_in": 300})
        for t in issued or ("tok-1",)
    ]
    return respx.post(TOKEN_URL).mock(side_effect=answers)


def file_part(request: httpx.Request) -> tuple[str, bytes]:
    """The `file` part's headers and content of a multipart upload."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    [part] = [p for p in request.content.split(b"--" + boundary) if b'name="file"' in p]
    head, _, body = part.partition(b"\r\n\r\n")
    return head.decode(), body.removesuffix(b"\r\n")


@respx.mock
async def test_information_uploads_each_photo_then_comments_naming_them():
    tokens()
    uploads = respx.post(f"{CASE}/attachments").mock(
        side_effect=[
            httpx.Response(201, json={"id": "ATT-1", "content_type": "image/jpeg", "size": 1}),
            httpx.Response(201, json={"id": "ATT-2", "content_type": "image/jpeg", "size": 1}),
        ]
    )
    comments = respx.post(f"{CASE}/comments").respond(201, json={"id": "CMT-9"})
    files = photos()
    receipt = await send(follow_up(attachments=files))
    assert (receipt.remote_reference, receipt.case_reference) == ("CMT-9", None)
    for call, file in zip(uploads.calls, files, strict=True):
        request = call.request
        assert request.headers["authorization"] == "Bearer tok-1"
        assert request.headers["idempotency-key"] == str(
            upload_key(FOLLOW_UP_ID, file.attachment_id)
        )
        head, content = file_part(request)
        assert f'filename="{file.filename}"' in head
        assert "Content-Type: image/jpeg" in head
        assert content == file.content
    keys = {call.request.headers["idempotency-key"] for call in uploads.calls}
    assert len(keys) == 2
    assert str(FOLLOW_UP_ID) not in keys
    request = comments.calls.last.request
    assert request.headers["idempotency-key"] == str(FOLLOW_UP_ID)
    assert request.headers["authorization"] == "Bearer tok-1"
    assert json.loads(request.content) == {
        "text": "The pothole is on the north side, by the bus stop",
        "attachments": ["ATT-1", "ATT-2"],
        "author": "citizen",
        "created_at": "2026-11-25T09:30:00+00:00",
    }


@respx.mock
async def test_an_agents_text_alone_is_one_comment_and_no_upload():
    tokens()
    uploads = respx.post(f"{CASE}/attachments").respond(201, json={"id": "ATT-1"})
    comments = respx.post(f"{CASE}/comments").respond(201, json={"id": "CMT-1"})
    await send(follow_up(by_citizen=False))
    assert uploads.call_count == 0
    body = json.loads(comments.calls.last.request.content)
    assert (body["author"], body["attachments"]) == ("agent", [])


@pytest.mark.parametrize(
    ("kind", "word"), [(MessageKind.withdrawal, "withdrawn"), (MessageKind.reopening, "reopened")]
)
@respx.mock
async def test_a_withdrawal_or_reopening_is_a_status_change_with_the_reason(kind, word):
    tokens()
    changes = respx.post(f"{CASE}/status").respond(
        201, json={"id": "OCC-000123", "status": word, "update_id": "OCC-000123-3"}
    )
    receipt = await send(follow_up(kind=kind, text="Fixed by a neighbour"))
    assert receipt.remote_reference == "OCC-000123-3"
    request = changes.calls.last.request
    assert request.headers["idempotency-key"] == str(FOLLOW_UP_ID)
    assert json.loads(request.content) == {"status": word, "reason": "Fixed by a neighbour"}


@respx.mock
async def test_a_case_reference_is_one_path_segment():
    tokens()
    odd = respx.post(f"{BASE}/cases/A%2FB%3F/status").respond(201, json={"update_id": "u"})
    await send(
        factory.follow_up(
            "oxfordshire-county", remote_reference="A/B?", kind=MessageKind.withdrawal
        )
    )
    assert odd.call_count == 1


@respx.mock
async def test_a_repeat_refused_as_a_used_key_is_taken():
    tokens()
    respx.post(f"{CASE}/attachments").respond(409, json={"error": "conflict"})
    respx.post(f"{CASE}/comments").respond(409, json={"error": "conflict"})
    receipt = await send(follow_up(attempt=2, attachments=photos()))
    assert receipt.remote_reference is None


@respx.mock
async def test_a_repeat_answered_as_before_keeps_the_first_comments_id():
    tokens()
    respx.post(f"{CASE}/attachments").respond(200, json={"id": "ATT-1"})
    comments = respx.post(f"{CASE}/comments").respond(200, json={"id": "CMT-1"})
    receipt = await send(follow_up(attempt=3, attachments=photos()[:1]))
    assert receipt.remote_reference == "CMT-1"
    assert json.loads(comments.calls.last.request.content)["attachments"] == ["ATT-1"]


@respx.mock
async def test_a_409_on_a_first_attempt_is_a_conflict_to_retry():
    tokens()
    respx.post(f"{CASE}/comments").respond(409, json={"error": "conflict"})
    with pytest.raises(RetryableError):
        await send(follow_up())


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, RetryableError),
        (503, RetryableError),
        (429, RetryableError),
        (400, PermanentError),
        (404, PermanentError),
        (422, PermanentError),
    ],
)
@respx.mock
async def test_the_countys_answers_are_classified_as_for_a_delivery(status, error):
    tokens()
    respx.post(f"{CASE}/comments").respond(status, json={"error": "x", "error_description": "y"})
    with pytest.raises(error) as raised:
        await send(follow_up(text="Ann Example, 01865 000000"))
    assert "Ann Example" not in str(raised.value)


@respx.mock
async def test_a_failed_upload_stops_before_the_comment():
    tokens()
    respx.post(f"{CASE}/attachments").respond(503)
    comments = respx.post(f"{CASE}/comments").respond(201, json={"id": "CMT-1"})
    with pytest.raises(RetryableError):
        await send(follow_up(attachments=photos()))
    assert comments.call_count == 0


@respx.mock
async def test_a_timeout_is_retryable_and_ambiguous():
    tokens()
    respx.post(f"{CASE}/comments").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(RetryableError) as raised:
        await send(follow_up())
    assert raised.value.ambiguous


@respx.mock
async def test_a_refused_token_is_renewed_once():
    tokens("tok-1", "tok-2")
    comments = respx.post(f"{CASE}/comments").mock(
        side_effect=[httpx.Response(401), httpx.Response(201, json={"id": "CMT-1"})]
    )
    receipt = await send(follow_up())
    assert receipt.remote_reference == "CMT-1"
    assert [c.request.headers["authorization"] for c in comments.calls] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]


@respx.mock
async def test_a_note_is_never_sent():
    with pytest.raises(PermanentError):
        await send(follow_up(kind=MessageKind.note))


def test_each_files_key_is_stable_and_its_own():
    one, two = uuid.UUID(int=1), uuid.UUID(int=2)
    assert upload_key(FOLLOW_UP_ID, one) == upload_key(FOLLOW_UP_ID, one)
    assert len({upload_key(FOLLOW_UP_ID, one), upload_key(FOLLOW_UP_ID, two), FOLLOW_UP_ID}) == 3
