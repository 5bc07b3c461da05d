"""The discovery document, the service list and each service's definition, from the
catalogue (services.yaml): what an Open311 client reads before it posts."""

from __future__ import annotations

from typing import Any

from app.catalogue.catalogue import Catalogue, Service, Tier
from app.core.errors import NotFound
from app.core.settings import Settings

PREFIX = "/open311/v2"
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
# When this front door's contract last changed (the discovery document's changeset).
CHANGESET = "2026-12-04T00:00:00Z"


def discovery(settings: Settings) -> dict[str, Any]:
    """Where the endpoint is and what it speaks."""
    url = settings.public_url.rstrip("/") + PREFIX
    return {
        "changeset": CHANGESET,
        "contact": settings.open311.contact,
        "key_service": "Ask the gateway's operator for an API key (iap clients create).",
        "endpoints": [
            {
                "specification": SPECIFICATION,
                "url": url,
                "changeset": CHANGESET,
                "type": "production" if settings.env == "production" else "test",
                "formats": ["application/json", "text/xml"],
            }
        ],
    }


def services(catalogue: Catalogue) -> list[dict[str, Any]]:
    """Every service, as GET services lists them."""
    return [_service(service) for service in catalogue.services.values()]


def _service(service: Service) -> dict[str, Any]:
    return {
        "service_code": service.code,
        "service_name": service.name,
        "description": service.description or service.name,
        "metadata": bool(service.attributes),
        # Open311's `realtime` means requests get an id at once, which every one here does.
        "type": "realtime",
        "keywords": ",".join(service.keywords),
        "group": service.group or _tier_group(service),
    }


def _tier_group(service: Service) -> str:
    return "county" if Tier.county in service.tiers else service.tiers[0].value


def definition(catalogue: Catalogue, code: str) -> dict[str, Any]:
    """A service's questions (its attributes), in the order they are asked; 404 if unknown."""
    service = catalogue.services.get(code)
    if service is None:
        raise NotFound(f"There is no service '{code[:64]}'; GET services.json lists them.")
    return {
        "service_code": service.code,
        "attributes": [
            {
                "variable": True,
                "code": attribute.code,
                "datatype": attribute.datatype,
                "required": attribute.required,
                "datatype_description": _datatype_description(attribute.datatype),
                "order": order,
                "description": attribute.description,
                "values": [{"key": v.key, "name": v.name} for v in attribute.values],
            }
            for order, attribute in enumerate(service.attributes, start=1)
        ],
    }


_DATATYPE_WORDS = {
    "string": "Text of at most 200 characters.",
    "text": "Text of at most 4000 characters.",
    "number": "A number.",
    "datetime": "An ISO 8601 date or date and time.",
    "singlevaluelist": "One of the keys in values, as attribute[code].",
    "multivaluelist": "Keys from values, each as attribute[code][].",
}


def _datatype_description(datatype: str) -> str:
    return _DATATYPE_WORDS.get(datatype, "")
