"""Open311's two shapes of every answer: JSON, and XML with the spec's element names.

The XML is built from the same data as the JSON: an object becomes an element per key, a list
becomes its element holding one child per item, named by `ITEM_NAMES` (`attributes` holds
`attribute`s, `values` holds `value`s), as GeoReport v2 and mySociety's extension spell them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any
from xml.etree import ElementTree

from fastapi import Response

JSON_TYPE = "application/json"
XML_TYPE = "text/xml; charset=utf-8"

# A list's element → the name of each item in it.
ITEM_NAMES: Mapping[str, str] = {
    "services": "service",
    "attributes": "attribute",
    "values": "value",
    "endpoints": "endpoint",
    "formats": "format",
    "service_requests": "request",
    "errors": "error",
    "service_request_updates": "request_update",
    "keywords": "keyword",
}
# XML 1.0 refuses these characters even escaped: dropped, never sent as broken XML.
_NOT_XML = dict.fromkeys(
    [c for c in range(0x20) if c not in (0x9, 0xA, 0xD)] + [0xFFFE, 0xFFFF], None
)


class Format(StrEnum):
    json = "json"
    xml = "xml"

    @classmethod
    def of(cls, suffix: str) -> Format | None:
        """The format a path's suffix names (`.json`, `.xml`), or None."""
        try:
            return cls(suffix.lower())
        except ValueError:
            return None


def render(
    data: Any,
    fmt: Format,
    *,
    root: str,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """`data` as Open311 answers it: JSON as it is, XML under the element `root`."""
    content, content_type = render_bytes(data, fmt, root=root)
    return Response(
        content, status_code=status, headers={**(headers or {}), "content-type": content_type}
    )


def render_bytes(data: Any, fmt: Format, *, root: str) -> tuple[bytes, str]:
    """The body and its content type."""
    if fmt is Format.json:
        text = json.dumps(_jsonable(data), ensure_ascii=False, allow_nan=False)
        return text.encode(errors="replace"), JSON_TYPE
    element = _element(root, data)
    text = '<?xml version="1.0" encoding="utf-8"?>' + ElementTree.tostring(
        element, encoding="unicode"
    )
    # A lone surrogate (no UTF-8 for it) becomes "?" rather than an error.
    return text.encode(errors="replace"), XML_TYPE


def w3c(moment: datetime | None) -> str | None:
    """A time as the spec writes it: W3C (ISO 8601) with its zone, to the second."""
    if moment is None:
        return None
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return w3c(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_jsonable(v) for v in value]
    return value


def _element(name: str, value: Any) -> ElementTree.Element:
    element = ElementTree.Element(name)
    if isinstance(value, Mapping):
        for key, child in value.items():
            element.append(_element(str(key), child))
    elif isinstance(value, Sequence) and not isinstance(value, str):
        item = ITEM_NAMES.get(name, "item")
        for child in value:
            element.append(_element(item, child))
    else:
        element.text = _text(value)
    return element


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return w3c(value)
    return str(value).translate(_NOT_XML)
