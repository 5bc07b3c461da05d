"""Languages of the pages: English as written in the templates and code, and each language
with a catalogue in locale/<code>/LC_MESSAGES/messages.po, compiled in memory on first use (so
no generated .mo file is kept in the repository)."""

from __future__ import annotations

import gettext
from functools import cache
from importlib.resources import files
from io import BytesIO

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

ENGLISH = "en"
LOCALE_DIR = files("app.web") / "locale"
TEMPLATE_DIR = files("app.web") / "templates"
STATIC_DIR = files("app.web") / "static"
DOMAIN = "messages"


def N_(message: str) -> str:
    """Marks a string for the catalogue where it is defined; it is translated where shown."""
    return message


@cache
def languages() -> tuple[str, ...]:
    """English, then every language a catalogue is shipped for."""
    shipped = sorted(
        entry.name
        for entry in LOCALE_DIR.iterdir()
        if (entry / "LC_MESSAGES" / f"{DOMAIN}.po").is_file()
    )
    return (ENGLISH, *shipped)


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The language's translations (English: the strings as written)."""
    if language == ENGLISH or language not in languages():
        return gettext.NullTranslations()
    source = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with source.open("rb") as po:
        catalogue = read_po(po, locale=language, domain=DOMAIN)
    compiled = BytesIO()
    write_mo(compiled, catalogue)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def chosen_language(asked: str | None, accept_language: str | None) -> str:
    """`?lang=` if it is one we have, else the best of Accept-Language we have, else English."""
    if asked and asked.lower() in languages():
        return asked.lower()
    return _negotiated(accept_language or "")


def _negotiated(header: str) -> str:
    """The supported language the browser prefers most (by q, then order): `cy-GB;q=0.9`."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().split("-")[0].lower()
        if primary in languages() and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else ENGLISH
