"""The page tests' fixtures: a real browser and a real gateway on loopback (browsing.py)."""

from tests.pages.browsing import browser, gateway

__all__ = ["browser", "gateway"]
