"""Fetching a photo or document: a back-office by the signed link it was sent (Open311's
media_url), staff and the submitting client with their keys, the citizen with their token;
each file given out to be saved, never rendered or cached, under our own name."""

from __future__ import annotations

import uuid
from datetime import timedelta
from io import BytesIO
from urllib.parse import urlsplit

import pytest
from PIL import Image
from sqlalchemy import select

from app.api.deps import current_time
from app.attachments import service
from app.clients.service import Scope
from app.core.models import audit_table, utcnow
from app.sandbox.files import has_exif
from tests.attachments.helpers import add_message
from tests.attachments.images import pdf, phone_photo
from tests.conftest import bearer, enquiry_body, make_key, make_person

COUNTY = "oxfordshire-county"
POLICE = "thames-valley-police"


@pytest.fixture
async def submitted(app, anonymous):
    """A pothole enquiry submitted by a client, with a photo and a PDF added."""
    key = await make_key(app.state.iap.engine, Scope.enquiries_submit, Scope.enquiries_read)
    answer = await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=bearer(key))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    rows = await add_message(app, body["reference"], phone_photo(), pdf())
    return {
        "reference": body["reference"],
        "token": body["access_token"],
        "key": key,
        "photo": rows[0],
        "document": rows[1],
    }


def signed_path(app, attachment_id, *, now=None) -> str:
    state = app.state.iap
    url = service.signed_url(state.settings, state.sealer, attachment_id, now=now or utcnow())
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def assert_served_to_save(answer, content_type: str, filename: str) -> None:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == content_type
    assert answer.headers["content-disposition"] == f"attachment; filename={filename}"
    assert answer.headers["cache-control"] == "private, no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_a_back_office_fetches_a_photo_by_its_signed_link_without_exif(
    app, anonymous, submitted
):
    answer = await anonymous.get(signed_path(app, submitted["photo"]["id"]))
    assert_served_to_save(answer, "image/jpeg", "photo-1.jpg")
    assert not has_exif(answer.content)
    with Image.open(BytesIO(answer.content)) as image:
        assert image.size == (20, 40)  # turned upright as the phone said

    document = await anonymous.get(signed_path(app, submitted["document"]["id"]))
    assert_served_to_save(document, "application/pdf", "document-2.pdf")
    assert document.content == pdf()


async def test_the_signed_link_is_the_gateways_public_address(app, submitted):
    state = app.state.iap
    url = service.signed_url(state.settings, state.sealer, submitted["photo"]["id"], now=utcnow())
    assert url.startswith(f"{state.settings.public_url}/v1/attachments/{submitted['photo']['id']}?")


@pytest.mark.parametrize(
    "spoil",
    [
        lambda path: path.split("?")[0],  # no signature at all
        lambda path: path.replace("signature=", "signature=x"),
        lambda path: path.split("&signature=")[0] + "&signature=" + "A" * 43,
        lambda path: path.replace("expires=", "expires=9"),  # a longer life than signed
    ],
)
async def test_a_link_that_is_not_ours_is_refused(app, anonymous, submitted, spoil):
    answer = await anonymous.get(spoil(signed_path(app, submitted["photo"]["id"])))
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/signed-link-refused"


async def test_a_link_for_one_file_does_not_open_another(app, anonymous, submitted):
    path = signed_path(app, submitted["photo"]["id"])
    other = path.replace(str(submitted["photo"]["id"]), str(submitted["document"]["id"]))
    assert (await anonymous.get(other)).status_code == 403


async def test_an_expired_link_is_refused(app, anonymous, submitted):
    path = signed_path(app, submitted["photo"]["id"])
    week = timedelta(seconds=app.state.iap.settings.attachments.url_seconds)
    app.dependency_overrides[current_time] = lambda: utcnow() + week + timedelta(minutes=1)
    answer = await anonymous.get(path)
    assert answer.status_code == 403
    assert answer.json()["type"] == "/problems/signed-link-refused"


async def test_a_signed_link_to_an_erased_file_is_not_found(app, anonymous, submitted):
    attachment_id = uuid.uuid4()  # signed by us, but no such file (erased)
    answer = await anonymous.get(signed_path(app, attachment_id))
    assert answer.status_code == 404
    assert answer.json()["type"] == "/problems/not-found"


async def test_any_signature_a_client_sends_is_refused_not_an_error(app, anonymous, submitted):
    path = signed_path(app, submitted["photo"]["id"])
    expires = path.partition("expires=")[2].partition("&")[0]
    for signature in ("é", "\x00", "🙂" * 20, "", "a b"):
        answer = await anonymous.get(
            path.partition("?")[0], params={"expires": expires, "signature": signature}
        )
        assert answer.status_code == 403, signature


@pytest.mark.parametrize(
    "query", ["expires=abc&signature=x", "expires=-1&signature=x", "expires=99999999999999999"]
)
async def test_a_malformed_link_is_a_problem_not_an_error(app, anonymous, submitted, query):
    answer = await anonymous.get(f"/v1/attachments/{submitted['photo']['id']}?{query}")
    assert answer.status_code == 422
    assert (
        await anonymous.get("/v1/attachments/not-a-uuid?expires=1&signature=x")
    ).status_code == 422


async def test_the_citizen_fetches_their_own_file_with_their_token(anonymous, submitted):
    reference, photo = submitted["reference"], submitted["photo"]["id"]
    answer = await anonymous.get(
        f"/v1/enquiries/{reference}/attachments/{photo}", params={"token": submitted["token"]}
    )
    assert_served_to_save(answer, "image/jpeg", "photo-1.jpg")
    wrong = await anonymous.get(
        f"/v1/enquiries/{reference}/attachments/{photo}", params={"token": "wrong-token"}
    )
    assert wrong.status_code == 404


async def test_the_submitting_client_fetches_its_enquirys_files_and_no_one_elses(
    app, anonymous, submitted
):
    path = f"/v1/enquiries/{submitted['reference']}/attachments/{submitted['document']['id']}"
    answer = await anonymous.get(path, headers=bearer(submitted["key"]))
    assert_served_to_save(answer, "application/pdf", "document-2.pdf")

    another = await make_key(app.state.iap.engine, Scope.enquiries_read)
    assert (await anonymous.get(path, headers=bearer(another))).status_code == 404
    assert (await anonymous.get(path)).status_code == 401
    submitter_only = await make_key(app.state.iap.engine, Scope.enquiries_submit)
    assert (await anonymous.get(path, headers=bearer(submitter_only))).status_code == 403


async def test_staff_reads_are_audited_by_ids_alone(app, anonymous, submitted):
    agent = bearer(await make_person(app, "agent", name="Alex Agent"))
    photo = submitted["photo"]["id"]
    path = f"/v1/enquiries/{submitted['reference']}/attachments/{photo}"
    assert_served_to_save(await anonymous.get(path, headers=agent), "image/jpeg", "photo-1.jpg")

    async with app.state.iap.engine.connect() as conn:
        entries = (
            (
                await conn.execute(
                    select(audit_table).where(audit_table.c.action == "attachment.read")
                )
            )
            .mappings()
            .all()
        )
    assert [(e["actor"], e["subject"], e["detail"]) for e in entries] == [
        ("Alex Agent", submitted["reference"], {"attachment_id": str(photo)})
    ]


async def test_a_partners_staff_read_only_the_files_of_enquiries_they_hold_a_part_of(
    app, anonymous, submitted
):
    county = bearer(await make_person(app, "agent", organisation=COUNTY))
    police = bearer(await make_person(app, "agent", organisation=POLICE))
    path = f"/v1/enquiries/{submitted['reference']}/attachments/{submitted['photo']['id']}"
    assert (await anonymous.get(path, headers=county)).status_code == 200
    assert (await anonymous.get(path, headers=police)).status_code == 404


async def test_a_file_of_another_enquiry_is_not_found_through_this_one(app, anonymous, submitted):
    key = await make_key(app.state.iap.engine, Scope.enquiries_submit)
    other = (await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=bearer(key))).json()
    (theirs,) = await add_message(app, other["reference"], pdf())
    path = f"/v1/enquiries/{submitted['reference']}/attachments/{theirs['id']}"
    answer = await anonymous.get(path, params={"token": submitted["token"]})
    assert answer.status_code == 404
    missing = f"/v1/enquiries/{submitted['reference']}/attachments/{uuid.uuid4()}"
    assert (await anonymous.get(missing, params={"token": submitted["token"]})).status_code == 404
    bad = f"/v1/enquiries/{submitted['reference']}/attachments/nope"
    assert (await anonymous.get(bad, params={"token": submitted["token"]})).status_code == 422
