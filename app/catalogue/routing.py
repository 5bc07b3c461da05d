"""Routing: a pure function of (service, place, catalogue) → destinations, each with its reason."""

from __future__ import annotations

from dataclasses import dataclass

from app.catalogue.catalogue import Catalogue, Organisation, OrganisationKind, Service, Tier
from app.catalogue.locate import Place
from app.core.errors import OutOfArea

_KIND_FOR_TIER = {
    Tier.county: OrganisationKind.county,
    Tier.district: OrganisationKind.district,
    Tier.police: OrganisationKind.police,
    Tier.health: OrganisationKind.health,
}
_TIER_AREA_NAME = {
    Tier.county: "county",
    Tier.district: "district",
    Tier.police: "police force area",
    Tier.health: "health area",
}


@dataclass(frozen=True)
class Destination:
    organisation_id: str
    reason: str


def route(*, service: Service, place: Place, catalogue: Catalogue) -> list[Destination]:
    """Who must act on this service at this place, and why; OutOfArea if nobody here can."""
    destinations: list[Destination] = []
    uncovered: list[str] = []
    for tier in service.tiers:
        destination = _route_tier(tier, service=service, place=place, catalogue=catalogue)
        if destination is None:
            uncovered.append(_TIER_AREA_NAME.get(tier, tier.value))
        elif destination.organisation_id not in {d.organisation_id for d in destinations}:
            destinations.append(destination)
    if not destinations:
        where = place.postcode or "that place"
        raise OutOfArea(
            f"{where} is outside the area this gateway serves for {service.name} "
            f"(no {' or '.join(uncovered)} organisation covers it)."
        )
    return destinations


def _route_tier(
    tier: Tier, *, service: Service, place: Place, catalogue: Catalogue
) -> Destination | None:
    if tier is Tier.triage:
        return Destination(catalogue.triage.id, f"{service.name} is read by a person first")
    code = _code_for(tier, place)
    if code is None:
        if place.outside:
            return None
        return Destination(catalogue.triage.id, _unknown_reason(tier, service, place))
    organisation = _covering(tier, code, catalogue)
    if organisation is None:
        return None
    return Destination(
        organisation.id,
        f"{service.name} is a {tier.value} service; {organisation.name} covers "
        f"{_TIER_AREA_NAME[tier]} {code}{_from(place)}",
    )


def _code_for(tier: Tier, place: Place) -> str | None:
    if tier is Tier.county:
        # A unitary authority does county work too; its code is the district code.
        return place.county_code or place.district_code
    return {
        Tier.district: place.district_code,
        Tier.police: place.police_area,
        Tier.health: place.health_area,
    }[tier]


def _covering(tier: Tier, code: str, catalogue: Catalogue) -> Organisation | None:
    kinds = {_KIND_FOR_TIER[tier]}
    if tier in (Tier.county, Tier.district):
        kinds.add(OrganisationKind.unitary)
    return next(
        (o for o in catalogue.organisations.values() if o.kind in kinds and code in o.areas),
        None,
    )


def _unknown_reason(tier: Tier, service: Service, place: Place) -> str:
    area = _TIER_AREA_NAME[tier]
    if place.postcode is None and place.latitude is None:
        return f"no location was given, so the {area} for {service.name} is not known"
    why = f": {place.note}" if place.note else ""
    where = place.postcode or f"{place.latitude},{place.longitude}"
    return f"the {area} of {where} cannot be decided{why}"


def _from(place: Place) -> str:
    if place.source == "none":
        return ""
    return f" (from {place.postcode or 'the point'}, {place.precision} via {place.source})"
