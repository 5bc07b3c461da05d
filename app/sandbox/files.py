"""How a simulated back-office records a file it received: its type, size and digest, and
whether it still carries EXIF (the gateway must have stripped it), as BackOffice's follow-ups
list them."""

from __future__ import annotations

import hashlib
from io import BytesIO
from typing import Any

from PIL import Image, UnidentifiedImageError


def has_exif(content: bytes) -> bool:
    """Whether an image still holds EXIF data (GPS position, device); False for a non-image."""
    try:
        with Image.open(BytesIO(content)) as image:
            return bool(image.getexif()) or "exif" in image.info
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def file_record(content: bytes, content_type: str, **extra: Any) -> dict[str, Any]:
    """One received file as a case's follow-up lists it."""
    return {
        "content_type": content_type,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "exif": has_exif(content),
        **extra,
    }
