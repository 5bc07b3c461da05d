"""Files as citizens send them: phone photos with EXIF, ICC and XMP, turned sideways; PDFs;
and what must be refused (other kinds, damaged files, decompression bombs)."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO

from PIL import Image, ImageCms

from tests.adapters.factory import photo

__all__ = ["photo"]

XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description gps="51.7,-1.2"/></x:xmpmeta>'


def phone_photo(*, orientation: int = 6, size: tuple[int, int] = (40, 20)) -> bytes:
    """A JPEG as a phone writes it: GPS and device in its EXIF, an ICC profile, XMP, stored
    sideways with the EXIF orientation saying how to turn it (6: 90 degrees clockwise)."""
    image = Image.new("RGB", size, (200, 120, 40))
    image.paste((10, 10, 250), (0, 0, size[0] // 4, size[1]))  # a blue band on the left
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (51.0, 45.0, 7.0), 3: "W", 4: (1.0, 15.0, 30.0)}
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = BytesIO()
    image.save(buffer, "JPEG", exif=exif, icc_profile=icc, xmp=XMP)
    return buffer.getvalue()


def image_bytes(fmt: str, *, mode: str = "RGB", size: tuple[int, int] = (16, 12)) -> bytes:
    """A small image in `fmt` with EXIF where the format holds it."""
    image = Image.new(mode, size, 120)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    buffer = BytesIO()
    options = {"exif": exif} if fmt in {"PNG", "WEBP", "JPEG"} else {}
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pdf() -> bytes:
    """A one-page PDF."""
    return (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A tiny PNG whose header says it is width x height pixels (a decompression bomb: its
    pixels, all zero, compress to almost nothing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    pixels = zlib.compress(row * height, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
