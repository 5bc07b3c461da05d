"""What a file is, found in its content; what the gateway keeps of it (an image without its
metadata, upright; a PDF as it came); what it refuses, and how."""

from __future__ import annotations

import hashlib
from io import BytesIO

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from starlette.datastructures import Headers, UploadFile

from app.attachments.files import prepare, read_uploads
from app.core.errors import AttachmentTooLarge, UnreadableAttachment, UnsupportedAttachment
from app.core.settings import AttachmentSettings
from app.sandbox.files import has_exif
from tests.attachments.images import XMP, image_bytes, pdf, phone_photo, png_bomb

SETTINGS = AttachmentSettings()


def test_a_phone_photo_is_kept_without_its_gps_device_icc_or_xmp_and_upright():
    sent = phone_photo(orientation=6, size=(40, 20))
    assert has_exif(sent)
    assert XMP in sent

    kept = prepare(sent, SETTINGS)

    assert (kept.content_type, kept.kind, kept.extension) == ("image/jpeg", "photo", "jpg")
    assert not has_exif(kept.content)
    assert XMP not in kept.content
    assert b"PhoneMaker" not in kept.content
    with Image.open(BytesIO(kept.content)) as image:
        assert image.format == "JPEG"
        assert "icc_profile" not in image.info
        assert "xmp" not in image.info
        # Stored sideways (40x20) with "turn 90 degrees": kept as it is seen, 20x40.
        assert image.size == (20, 40)
        # The blue band that was on the left of the stored pixels is now at the top.
        red, _green, blue = image.convert("RGB").getpixel((10, 2))
        assert blue > 200
        assert red < 60
    assert kept.size == len(kept.content)
    assert kept.sha256 == hashlib.sha256(kept.content).hexdigest()


@pytest.mark.parametrize(
    ("fmt", "mode", "content_type", "extension"),
    [
        ("PNG", "RGBA", "image/png", "png"),
        ("WEBP", "RGB", "image/webp", "webp"),
        ("GIF", "P", "image/gif", "gif"),
        ("JPEG", "L", "image/jpeg", "jpg"),
    ],
)
def test_each_image_kind_is_kept_in_its_own_format_without_exif(fmt, mode, content_type, extension):
    kept = prepare(image_bytes(fmt, mode=mode), SETTINGS)
    assert (kept.content_type, kept.extension) == (content_type, extension)
    assert not has_exif(kept.content)
    assert b"PhoneMaker" not in kept.content
    with Image.open(BytesIO(kept.content)) as image:
        assert image.format == fmt
        assert image.size == (16, 12)


def test_a_pdf_is_kept_as_it_came():
    kept = prepare(pdf(), SETTINGS)
    assert kept.content == pdf()
    assert (kept.content_type, kept.kind, kept.extension) == ("application/pdf", "document", "pdf")


def test_the_kind_is_found_in_the_content_not_claimed():
    # An HTML page is not a photo, whatever it is called; a PDF is a PDF.
    with pytest.raises(UnsupportedAttachment) as refused:
        prepare(b"<html><script>alert(1)</script></html>", SETTINGS)
    assert refused.value.status == 415
    for other in (b"PK\x03\x04zip", b"\x00\x00\x01\x00ico", b"plain text"):
        with pytest.raises(UnsupportedAttachment):
            prepare(other, SETTINGS)


def test_an_empty_file_is_unreadable():
    with pytest.raises(UnreadableAttachment) as refused:
        prepare(b"", SETTINGS)
    assert refused.value.status == 422


@pytest.mark.parametrize(
    "damaged",
    [
        phone_photo()[:200],  # cut short
        b"\xff\xd8\xff" + b"\x00" * 100,  # a JPEG's first bytes, then nothing
        b"\x89PNG\r\n\x1a\n" + b"garbage" * 10,
        b"RIFF\x10\x00\x00\x00WEBPVP8 junk",
        b"GIF89a\x01",
        image_bytes("PNG")[:-30],
    ],
)
def test_a_damaged_image_is_unreadable(damaged):
    with pytest.raises(UnreadableAttachment):
        prepare(damaged, SETTINGS)


def test_a_pdf_cut_short_is_unreadable():
    with pytest.raises(UnreadableAttachment):
        prepare(pdf()[:60], SETTINGS)


def test_a_file_over_the_byte_limit_is_refused():
    settings = AttachmentSettings(max_bytes=1024)
    with pytest.raises(AttachmentTooLarge) as refused:
        prepare(pdf() + b" " * 2000, settings)
    assert refused.value.status == 413
    assert "1024 bytes" in refused.value.detail


def test_a_decompression_bomb_is_refused_from_its_header():
    bomb = png_bomb(20_000, 20_000)  # 400 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    with pytest.raises(AttachmentTooLarge) as refused:
        prepare(bomb, SETTINGS)
    assert "40000000 pixels" in refused.value.detail


def test_the_pixel_limit_is_the_settings_one():
    settings = AttachmentSettings(max_pixels=1_000_000)
    prepare(png_bomb(1000, 1000), settings)
    with pytest.raises(AttachmentTooLarge):
        prepare(png_bomb(1001, 1000), settings)


def _upload(content: bytes) -> UploadFile:
    return UploadFile(BytesIO(content), filename="IMG_0001.HEIC.jpg", headers=Headers())


async def test_uploads_are_counted_and_each_prepared():
    settings = AttachmentSettings(max_files=2)
    kept = await read_uploads([_upload(phone_photo()), _upload(pdf())], settings)
    assert [k.kind for k in kept] == ["photo", "document"]
    with pytest.raises(AttachmentTooLarge, match="At most 2 files"):
        await read_uploads([_upload(pdf())] * 3, settings)


async def test_an_upload_is_read_no_further_than_the_limit():
    settings = AttachmentSettings(max_bytes=1024)
    with pytest.raises(AttachmentTooLarge):
        await read_uploads([_upload(b"%PDF-" + b"x" * 10_000_000)], settings)


MAGICS = [
    b"",
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"%PDF-",
]


@given(
    magic=st.sampled_from(MAGICS),
    body=st.binary(max_size=2048),
    cut=st.integers(min_value=0, max_value=4096),
    valid=st.sampled_from([b"", phone_photo(), image_bytes("PNG"), image_bytes("GIF", mode="P")]),
)
def test_whatever_arrives_is_kept_or_refused_as_a_problem(magic, body, cut, valid):
    # Random bytes after a real signature, or a real image cut short anywhere and followed by
    # junk: a file the gateway keeps, or one of the three problems, never anything else.
    for content in (magic + body, valid[:cut] + body):
        try:
            kept = prepare(content, SETTINGS)
        except (AttachmentTooLarge, UnreadableAttachment, UnsupportedAttachment):
            continue
        assert kept.size == len(kept.content) > 0


def test_pillows_own_limit_caps_the_settings():
    # 100 megapixels: over Pillow's limit (89M), under the one configured.
    settings = AttachmentSettings(max_pixels=200_000_000)
    with pytest.raises(AttachmentTooLarge, match="89478485 pixels"):
        prepare(png_bomb(10_000, 10_000), settings)
