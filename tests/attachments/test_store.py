"""Both attachment stores keep, give back and remove sealed files alike: a directory, and S3
(moto's server on loopback, spoken to by boto3 over HTTP as AWS would be)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from app.attachments.store import (
    AttachmentMissing,
    AttachmentStore,
    LocalStore,
    S3Store,
    build_store,
    storage_key,
)
from app.clients.service import Scope
from app.core.settings import AttachmentSettings, AttachmentStoreKind
from app.main import create_app
from tests.attachments.helpers import add_message
from tests.attachments.images import pdf
from tests.conftest import enquiry_body, free_port, make_settings, started

BUCKET = "iap-test-attachments"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A real S3 API on a loopback port, for this module."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_settings(endpoint: str, bucket: str = BUCKET) -> AttachmentSettings:
    return AttachmentSettings(
        store=AttachmentStoreKind.s3,
        s3_endpoint_url=endpoint,
        s3_bucket=bucket,
        s3_access_key_id=SecretStr("testing"),
        s3_secret_access_key=SecretStr("testing"),
    )


def make_bucket(endpoint: str, bucket: str) -> None:
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="eu-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})


@pytest.fixture(params=["local", "s3"])
async def store(request, tmp_path: Path) -> AsyncIterator[AttachmentStore]:
    if request.param == "local":
        yield build_store(AttachmentSettings(directory=tmp_path / "files"))
        return
    endpoint = request.getfixturevalue("s3_server")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    make_bucket(endpoint, bucket)
    yield build_store(s3_settings(endpoint, bucket))


def a_key() -> str:
    return storage_key(uuid.uuid4(), uuid.uuid4())


async def test_a_file_put_is_got_back_whole(store):
    key, data = a_key(), bytes(range(256)) * 1000
    await store.put(key, data)
    assert await store.get(key) == data


async def test_a_put_replaces_what_was_there(store):
    key = a_key()
    await store.put(key, b"first")
    await store.put(key, b"second")
    assert await store.get(key) == b"second"


async def test_a_deleted_file_is_missing_and_a_second_delete_is_harmless(store):
    key = a_key()
    await store.put(key, b"sealed")
    await store.delete(key)
    with pytest.raises(AttachmentMissing):
        await store.get(key)
    await store.delete(key)


async def test_a_file_never_kept_is_missing(store):
    with pytest.raises(AttachmentMissing):
        await store.get(a_key())


async def test_keys_are_kept_apart(store):
    first, second = a_key(), a_key()
    await store.put(first, b"one")
    await store.put(second, b"two")
    await store.delete(first)
    assert await store.get(second) == b"two"


@pytest.mark.parametrize("key", ["../../etc/passwd", "a/b", "/abs/path", ""])
async def test_a_key_that_is_not_ours_is_never_a_path(store, key):
    with pytest.raises(ValueError, match="storage key"):
        await store.put(key, b"x")


def test_the_settings_choose_the_store(tmp_path, s3_server):
    assert isinstance(build_store(AttachmentSettings(directory=tmp_path)), LocalStore)
    assert isinstance(build_store(s3_settings(s3_server)), S3Store)


async def test_the_local_store_leaves_no_partial_files(tmp_path):
    local = LocalStore(tmp_path)
    key = a_key()
    await local.put(key, b"sealed")
    assert [p.name for p in (tmp_path / key).parent.iterdir()] == [key.split("/")[1]]


async def test_a_gateway_configured_for_s3_keeps_serves_and_erases_files_in_the_bucket(
    s3_server, database_url, sandbox
):
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    make_bucket(s3_server, bucket)
    raw = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="eu-west-2",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    settings = make_settings(database_url, sandbox.url, attachments=s3_settings(s3_server, bucket))
    application = create_app(settings, run_dispatcher=False)
    async with started(application, Scope.admin) as http:
        body = enquiry_body(citizen={"name": "Ada", "email": "ada@example.org"})
        reference = (await http.post("/v1/enquiries", json=body)).json()["reference"]
        (row,) = await add_message(application, reference, pdf())

        (stored,) = raw.list_objects_v2(Bucket=bucket)["Contents"]
        assert stored["Key"] == row["storage_key"]
        sealed = raw.get_object(Bucket=bucket, Key=row["storage_key"])["Body"].read()
        assert b"%PDF" not in sealed  # the bucket holds it sealed

        fetched = await http.get(f"/v1/enquiries/{reference}/attachments/{row['id']}")
        assert fetched.status_code == 200
        assert fetched.content == pdf()

        erased = await http.post("/v1/privacy/erasure", json={"email": "ada@example.org"})
        assert erased.status_code == 200
        assert raw.list_objects_v2(Bucket=bucket).get("Contents", []) == []
