"""What a photo or document is, found in its content (never its name), and the file the
gateway keeps of it: an image re-encoded from its pixels, so no EXIF (a phone's GPS position,
its serial number), ICC profile or XMP is left; a PDF as it came.

A decompression bomb (a small file that opens as an enormous image) is refused from its
header, before its pixels are decoded."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Literal

from fastapi import UploadFile
from PIL import Image, ImageOps

from app.core.errors import AttachmentTooLarge, UnreadableAttachment, UnsupportedAttachment
from app.core.models import ATTACHMENT_EXTENSIONS
from app.core.settings import AttachmentSettings

Kind = Literal["photo", "document"]

# Image formats by their leading bytes: Pillow's format name, the MIME type, the extension.
_IMAGES: tuple[tuple[bytes, str, str, str], ...] = (
    (b"\xff\xd8\xff", "JPEG", "image/jpeg", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "PNG", "image/png", "png"),
    (b"GIF87a", "GIF", "image/gif", "gif"),
    (b"GIF89a", "GIF", "image/gif", "gif"),
)
_PDF = b"%PDF-"
# A PDF ends with %%EOF, followed by at most a little whitespace (more after an update).
_PDF_TAIL = 1024
_READ_CHUNK = 64 * 1024
# What each format is written back as: a good photo's quality, nothing carried over.
_SAVE_OPTIONS: dict[str, dict[str, object]] = {
    "JPEG": {"quality": 90},
    "PNG": {"optimize": False},
    "WEBP": {"quality": 90},
    "GIF": {},
}
EXTENSIONS = ATTACHMENT_EXTENSIONS


@dataclass(frozen=True)
class Prepared:
    """A file ready to keep: its stored bytes and what they are."""

    content: bytes
    content_type: str
    size: int
    sha256: str
    kind: Kind
    extension: str  # "jpg", "png", "webp", "gif", "pdf"


def prepare(content: bytes, settings: AttachmentSettings) -> Prepared:
    """The file the gateway keeps of an upload: its type found in its content, an image
    re-encoded without metadata, a PDF as it is; refused when empty, too large, of another
    kind, or damaged."""
    if not content:
        raise UnreadableAttachment("The file is empty.")
    if len(content) > settings.max_bytes:
        raise AttachmentTooLarge(_too_many_bytes(settings))
    if content.startswith(_PDF):
        return _document(content)
    image = _image_format(content)
    if image is None:
        raise UnsupportedAttachment(
            "Only photos (JPEG, PNG, WebP or GIF) and PDF documents can be added."
        )
    pillow_format, content_type, extension = image
    cleaned = _reencode(content, pillow_format, settings.max_pixels)
    return _prepared(cleaned, content_type, "photo", extension)


async def read_uploads(files: Sequence[UploadFile], settings: AttachmentSettings) -> list[Prepared]:
    """The uploads of one request, prepared: no more than max_files, each read no further
    than max_bytes, and re-encoded in a worker thread (a large photo takes a second of CPU,
    which would stall every other request on the event loop)."""
    if len(files) > settings.max_files:
        raise AttachmentTooLarge(f"At most {settings.max_files} files can be added at once.")
    prepared = []
    for upload in files:
        content = await _read_limited(upload, settings)
        prepared.append(await asyncio.to_thread(prepare, content, settings))
    return prepared


async def _read_limited(upload: UploadFile, settings: AttachmentSettings) -> bytes:
    """An upload's bytes, refused as soon as they pass the limit."""
    buffer = bytearray()
    while chunk := await upload.read(_READ_CHUNK):
        buffer += chunk
        if len(buffer) > settings.max_bytes:
            raise AttachmentTooLarge(_too_many_bytes(settings))
    return bytes(buffer)


def _too_many_bytes(settings: AttachmentSettings) -> str:
    return f"Each file can be at most {settings.max_bytes} bytes."


def _image_format(content: bytes) -> tuple[str, str, str] | None:
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "WEBP", "image/webp", "webp"
    for magic, pillow_format, content_type, extension in _IMAGES:
        if content.startswith(magic):
            return pillow_format, content_type, extension
    return None


def _document(content: bytes) -> Prepared:
    if b"%%EOF" not in content[-_PDF_TAIL:]:
        raise UnreadableAttachment("The PDF is cut short: it has no end.")
    return _prepared(content, "application/pdf", "document", "pdf")


def _reencode(content: bytes, pillow_format: str, max_pixels: int) -> bytes:
    """The image's pixels (its first frame, turned upright as its EXIF says) in a new file of
    the same format, with none of the original's metadata."""
    # Pillow's own limit (89 megapixels, a warning; twice that, an error) caps the settings',
    # so an image past it is refused alike whether warnings are errors or not.
    max_pixels = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    try:
        with Image.open(BytesIO(content), formats=[pillow_format]) as opened:
            _refuse_bomb(opened.size, max_pixels)
            upright = ImageOps.exif_transpose(opened)
            upright.load()
            return _save(upright, pillow_format)
    # Pillow's own check, from the header too (its warning is an error where warnings are).
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AttachmentTooLarge(_too_many_pixels(max_pixels)) from exc
    except (AttachmentTooLarge, UnreadableAttachment):
        raise
    except Exception as exc:  # a damaged file fails in many ways inside Pillow
        raise UnreadableAttachment(
            "The image is damaged or cut short and could not be opened."
        ) from exc


def _refuse_bomb(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise AttachmentTooLarge(_too_many_pixels(max_pixels))


def _too_many_pixels(max_pixels: int) -> str:
    return f"An image can have at most {max_pixels} pixels."


def _save(image: Image.Image, pillow_format: str) -> bytes:
    if pillow_format == "JPEG" and image.mode not in {"L", "RGB", "CMYK"}:
        image = image.convert("RGB")
    # Nothing of the original's info (exif, icc_profile, xmp, text chunks, comments) is
    # carried over, only which colour is transparent (a GIF's or PNG's, not metadata).
    image.info = {k: v for k, v in image.info.items() if k == "transparency"}
    buffer = BytesIO()
    image.save(buffer, pillow_format, **_SAVE_OPTIONS[pillow_format])
    return buffer.getvalue()


def _prepared(content: bytes, content_type: str, kind: Kind, extension: str) -> Prepared:
    return Prepared(
        content=content,
        content_type=content_type,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        kind=kind,
        extension=extension,
    )
