"""Finding a service by the words a caller uses ("the bins weren't emptied", "a hole in the
road"): each service's name, keywords, group and description are searched, and the services
that match best come first. Pure, over the catalogue as loaded, so a new keyword in
services.yaml is found at once."""

from __future__ import annotations

import re

from app.catalogue.catalogue import Catalogue, Service

_WORD = re.compile(r"[a-z0-9]+")
# Words that say nothing about which service is meant.
_STOP = frozenset(
    _WORD.findall(
        "a an and are at by for from has have i in is it its my of on or our the their there "
        "they this to was were with"
    )
)
# How much a word found in each part of a service counts: its name and keywords most.
_WEIGHTS = (("name", 4), ("keywords", 3), ("group", 2), ("description", 1))


def words_of(text: str) -> list[str]:
    """The words of `text` that can pick a service: lower case, stop words left out, each as
    its stem (a plural's `s` taken off, so "bins" finds "bin")."""
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def find_services(catalogue: Catalogue, text: str) -> list[Service]:
    """The services the words could mean, the best match first; none for no words."""
    asked = set(words_of(text))
    if not asked:
        return []
    scored = [
        (_score(service, asked, text.lower()), service) for service in catalogue.services.values()
    ]
    ranked = sorted(
        ((score, service) for score, service in scored if score > 0),
        key=lambda pair: (-pair[0], pair[1].name),
    )
    return [service for _, service in ranked]


def _score(service: Service, asked: set[str], text: str) -> int:
    parts = {
        "name": service.name,
        "keywords": " ".join(service.keywords),
        "group": service.group,
        "description": service.description,
    }
    score = sum(weight * len(asked & set(words_of(parts[part]))) for part, weight in _WEIGHTS)
    # A keyword of several words said whole ("dumped rubbish") is worth more than its words.
    score += sum(3 for keyword in service.keywords if " " in keyword and keyword.lower() in text)
    if service.code in asked or service.code.replace("-", " ") in text:
        score += 4
    return score
