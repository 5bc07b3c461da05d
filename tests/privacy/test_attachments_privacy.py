"""What was said after submission, and the photos and documents, under the personal data
duties: exported on subject access (notes too), erased and anonymised with the rest (texts
blanked, files deleted from the store), resealed when the keys rotate."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from app.attachments import service
from app.clients.service import Scope
from app.core.audit import Actor
from app.core.crypto import SealedDataUnreadable, Sealer, new_key
from app.core.models import attachment_table, enquiry_table, message_table, utcnow
from app.core.settings import AttachmentSettings, PrivacySettings
from app.core.vocabulary import MessageKind
from app.main import create_app
from app.privacy import service as privacy
from tests.attachments.helpers import add_message
from tests.attachments.images import pdf, phone_photo
from tests.cli.test_cli import iap as iap_command
from tests.conftest import bearer, make_person, make_settings, started
from tests.privacy.test_privacy import ADA, submit

NOTE = "Caller sounded distressed; has reported this twice before"
INFORMATION = "It is now 20cm deep, photo attached"


def stored_files(app: Any) -> list[Path]:
    directory = app.state.iap.settings.attachments.directory
    return [p for p in Path(directory).rglob("*") if p.is_file()]


async def with_conversation(client: Any, app: Any) -> tuple[str, list[dict[str, Any]]]:
    reference = await submit(client, ADA)
    rows = await add_message(app, reference, phone_photo(), pdf(), text=INFORMATION)
    await add_message(app, reference, text=NOTE, kind=MessageKind.note, by="Alex Agent")
    return reference, rows


async def test_the_export_holds_every_message_notes_too_and_how_to_fetch_each_file(
    client, app, anonymous
):
    reference, rows = await with_conversation(client, app)
    export = await client.post("/v1/privacy/subject-access", json={"email": ADA["email"]})
    assert export.status_code == 200, export.text
    (enquiry,) = export.json()["enquiries"]

    said = [(m["kind"], m["text"], m["by_citizen"]) for m in enquiry["messages"]]
    assert said == [("information", INFORMATION, True), ("note", NOTE, False)]
    kept = enquiry["attachments"]
    assert [(f["filename"], f["content_type"]) for f in kept] == [
        ("photo-1.jpg", "image/jpeg"),
        ("document-2.pdf", "application/pdf"),
    ]
    files = enquiry["files"]
    assert [(f["id"], f["filename"]) for f in files] == [(k["id"], k["filename"]) for k in kept]
    assert files[1]["fetch"] == f"/v1/enquiries/{reference}/attachments/{rows[1]['id']}"

    # The officer fetches each file with their own key, and the copy is the one kept.
    officer = bearer(await make_person(app, "data-protection-officer"))
    for listed, shown in zip(files, kept, strict=True):
        fetched = await anonymous.get(listed["fetch"], headers=officer)
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == listed["sha256"]
        assert len(fetched.content) == shown["size"]


async def test_erasure_blanks_what_was_said_and_deletes_the_files(client, app, anonymous, engine):
    reference, rows = await with_conversation(client, app)
    assert len(stored_files(app)) == 2
    state = app.state.iap
    link = service.signed_url(state.settings, state.sealer, rows[0]["id"], now=utcnow())
    link_path = link.removeprefix(state.settings.public_url)
    assert (await anonymous.get(link_path)).status_code == 200

    erased = await client.post("/v1/privacy/erasure", json={"email": ADA["email"]})
    assert erased.status_code == 200, erased.text

    assert stored_files(app) == []
    async with engine.connect() as conn:
        texts = (await conn.execute(select(message_table.c.kind, message_table.c.text))).all()
        kept_rows = (await conn.execute(select(attachment_table.c.id))).all()
    assert sorted(texts) == [("information", None), ("note", None)]  # kinds and times stay
    assert kept_rows == []
    assert (await anonymous.get(link_path)).status_code == 404  # the back-office's link
    staff_path = f"/v1/enquiries/{reference}/attachments/{rows[0]['id']}"
    assert (await client.get(staff_path)).status_code == 404
    export = await client.post("/v1/privacy/subject-access", json={"email": ADA["email"]})
    assert export.json()["enquiries"] == []  # nothing left to find them by


async def test_retention_deletes_the_files_of_an_enquiry_past_its_period(client, app, engine):
    reference, _ = await with_conversation(client, app)
    other, _ = await with_conversation(client, app)
    async with engine.begin() as conn:
        await conn.execute(
            update(enquiry_table)
            .where(enquiry_table.c.reference == reference.replace("-", ""))
            .values(status="closed", closed_at=utcnow() - timedelta(days=2000))
        )
    done = await privacy.run_retention(
        engine=engine,
        catalogue=app.state.iap.catalogue,
        store=app.state.iap.attachments,
        actor=Actor("test"),
    )
    assert done == 1
    assert len(stored_files(app)) == 2  # the other enquiry's files, still in time
    shown = (await client.get(f"/v1/enquiries/{other}")).json()
    assert shown["anonymised_at"] is None
    async with engine.connect() as conn:
        blanked = await conn.scalar(
            select(message_table.c.id).where(message_table.c.text.is_(None)).limit(1)
        )
    assert blanked is not None


async def test_rotating_keys_reseals_the_stored_files_so_the_old_key_can_go(
    database_url, sandbox, tmp_path
):
    old, new = new_key(), new_key()
    directory = tmp_path / "rotated-files"
    settings = make_settings(
        database_url,
        sandbox.url,
        privacy=PrivacySettings(keys=[SecretStr(old)], lookup_key=SecretStr("lookup")),
        attachments=AttachmentSettings(directory=directory),
    )
    application = create_app(settings, run_dispatcher=False)
    async with started(application, Scope.admin) as http:
        reference = await submit(http, ADA)
        (photo, document) = await add_message(application, reference, phone_photo(), pdf())
        store = application.state.iap.attachments
        before = await store.get(document["storage_key"])

    env = {
        "IAP_PRIVACY__KEYS": json.dumps([new, old]),
        "IAP_PRIVACY__LOOKUP_KEY": "lookup",
        "IAP_ATTACHMENTS__DIRECTORY": str(directory),
    }
    rotated = iap_command("privacy", "rotate-keys", database_url=database_url, env=env)
    assert "re-sealed 2 stored photos and documents" in rotated.stdout

    only_new = Sealer([SecretStr(new)], SecretStr("lookup"))
    assert await store.get(document["storage_key"]) != before
    assert await service.open_file(store, only_new, document) == pdf()
    assert (await service.open_file(store, only_new, photo)).startswith(b"\xff\xd8\xff")
    only_old = Sealer([SecretStr(old)], SecretStr("lookup"))
    with pytest.raises(SealedDataUnreadable):
        await service.open_file(store, only_old, document)
