"""The API documentation pages work on a network that reaches nothing outside: every script,
style and icon they load comes from the gateway itself."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

# What each kind of asset must be answered as.
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


def loaded_urls(page: str) -> list[str]:
    """Every URL a page loads: scripts, styles, icons, and anything a script is told to fetch."""
    tags = re.findall(
        r"""<(?:script|link|img|redoc)\b[^>]*?\b(?:src|href|spec-url)=["']([^"']+)["']""", page
    )
    quoted = re.findall(r"""["'](https?://[^"']+|/[^"'\s]*\.(?:js|css|png|json))["']""", page)
    return sorted(set(tags + quoted))


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_load_only_what_the_gateway_serves(path, anonymous: httpx.AsyncClient):
    page = await anonymous.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = loaded_urls(page.text)
    assert any(u.endswith(".js") for u in urls), page.text
    assert "/openapi.json" in urls
    for url in urls:
        absolute = urljoin(str(page.url), url)
        assert urlsplit(absolute).hostname == page.url.host, f"{path} loads {url} from elsewhere"
        answer = await anonymous.get(absolute)
        assert answer.status_code == 200, url
        suffix = "." + url.rsplit(".", 1)[-1]
        expected = CONTENT_TYPES.get(suffix, ("application/json",))
        assert answer.headers["content-type"].split(";")[0] in expected, (url, answer.headers)
        assert len(answer.content) > 1000, url
