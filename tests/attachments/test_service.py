"""Keeping a file: sealed before it is stored (the store never holds a plain photo), opened
again whole, discarded when the caller's transaction fails; signed links a back-office fetches
without a key, until they expire; and the names files are given out under."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from app.attachments import service
from app.attachments.files import prepare
from app.attachments.store import AttachmentMissing, LocalStore
from app.core.crypto import SealedDataUnreadable, Sealer, new_key
from app.core.settings import AttachmentSettings, Settings
from tests.attachments.images import pdf, phone_photo

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
ENQUIRY, MESSAGE = uuid.uuid4(), uuid.uuid4()


def sealer(*keys: str) -> Sealer:
    return Sealer([SecretStr(k) for k in keys or (new_key(),)], SecretStr("lookup"))


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path)


async def keep(store, seal, *contents: bytes) -> list[dict]:
    files = [prepare(c, AttachmentSettings()) for c in contents]
    return await service.keep(
        store, seal, enquiry_id=ENQUIRY, message_id=MESSAGE, files=files, now=NOW
    )


async def test_files_are_stored_sealed_and_open_again_as_kept(store, tmp_path):
    seal = sealer()
    rows = await keep(store, seal, phone_photo(), pdf())

    assert [r["content_type"] for r in rows] == ["image/jpeg", "application/pdf"]
    assert all(r["enquiry_id"] == ENQUIRY and r["message_id"] == MESSAGE for r in rows)
    assert all(r["created_at"] == NOW for r in rows)
    stored = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(stored) == 2
    for path in stored:
        assert b"%PDF" not in path.read_bytes()
        assert b"JFIF" not in path.read_bytes()
    assert await service.open_file(store, seal, rows[1]) == pdf()
    photo = await service.open_file(store, seal, rows[0])
    assert photo.startswith(b"\xff\xd8\xff")
    assert len(photo) == rows[0]["size"]


async def test_a_file_swapped_for_another_in_the_store_is_not_given_out(store):
    seal = sealer()
    first, second = await keep(store, seal, pdf(), phone_photo())
    await store.put(first["storage_key"], await store.get(second["storage_key"]))
    with pytest.raises(service.AttachmentDamaged):
        await service.open_file(store, seal, first)


async def test_discard_removes_what_was_kept(store):
    seal = sealer()
    rows = await keep(store, seal, pdf())
    await service.discard(store, rows)
    with pytest.raises(AttachmentMissing):
        await service.open_file(store, seal, rows[0])


async def test_a_failed_put_leaves_nothing_of_the_request_behind(tmp_path):
    class FailsOnSecond(LocalStore):
        puts = 0

        async def put(self, key: str, data: bytes) -> None:
            self.puts += 1
            if self.puts == 2:
                raise OSError("disk full")
            await super().put(key, data)

    failing = FailsOnSecond(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        await keep(failing, sealer(), pdf(), pdf())
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_after_key_rotation_a_resealed_file_opens_under_the_new_key_alone(store):
    old, new = new_key(), new_key()
    (row,) = await keep(store, sealer(old), pdf())
    assert await service.reseal(store, sealer(new, old), row)
    assert await service.open_file(store, sealer(new), row) == pdf()
    with pytest.raises(SealedDataUnreadable):
        await service.open_file(store, sealer(old), row)


def settings() -> Settings:
    return Settings(public_url="https://iap.example.gov.uk/")


def test_a_signed_link_holds_for_its_file_until_it_expires():
    seal, attachment = sealer(), uuid.uuid4()
    url = service.signed_url(settings(), seal, attachment, now=NOW)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        f"https://iap.example.gov.uk/v1/attachments/{attachment}"
    )
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    expires, signature = int(query["expires"]), query["signature"]
    assert expires == int((NOW + timedelta(days=7)).timestamp())

    def holds(**changes) -> bool:
        arguments = {"expires": expires, "signature": signature, "now": NOW} | changes
        attachment_id = arguments.pop("attachment_id", attachment)
        checker = arguments.pop("sealer", seal)
        return service.signature_holds(checker, attachment_id, **arguments)

    assert holds()
    assert holds(now=NOW + timedelta(days=7) - timedelta(seconds=1))
    assert not holds(now=NOW + timedelta(days=7, seconds=1))
    assert not holds(expires=expires + 86400)  # a longer life is not ours
    assert not holds(attachment_id=uuid.uuid4())  # nor is another file
    assert not holds(signature=signature[:-1] + ("A" if signature[-1] != "A" else "B"))
    assert not holds(sealer=sealer())  # another gateway's keys


def test_a_link_signed_before_key_rotation_holds_while_the_old_key_is_configured():
    old, new, attachment = new_key(), new_key(), uuid.uuid4()
    url = service.signed_url(settings(), sealer(old), attachment, now=NOW)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    arguments = {"expires": int(query["expires"]), "signature": query["signature"], "now": NOW}
    assert service.signature_holds(sealer(new, old), attachment, **arguments)
    assert not service.signature_holds(sealer(new), attachment, **arguments)


def test_files_are_given_out_under_our_names():
    assert service.filename({"content_type": "image/jpeg"}, 1) == "photo-1.jpg"
    assert service.filename({"content_type": "image/png"}, 3) == "photo-3.png"
    assert service.filename({"content_type": "application/pdf"}, 2) == "document-2.pdf"
