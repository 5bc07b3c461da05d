"""Finding a service by the caller's words, over the shipped catalogue (table-first)."""

from __future__ import annotations

import pytest

from app.catalogue.catalogue import load_catalogue
from app.catalogue.search import find_services, words_of
from app.core.settings import SHIPPED_CONFIG_DIR

CATALOGUE = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": "http://x"})


@pytest.mark.parametrize(
    ("said", "first"),
    [
        ("my bins were not emptied", "missed-bin"),
        ("the rubbish collection never came", "missed-bin"),
        ("there's a hole in the road", "pothole"),
        ("POTHOLE", "pothole"),
        ("the street lamp is out", "street-light"),
        ("someone dumped rubbish in the lane", "fly-tipping"),
        ("rats in the garden", "pest-control"),
        ("my council tax bill", "council-tax"),
        ("noisy neighbours playing music", "noise-nuisance"),
        ("a burglary", "non-emergency-crime"),
        ("my GP appointment", "health-enquiry"),
        ("renew my blue badge", "blue-badge"),
        ("icy roads need grit", "road-gritting"),
    ],
)
def test_the_callers_words_find_the_service_first(said: str, first: str) -> None:
    assert find_services(CATALOGUE, said)[0].code == first


@pytest.mark.parametrize("said", ["", "   ", "the and of", "xyzzy"])
def test_words_that_mean_no_service_find_none(said: str) -> None:
    assert find_services(CATALOGUE, said) == []


def test_words_are_stemmed_and_stop_words_dropped() -> None:
    assert words_of("The Bins were MISSED, again!") == ["bin", "missed", "again"]
    assert words_of("Lorries and parties") == ["lorry", "party"]
