"""Where sealed attachments are kept: a directory on this machine (the embedded default) or an
S3-compatible bucket several machines share. A store only ever sees sealed bytes under an
opaque key (`{enquiry_id}/{attachment_id}`); it knows nothing of what they are."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from app.core.errors import ConfigError
from app.core.settings import AttachmentSettings, AttachmentStoreKind

if TYPE_CHECKING:
    from collections.abc import Callable

# Keys are ours (two UUIDs), so anything else is a bug, never a path to follow.
_KEY = re.compile(r"^[0-9a-f-]{36}/[0-9a-f-]{36}$")


class AttachmentMissing(Exception):
    """No file is stored under that key (erased, or never kept)."""


class AttachmentStore(Protocol):
    """Keeps sealed files by key."""

    async def put(self, key: str, data: bytes) -> None:
        """Keep `data` under `key`, replacing what was there."""
        ...

    async def get(self, key: str) -> bytes:
        """What is kept under `key`; AttachmentMissing if nothing is."""
        ...

    async def delete(self, key: str) -> None:
        """Remove what is kept under `key`, if anything is."""
        ...


def storage_key(enquiry_id: object, attachment_id: object) -> str:
    """Where an enquiry's attachment is kept."""
    return f"{enquiry_id}/{attachment_id}"


def _checked(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError("not an attachment storage key")
    return key


class LocalStore:
    """Files in a directory, one per key, written whole (to a temporary file, then renamed) so
    a reader never sees half a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        return self.directory / _checked(key)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as exc:
            raise AttachmentMissing(key) from exc

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class S3Store:
    """Objects in an S3 bucket (AWS, MinIO, Ceph, ...), through boto3; its blocking calls run
    in a worker thread (a boto3 client is safe to share between threads)."""

    def __init__(self, settings: AttachmentSettings) -> None:
        try:
            import boto3
        except ImportError as exc:  # pragma: no cover - the s3 extra is in dev and the image
            raise ConfigError("IAP_ATTACHMENTS__STORE=s3 needs boto3: install iap[s3]") from exc
        self.bucket = settings.s3_bucket
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=_secret(settings.s3_access_key_id),
            aws_secret_access_key=_secret(settings.s3_secret_access_key),
        )

    async def put(self, key: str, data: bytes) -> None:
        await self._call(self._client.put_object, Bucket=self.bucket, Key=_checked(key), Body=data)

    async def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            answer = await self._call(
                self._client.get_object, Bucket=self.bucket, Key=_checked(key)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
                raise AttachmentMissing(key) from exc
            raise
        body: bytes = await asyncio.to_thread(answer["Body"].read)
        return body

    async def delete(self, key: str) -> None:
        # S3 answers a delete of a missing key as done, which is what delete() promises.
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=_checked(key))

    @staticmethod
    async def _call(method: Callable[..., Any], **arguments: Any) -> Any:
        return await asyncio.to_thread(method, **arguments)


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_store(settings: AttachmentSettings) -> AttachmentStore:
    """The store the settings name."""
    if settings.store is AttachmentStoreKind.s3:
        return S3Store(settings)
    return LocalStore(settings.directory)
