"""`iap staff create|list|disable|set-password|second-factor`: the people who work enquiries."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from app.cli.base import command_group, config_errors, load_settings, open_engine, run_async
from app.clients import staff
from app.clients.sessions import Sessions
from app.core.audit import Actor
from app.core.errors import DomainError
from app.runtime import load_configured_catalogue

staff_cli = command_group(help="Manage staff accounts: people, their roles and tokens.")


def _password_from_stdin() -> str:
    return sys.stdin.readline().rstrip("\r\n")


@staff_cli.command("create")
def staff_create(
    name: Annotated[str, typer.Argument(metavar="NAME", hidden=True)],
    email: Annotated[str, typer.Option(metavar="EMAIL", help="Their work email; unique")],
    role: Annotated[
        staff.StaffRole,
        typer.Option(metavar="ROLE", help=f"One of {', '.join(staff.StaffRole)}"),
    ],
    organisation: Annotated[
        str | None,
        typer.Option(
            metavar="ID",
            help="For a partner's staff: the organisation (organisations.yaml id) whose parts "
            "they see and change, and no other's",
        ),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read a password for the console from stdin")
    ] = False,
) -> None:
    """Make an account for the person NAME; their personal API token is printed once, as the
    last line, and never again."""
    settings = load_settings()
    if not name.strip() or len(name) > 200:
        raise typer.BadParameter("give 1 to 200 characters", param_hint="NAME")
    if "@" not in email or len(email) > 254:
        raise typer.BadParameter("not an email address", param_hint="--email")
    password = _password_from_stdin() if password_stdin else None
    with config_errors():
        catalogue = load_configured_catalogue(settings)

    async def run() -> tuple[staff.StaffInfo, str]:
        async with open_engine(settings) as engine:
            return await staff.create_staff(
                engine,
                catalogue,
                name=name,
                email=email,
                role=role,
                organisation_id=organisation,
                password=password,
                by=Actor("iap staff create"),
            )

    try:
        made, token = run_async(settings, run())
    except DomainError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc
    scope = f"for {made.organisation_id} only" if made.organisation_id else "for every enquiry"
    typer.echo(f"created {made.name} <{made.email}> ({made.id}), {made.role}, {scope}")
    typer.echo("their personal API token is shown only now; give it to them alone:")
    typer.echo(token)


@staff_cli.command("list")
def staff_list() -> None:
    """Everyone: name, email, id, role, organisation, and whether they are disabled."""
    settings = load_settings()

    async def run() -> list[staff.StaffInfo]:
        async with open_engine(settings) as engine:
            return await staff.list_staff(engine)

    for person in run_async(settings, run()):
        state = f"disabled {person.disabled_at:%Y-%m-%d %H:%M}" if person.disabled_at else "active"
        typer.echo(
            f"{person.name}\t{person.email}\t{person.id}\t{person.role}"
            f"\t{person.organisation_id or '-'}\t{state}"
        )


@staff_cli.command("disable")
def staff_disable(
    who: Annotated[str, typer.Argument(metavar="EMAIL_OR_ID", hidden=True)],
) -> None:
    """Stop the person's token and password working; what they did still names them."""
    settings = load_settings()

    async def run() -> staff.StaffInfo:
        async with open_engine(settings) as engine:
            return await staff.disable_staff(engine, who, by=Actor("iap staff disable"))

    try:
        person = run_async(settings, run())
    except DomainError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"disabled {person.email} ({person.id})")


@staff_cli.command("set-password")
def staff_set_password(
    who: Annotated[str, typer.Argument(metavar="EMAIL_OR_ID", hidden=True)],
) -> None:
    """Set the person's console password, read from stdin (at least 12 characters)."""
    settings = load_settings()
    password = _password_from_stdin()

    async def run() -> staff.StaffInfo:
        async with open_engine(settings) as engine:
            return await staff.set_password(engine, who, password)

    try:
        person = run_async(settings, run())
    except DomainError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"password set for {person.email}")


@staff_cli.command("second-factor")
def staff_second_factor(
    who: Annotated[str, typer.Argument(metavar="EMAIL_OR_ID", hidden=True)],
) -> None:
    """Give the person a second factor for the console (a new one replaces the old): prints
    the otpauth:// address their authenticator app takes (as a QR code or typed in); their
    console sessions end, and from now on signing in asks for a code."""
    settings = load_settings()

    async def run() -> str:
        async with open_engine(settings) as engine:
            person = await staff.find_staff(engine, who)
            console = Sessions(engine, settings.sealer(), settings.console)
            return await console.enrol_second_factor(person.id, by=Actor("iap staff second-factor"))

    try:
        uri = run_async(settings, run())
    except DomainError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc
    typer.echo(uri)
