"""The `iap` command: serve, worker, migrate, sandbox, openapi, and the groups routes,
gazetteer, clients, staff, privacy and retention; one module per group of commands, sharing
app.cli.base. The whole tree is put together here, in the order `iap --help` lists it."""

from __future__ import annotations

from app.cli.base import cli
from app.cli.clients import clients_cli
from app.cli.gazetteer import gazetteer_cli
from app.cli.openapi import openapi_command
from app.cli.privacy import privacy_cli, retention_cli
from app.cli.routes import routes_cli
from app.cli.serve import (
    load_development_key,
    migrate_command,
    sandbox_command,
    serve,
    tune_garbage_collector,
    worker,
)
from app.cli.staff import staff_cli

cli.command()(serve)
cli.command()(worker)
cli.command("migrate")(migrate_command)
cli.command("sandbox")(sandbox_command)
cli.command("openapi")(openapi_command)
cli.add_typer(routes_cli, name="routes")
cli.add_typer(gazetteer_cli, name="gazetteer")
cli.add_typer(clients_cli, name="clients")
cli.add_typer(staff_cli, name="staff")
cli.add_typer(privacy_cli, name="privacy")
cli.add_typer(retention_cli, name="retention")

__all__ = ["cli", "load_development_key", "main", "tune_garbage_collector"]


def main() -> None:
    """Entry point of the `iap` script."""
    cli()
