"""What every page the gateway serves shares (the citizen's tracking page, the kiosk, the
console): the Jinja2 environment of each language, the security headers, the stylesheet's
address, and dates, sizes and messages as people read them. Routes render through `render`,
so each page gets the same strict policy."""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from app.core.crypto import Sealer
from app.web import i18n

# Where the pages are: their forms are posted as forms (multipart where a file may come), with
# no API key; each route checks its own proof (a token, a session, a kiosk's key).
KIOSK_PATH = "/kiosk/"  # the kiosk's pages (app/routers/kiosk.py, docs/kiosk.md)
PAGE_PREFIXES = ("/track/", "/console/", KIOSK_PATH)
ASSETS = "/assets"  # the stylesheets and scripts, from the package (app/web/static)
# Everything comes from this gateway; nothing inline, no framing, forms post only here.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# A page with the team's own script (the console's progressive enhancements): from here only.
CSP_SCRIPTED = CSP.replace(
    "default-src 'none';", "default-src 'none'; script-src 'self'; connect-src 'self';"
)
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
LONDON = ZoneInfo("Europe/London")


class Templates:
    """One Jinja2 environment per language, its gettext installed (jinja2's i18n)."""

    def __init__(self) -> None:
        self._by_language: dict[str, Jinja2Templates] = {}

    def get(self, language: str) -> Jinja2Templates:
        if language not in self._by_language:
            env = Environment(
                loader=FileSystemLoader(str(i18n.TEMPLATE_DIR)),
                extensions=["jinja2.ext.i18n"],
                autoescape=True,
            )
            env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
            self._by_language[language] = Jinja2Templates(env=env)
        return self._by_language[language]


TEMPLATES = Templates()


def render(
    request: Request,
    template: str,
    language: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """The template in the language, with the shared headers (a route may add its own)."""
    return TEMPLATES.get(language).TemplateResponse(
        request,
        template,
        {"lang": language, "assets": ASSETS, **context},
        status_code=status,
        headers={**HEADERS, **(headers or {})},
    )


def translate(language: str, message: str, **values: Any) -> str:
    """A message in the language, its `{names}` filled in."""
    translated = i18n.translations(language).gettext(message)
    return translated.format(**values) if values else translated


def megabytes(size: int) -> str:
    """A file size limit as people read it (10 MiB is "10")."""
    return f"{round(size / 1_048_576, 1):g}"


def when(language: str, at: datetime) -> str:
    """A time as UK readers read it, in UK time: `3 December 2026, 14:05`."""
    return format_datetime(at, "d MMMM y, HH:mm", tzinfo=LONDON, locale=language)


def form_field_matches(
    sealer: Sealer, bound_to: uuid.UUID | bytes, purpose: str, given: object
) -> bool:
    """Whether a form's CSRF field is the one this gateway rendered for what the form is bound
    to (an enquiry, a console session, a sign-in form's cookie) and its purpose."""
    if not isinstance(given, str) or not given:
        return False
    expected = sealer.form_tokens(bound_to, purpose)
    return any(hmac.compare_digest(t.encode(), given.encode(errors="replace")) for t in expected)
