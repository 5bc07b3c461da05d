"""A request's `media_url`: fetched once, through the shared outbound client (the outbound
guard's rules in production), no further than the attachment size limit, and prepared as
every upload is (its type found in its content, an image re-encoded without EXIF)."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

from app.attachments.files import Prepared, prepare
from app.core.errors import DomainError, FieldError, ValidationFailed
from app.core.outbound import OutboundRefused
from app.core.settings import AttachmentSettings

MAX_URL = 2000
# However slowly a server drips the file, a request waits no longer than this for it.
FETCH_SECONDS = 30.0


async def fetch_media(
    http: httpx.AsyncClient | None, url: str, *, settings: AttachmentSettings
) -> Prepared:
    """The photo or PDF at `url`, ready to keep; 400 (ValidationFailed) naming why when it
    cannot be fetched or is not a photo or PDF within the limits."""
    parts = urlsplit(url)
    if len(url) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refused("it is not an http or https URL")
    if http is None:
        raise _refused("this gateway fetches no media")
    try:
        async with asyncio.timeout(FETCH_SECONDS):
            content = await _download(http, url, settings.max_bytes)
        return await asyncio.to_thread(prepare, content, settings)
    except ValidationFailed:
        raise
    except DomainError as error:  # too large, not a photo or PDF, damaged
        raise _refused(error.detail) from None
    except OutboundRefused:
        raise _refused("its address may not be called from this gateway") from None
    except (httpx.HTTPError, ValueError, TimeoutError) as error:
        raise _refused(f"it could not be fetched ({type(error).__name__})") from None


async def _download(http: httpx.AsyncClient, url: str, limit: int) -> bytes:
    async with http.stream("GET", url) as answer:
        if answer.status_code != 200:
            raise _refused(f"it answered HTTP {answer.status_code}")
        declared = answer.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _refused(f"the file is over {limit} bytes")
        buffer = bytearray()
        async for chunk in answer.aiter_bytes():
            buffer += chunk
            if len(buffer) > limit:
                raise _refused(f"the file is over {limit} bytes")
    return bytes(buffer)


def _refused(why: str) -> ValidationFailed:
    return ValidationFailed(
        f"media_url was not kept: {why}.",
        [FieldError("not a photo or PDF that could be fetched", parameter="media_url")],
    )
