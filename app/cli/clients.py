"""`iap clients create|list|revoke`: API clients and their keys."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from app.cli.base import command_group, load_settings, open_engine, run_async
from app.clients import service as clients
from app.core.errors import DomainError
from app.intake.schemas import Channel
from app.runtime import load_configured_catalogue

clients_cli = command_group(help="Manage API clients and their keys.")


@clients_cli.command("create")
def clients_create(
    name: Annotated[str, typer.Argument(metavar="NAME", hidden=True)],
    scope: Annotated[
        list[clients.Scope],
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help=f"What it may do, one of {', '.join(clients.Scope)}; repeat for more",
        ),
    ],
    channel: Annotated[
        Channel | None,
        typer.Option(
            metavar="CHANNEL",
            help="The one channel its enquiries are on (a kiosk, a phone line), one of "
            f"{', '.join(Channel)}",
        ),
    ] = None,
    organisation: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            help="For an organisation's own system: the organisation (organisations.yaml id) "
            "whose parts, subscriptions and status updates its scopes are for",
        ),
    ] = None,
) -> None:
    """Make an API client called NAME (one people will recognise, e.g. kiosk-banbury); its key
    is printed once, as the last line, and never again."""
    settings = load_settings()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise typer.BadParameter(
            "use 1 to 64 letters, digits, dots, dashes or underscores", param_hint="NAME"
        )

    async def run() -> tuple[clients.ClientInfo, str]:
        async with open_engine(settings) as engine:
            return await clients.create_client(
                engine,
                name=name,
                scopes=scope,
                channel=channel.value if channel else None,
                organisation_id=organisation,
                catalogue=load_configured_catalogue(settings) if organisation else None,
            )

    try:
        made, key = run_async(settings, run())
    except DomainError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"created {made.name} ({made.id}) with scopes {' '.join(made.scopes)}")
    if made.channel:
        typer.echo(f"its enquiries must be on the channel {made.channel}")
    if made.organisation_id:
        typer.echo(f"for {made.organisation_id} only: its parts, subscriptions and updates")
    typer.echo("the key is shown only now; keep it secret:")
    typer.echo(key)


@clients_cli.command("list")
def clients_list() -> None:
    """Every client: name, id, key id, scopes, channel, organisation, and whether it is
    revoked."""
    settings = load_settings()

    async def run() -> list[clients.ClientInfo]:
        async with open_engine(settings) as engine:
            return await clients.list_clients(engine)

    for made in run_async(settings, run()):
        state = f"revoked {made.revoked_at:%Y-%m-%d %H:%M}" if made.revoked_at else "active"
        typer.echo(
            f"{made.name}\t{made.id}\t{made.key_hint}\t{','.join(made.scopes)}"
            f"\t{made.channel or '-'}\t{made.organisation_id or '-'}\t{state}"
        )


@clients_cli.command("revoke")
def clients_revoke(
    client: Annotated[str, typer.Argument(metavar="CLIENT", hidden=True)],
) -> None:
    """Stop the key of CLIENT (its name, id or key id) working, from its next request on."""
    settings = load_settings()

    async def run() -> clients.ClientInfo:
        async with open_engine(settings) as engine:
            return await clients.revoke_client(engine, client)

    try:
        revoked = run_async(settings, run())
    except DomainError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"revoked {revoked.name} ({revoked.id})")
