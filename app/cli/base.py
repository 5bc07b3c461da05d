"""What every `iap` command shares: the top-level command group, settings read once with a
readable error, running async work with database errors told in one line, and the one way a
command opens the database."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import DatabaseUnavailable, create_engine, describe_database_error, migrate
from app.core.errors import ConfigError
from app.core.logs import configure_logging
from app.core.settings import Settings, describe_settings_error, get_settings

# Plain help, each value named by what it is (HOST, FILE) rather than by its Python type.
# (Arguments are described in their command's help: typer lists them with a <type> label.)
command_group = functools.partial(typer.Typer, no_args_is_help=True, rich_markup_mode=None)
cli = command_group(help="IAP: the integrated access point for public-service enquiries.")

T = TypeVar("T")


def load_settings() -> Settings:
    """The settings, with logging set up; a wrong setting ends the command with exit code 2."""
    try:
        settings = get_settings()
    except ValidationError as exc:
        typer.echo(f"configuration error:\n{describe_settings_error(exc)}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, settings.log_renderer)
    return settings


def run_async(settings: Settings, work: Coroutine[Any, Any, T]) -> T:
    """Run a command's async work; a database it cannot open ends it with a line saying why and
    what to do, not a traceback."""
    try:
        with config_errors():
            return asyncio.run(work)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except (OSError, DBAPIError, DatabaseUnavailable) as exc:
        described = describe_database_error(exc, settings.database_url)
        if described is None:
            raise
        typer.echo(f"database error: {described}", err=True)
        raise typer.Exit(1) from exc


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """A configuration the command cannot use ends it with exit code 2 and what is wrong."""
    try:
        yield
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from exc


@contextlib.asynccontextmanager
async def open_engine(
    settings: Settings, *, migrated: bool | None = None
) -> AsyncIterator[AsyncEngine]:
    """The database of these settings, migrated first if `migrated` (by default: unless
    IAP_MIGRATE_ON_START says not to), and disposed of afterwards."""
    engine = create_engine(settings.database_url, settings.database)
    try:
        if settings.migrate_on_start if migrated is None else migrated:
            await migrate(engine, sealer=settings.sealer())
        yield engine
    finally:
        await engine.dispose()
