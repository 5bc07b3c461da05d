"""`iap routes explain`: where an enquiry would go, and why."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from app.catalogue.catalogue import Catalogue, Service
from app.cli.base import command_group, config_errors, load_settings, open_engine, run_async
from app.core.errors import DomainError
from app.core.outbound import outbound_client
from app.core.settings import Settings
from app.intake.schemas import Location
from app.intake.service import locate_and_route
from app.runtime import build_locator, load_configured_catalogue, outbound_guard

routes_cli = command_group(help="Explain routing decisions.")


@routes_cli.command("explain")
def routes_explain(
    service: Annotated[
        str, typer.Option("--service", metavar="CODE", help="Service code, e.g. pothole")
    ],
    postcode: Annotated[
        str | None, typer.Option("--postcode", metavar="POSTCODE", help="e.g. OX14 3DB, or OX14")
    ] = None,
    lat: Annotated[
        float | None, typer.Option("--lat", metavar="LAT", help="a pin's latitude")
    ] = None,
    lon: Annotated[
        float | None, typer.Option("--lon", metavar="LON", help="a pin's longitude")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", metavar="TEXT", help="address text, e.g. '1 Ock St, OX14 5AG'"),
    ] = None,
) -> None:
    """Print where an enquiry for SERVICE at a postcode, pin or address would go, and why: the
    answer POST /v1/enquiries would give, from the same checks and routing."""
    settings = load_settings()
    with config_errors():
        catalogue = load_configured_catalogue(settings)
    chosen = catalogue.services.get(service)
    if chosen is None:
        typer.echo(f"no service '{service}'; known: {', '.join(catalogue.services)}", err=True)
        raise typer.Exit(2)
    try:
        given = Location(postcode=postcode, lat=lat, lon=lon, address=address)
        location = None if given.is_empty() else given
    except ValidationError as exc:
        typer.echo(exc.errors()[0]["msg"].removeprefix("Value error, "), err=True)
        raise typer.Exit(2) from None
    run_async(settings, _explain(settings, catalogue, chosen, location))


async def _explain(
    settings: Settings, catalogue: Catalogue, service: Service, location: Location | None
) -> None:
    typer.echo(f"service:  {service.code} ({service.name})")
    async with (
        open_engine(settings) as engine,
        outbound_client(settings, outbound_guard(settings)) as client,
    ):
        try:
            place, destinations = await locate_and_route(
                service=service,
                location=location,
                catalogue=catalogue,
                locator=build_locator(settings, engine, client),
            )
        except DomainError as exc:
            typer.echo(f"decision: refused ({exc.slug}): {exc.detail}")
            raise typer.Exit(1) from exc
    codes = ", ".join(f"{k}={v}" for k, v in place.as_dict().items())
    typer.echo(f"place:    {codes or 'unknown'}")
    for destination in destinations:
        typer.echo(f"decision: {destination.organisation_id}: {destination.reason}")
