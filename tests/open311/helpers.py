"""What the Open311 tests share: a key, a form as a civic app posts it, a loopback file server
for media_url, and the gazetteer postcode that places a pin in Cherwell."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.core.db import writing
from app.core.models import gazetteer_table
from tests.conftest import ThreadedServer

V2 = "/open311/v2"
# A Banbury pin and the postcode beside it (OX16 5QA, Cherwell; ONS GSS codes in DOMAIN.md).
PIN = {"lat": "52.0601", "long": "-1.3402"}
CHERWELL_POSTCODE = {
    "postcode": "OX16 5QA",
    "county_code": "E10000025",
    "district_code": "E07000177",
    "latitude": 52.0600,
    "longitude": -1.3400,
    "terminated": False,
}


def form_body(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """A form with repeated fields, form-encoded (httpx's `data` takes a mapping only)."""
    return {
        "content": urlencode(pairs),
        "headers": {"content-type": "application/x-www-form-urlencoded"},
    }


def missed_bin_form(key: str, **overrides: str) -> dict[str, str]:
    """A missed bin as FixMyStreet posts it: a pin, an address, the citizen, the answer."""
    form = {
        "api_key": key,
        "service_code": "missed-bin",
        **PIN,
        "address_string": "12 Bridge Street, Banbury",
        "attribute[bin_type]": "garden",
        "description": "The garden waste bin was missed again",
        "email": "resident@example.org",
        "first_name": "Robin",
        "last_name": "Resident",
        "phone": "07700 900123",
    }
    form.update(overrides)
    return form


async def add_cherwell_postcode(engine: AsyncEngine) -> None:
    """One imported gazetteer postcode, so a pin beside it is placed (as after `iap gazetteer
    import`)."""
    async with writing(engine) as conn:
        await conn.execute(gazetteer_table.insert(), CHERWELL_POSTCODE)


class Files:
    """A loopback web server with files at /name, counting each fetch."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.fetched: list[str] = []
        self.url = ""
        self.app = Starlette(routes=[Route("/{name}", self._serve)])

    async def _serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.fetched.append(name)
        if name not in self.files:
            return Response("no such file", status_code=404)
        content, content_type = self.files[name]
        return Response(content, media_type=content_type)

    def reset(self) -> None:
        self.files.clear()
        self.fetched.clear()


@contextmanager
def file_server() -> Iterator[Files]:
    files = Files()
    server = ThreadedServer(files.app).start()
    files.url = server.url
    try:
        yield files
    finally:
        server.stop()


def as_list(parsed: Any) -> list[Any]:
    """xmltodict gives one child as a dict and several as a list."""
    if parsed is None:
        return []
    return parsed if isinstance(parsed, list) else [parsed]
