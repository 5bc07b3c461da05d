"""The `iap` command: serve, worker, migrate, sandbox, routes, gazetteer, openapi."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import json
import re
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import crypto
from app.catalogue import Catalogue
from app.db import create_engine, migrate, writing
from app.errors import ConfigError, DomainError
from app.locate import import_onspd_rows, normalise_postcode
from app.logs import configure_logging
from app.main import (
    build_locator,
    create_app,
    load_configured_catalogue,
    outbound_guard,
    runtime,
)
from app.models import gazetteer_table
from app.outbound import OutboundGuard, outbound_client
from app.production import check_production
from app.routing import route
from app.schemas import Channel
from app.services import clients, privacy, webhooks
from app.services.audit import Actor
from app.settings import Environment, Settings, get_settings

cli = typer.Typer(
    help="IAP: the integrated access point for public-service enquiries.", no_args_is_help=True
)
routes_cli = typer.Typer(help="Explain routing decisions.", no_args_is_help=True)
gazetteer_cli = typer.Typer(help="Manage the postcode gazetteer.", no_args_is_help=True)
clients_cli = typer.Typer(help="Manage API clients and their keys.", no_args_is_help=True)
cli.add_typer(routes_cli, name="routes")
cli.add_typer(gazetteer_cli, name="gazetteer")
privacy_cli = typer.Typer(help="Keys for citizen details at rest.", no_args_is_help=True)
retention_cli = typer.Typer(help="Anonymise enquiries past their retention.", no_args_is_help=True)
cli.add_typer(clients_cli, name="clients")
cli.add_typer(privacy_cli, name="privacy")
cli.add_typer(retention_cli, name="retention")


def _settings() -> Settings:
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    configure_logging(settings.log_level)
    return settings


@contextlib.contextmanager
def _config_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from exc


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API only; run `iap worker`s")
    ] = False,
    sandbox: Annotated[
        bool, typer.Option(help="Also run the sandbox back-offices (development only)")
    ] = True,
) -> None:
    """Run the API and, unless --no-worker, a dispatcher in the same process."""
    settings = _settings()
    with _config_errors():
        app = create_app(settings, run_dispatcher=not no_worker)
    gateway = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
    )
    sandbox_server = (
        _embedded_sandbox(settings, gateway_url=_loopback_url(host, port)) if sandbox else None
    )
    if settings.env is Environment.development:
        key = asyncio.run(load_development_key(settings))
        typer.echo(f"development API key (all scopes, kept in {settings.dev_key_file}): {key}")
    tune_garbage_collector()
    asyncio.run(_serve_together(gateway, sandbox_server))


async def load_development_key(settings: Settings) -> str:
    """The development client's key: the one kept in the key file, or a new one kept there."""
    key_file = settings.dev_key_file
    kept = key_file.read_text().strip() if key_file.exists() else None
    engine = create_engine(settings.database_url)
    try:
        if settings.migrate_on_start:
            await migrate(engine, sealer=settings.sealer())
        key = await clients.development_key(engine, kept)
    finally:
        await engine.dispose()
    if key != kept:
        key_file.touch(mode=0o600)
        key_file.write_text(key + "\n")
    return key


class _QuietServer(uvicorn.Server):
    """A second server in the same process: the gateway's server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _loopback_url(host: str, port: int) -> str:
    """How a process on this machine reaches a server listening on host:port."""
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    return f"http://{reachable}:{port}"


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _embedded_sandbox(settings: Settings, *, gateway_url: str) -> uvicorn.Server | None:
    target = urlsplit(settings.sandbox_url)
    if settings.env is not Environment.development or target.hostname not in (
        "127.0.0.1",
        "localhost",
    ):
        return None
    port = target.port or 80
    if _listening(port):
        return None  # a sandbox (or something else) already listens there
    # Imported here, where the sandbox runs: production paths never load it.
    from app.sandbox import create_sandbox_app

    # No sink when something else already has the port (a sandbox of its own, say).
    smtp_port = None if _listening(settings.sandbox_smtp_port) else settings.sandbox_smtp_port
    application = create_sandbox_app(
        load_configured_catalogue(settings),
        gateway_url=gateway_url,
        smtp_port=smtp_port,
        step_seconds=settings.sandbox_step_seconds,
    )
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    return _QuietServer(config)


async def _serve_together(gateway: uvicorn.Server, sandbox: uvicorn.Server | None) -> None:
    task = asyncio.create_task(sandbox.serve()) if sandbox else None
    try:
        await gateway.serve()
    finally:
        if sandbox is not None and task is not None:
            sandbox.should_exit = True
            await task


@cli.command()
def worker() -> None:
    """Deliver, poll and send webhooks (no API); run as many as you like against one PostgreSQL
    database."""
    settings = _settings()
    tune_garbage_collector()
    with _config_errors():
        catalogue = load_configured_catalogue(settings)
        guard = outbound_guard(settings)
        check_production(settings, catalogue, guard=guard)
        asyncio.run(_work(settings, catalogue, guard))


async def _work(settings: Settings, catalogue: Catalogue, guard: OutboundGuard) -> None:
    async with runtime(settings, catalogue, guard=guard) as running:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(running.stop()))
        await running.work()


@cli.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date."""
    settings = _settings()

    async def run() -> None:
        engine = create_engine(settings.database_url)
        await migrate(engine, sealer=settings.sealer())
        await engine.dispose()

    asyncio.run(run())
    typer.echo("database is up to date")


@cli.command("sandbox")
def sandbox_command(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port of the back-offices")] = 8090,
    smtp_port: Annotated[
        int | None,
        typer.Option(help="SMTP sink port on 127.0.0.1 (0: none) [default: IAP_SANDBOX_SMTP_PORT]"),
    ] = None,
    gateway_url: Annotated[
        str | None,
        typer.Option(help="Gateway to push status updates to, e.g. http://127.0.0.1:8000"),
    ] = None,
    step_seconds: Annotated[
        float | None,
        typer.Option(
            help="Move each new case to its next status this often (0: only when told) "
            "[default: IAP_SANDBOX_STEP_SECONDS]"
        ),
    ] = None,
) -> None:
    """Run the simulated back-offices of the configured organisations."""
    settings = _settings()
    with _config_errors():
        catalogue = load_configured_catalogue(settings)
    smtp = settings.sandbox_smtp_port if smtp_port is None else smtp_port
    step = settings.sandbox_step_seconds if step_seconds is None else step_seconds
    from app.sandbox import create_sandbox_app

    application = create_sandbox_app(
        catalogue, gateway_url=gateway_url, step_seconds=step or None, smtp_port=smtp or None
    )
    uvicorn.run(application, host=host, port=port, log_config=None, access_log=False)


@routes_cli.command("explain")
def routes_explain(
    service: Annotated[str, typer.Option("--service", help="Service code, e.g. pothole")],
    postcode: Annotated[str | None, typer.Option("--postcode", help="e.g. OX14 3DB")] = None,
) -> None:
    """Print where an enquiry for SERVICE at POSTCODE would go, and why."""
    settings = _settings()
    with _config_errors():
        catalogue = load_configured_catalogue(settings)
    chosen = catalogue.services.get(service)
    if chosen is None:
        typer.echo(f"no service '{service}'; known: {', '.join(catalogue.services)}", err=True)
        raise typer.Exit(2)
    normalised = normalise_postcode(postcode) if postcode else None
    if postcode and normalised is None:
        typer.echo(f"'{postcode}' is not a UK postcode", err=True)
        raise typer.Exit(2)
    asyncio.run(_explain(settings, chosen.code, normalised))


async def _explain(settings: Settings, service_code: str, postcode: str | None) -> None:
    catalogue = load_configured_catalogue(settings)
    engine = create_engine(settings.database_url)
    await migrate(engine, sealer=settings.sealer())
    async with outbound_client(settings, outbound_guard(settings)) as client:
        locator = build_locator(settings, engine, client)
        place = await locator.locate(postcode=postcode, latitude=None, longitude=None)
    await engine.dispose()
    typer.echo(f"service:  {service_code} ({catalogue.services[service_code].name})")
    codes = ", ".join(f"{k}={v}" for k, v in place.as_dict().items())
    typer.echo(f"place:    {codes or 'unknown'}")
    try:
        destinations = route(
            service=catalogue.services[service_code], place=place, catalogue=catalogue
        )
    except DomainError as exc:
        typer.echo(f"decision: refused ({exc.slug}): {exc.detail}")
        raise typer.Exit(1) from exc
    for destination in destinations:
        typer.echo(f"decision: {destination.organisation_id}: {destination.reason}")


@gazetteer_cli.command("import")
def gazetteer_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="ONSPD CSV file")],
    replace: Annotated[bool, typer.Option(help="Empty the gazetteer first")] = False,
) -> None:
    """Load full postcodes from an ONS Postcode Directory CSV (columns pcds, oscty, oslaua...)."""
    settings = _settings()
    count = asyncio.run(_import(settings, file, replace=replace))
    typer.echo(f"imported {count} postcodes")


async def _import(settings: Settings, file: Path, *, replace: bool) -> int:
    engine = create_engine(settings.database_url)
    await migrate(engine, sealer=settings.sealer())
    total = 0
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        async with writing(engine) as conn:
            if replace:
                await conn.execute(delete(gazetteer_table))
            batch: list[dict[str, str]] = []
            for row in reader:
                batch.append(row)
                if len(batch) == 5000:
                    total += await _import_batch(conn, batch)
                    batch = []
            total += await _import_batch(conn, batch)
    await engine.dispose()
    return total


async def _import_batch(conn: AsyncConnection, batch: list[dict[str, str]]) -> int:
    rows = import_onspd_rows(batch)
    if not rows:
        return 0
    postcodes = [r["postcode"] for r in rows]
    # Re-importing a newer directory replaces the rows it carries.
    await conn.execute(delete(gazetteer_table).where(gazetteer_table.c.postcode.in_(postcodes)))
    await conn.execute(insert(gazetteer_table), rows)
    return len(rows)


@clients_cli.command("create")
def clients_create(
    name: Annotated[str, typer.Argument(help="A name people will recognise, e.g. kiosk-banbury")],
    scope: Annotated[
        list[clients.Scope], typer.Option("--scope", help="What it may do; repeat for more")
    ],
    channel: Annotated[
        Channel | None,
        typer.Option(help="The one channel its enquiries are on (a kiosk, a phone line)"),
    ] = None,
) -> None:
    """Make an API client; its key is printed once, as the last line, and never again."""
    settings = _settings()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise typer.BadParameter(
            "use 1 to 64 letters, digits, dots, dashes or underscores", param_hint="NAME"
        )

    async def run() -> tuple[clients.ClientInfo, str]:
        async with _engine(settings) as engine:
            return await clients.create_client(
                engine, name=name, scopes=scope, channel=channel.value if channel else None
            )

    try:
        made, key = asyncio.run(run())
    except DomainError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"created {made.name} ({made.id}) with scopes {' '.join(made.scopes)}")
    if made.channel:
        typer.echo(f"its enquiries must be on the channel {made.channel}")
    typer.echo("the key is shown only now; keep it secret:")
    typer.echo(key)


@clients_cli.command("list")
def clients_list() -> None:
    """Every client: name, id, key id, scopes, channel, and whether it is revoked."""
    settings = _settings()

    async def run() -> list[clients.ClientInfo]:
        async with _engine(settings) as engine:
            return await clients.list_clients(engine)

    for made in asyncio.run(run()):
        state = f"revoked {made.revoked_at:%Y-%m-%d %H:%M}" if made.revoked_at else "active"
        typer.echo(
            f"{made.name}\t{made.id}\t{made.key_hint}\t{','.join(made.scopes)}"
            f"\t{made.channel or '-'}\t{state}"
        )


@clients_cli.command("revoke")
def clients_revoke(
    client: Annotated[str, typer.Argument(help="The client's name, id or key id")],
) -> None:
    """Stop a client's key working, from its next request on."""
    settings = _settings()

    async def run() -> clients.ClientInfo:
        async with _engine(settings) as engine:
            return await clients.revoke_client(engine, client)

    try:
        revoked = asyncio.run(run())
    except DomainError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"revoked {revoked.name} ({revoked.id})")


@contextlib.asynccontextmanager
async def _engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.database_url)
    try:
        if settings.migrate_on_start:
            await migrate(engine, sealer=settings.sealer())
        yield engine
    finally:
        await engine.dispose()


@privacy_cli.command("new-key")
def privacy_new_key() -> None:
    """Print a fresh key for IAP_PRIVACY__KEYS (put it first to make it the sealing key)."""
    typer.echo(crypto.new_key())


@privacy_cli.command("rotate-keys")
def privacy_rotate_keys() -> None:
    """Re-seal every citizen's details under the first key in IAP_PRIVACY__KEYS and re-hash
    their email and phone under IAP_PRIVACY__LOOKUP_KEY; afterwards the old key can go."""
    settings = _settings()

    async def run() -> tuple[int, int]:
        sealer = settings.sealer()
        async with _engine(settings) as engine:
            enquiries = await privacy.reseal_all(
                engine=engine, sealer=sealer, actor=Actor("iap privacy rotate-keys")
            )
            return enquiries, await webhooks.reseal_secrets(engine=engine, sealer=sealer)

    try:
        count, secrets_ = asyncio.run(run())
    except crypto.SealedDataUnreadable as exc:
        typer.echo(f"{exc}: keep every old key in IAP_PRIVACY__KEYS until this succeeds", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"re-sealed the citizen's details of {count} enquiries with the newest key")
    typer.echo(f"re-sealed {secrets_} webhook subscription secrets with the newest key")


@retention_cli.command("run")
def retention_run() -> None:
    """Anonymise every enquiry whose service's retention_days have passed since it closed."""
    settings = _settings()

    async def run() -> int:
        async with _engine(settings) as engine:
            return await privacy.run_retention(
                engine=engine,
                catalogue=load_configured_catalogue(settings),
                actor=Actor("iap retention run"),
            )

    typer.echo(f"anonymised {asyncio.run(run())} enquiries past their retention period")


@cli.command("openapi")
def openapi_command(
    output: Annotated[Path, typer.Option(help="Where to write it")] = Path("openapi/openapi.json"),
) -> None:
    """Write the OpenAPI document of the API."""
    settings = _settings()
    with _config_errors():
        app = create_app(settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(app.openapi(), indent=2, sort_keys=False) + "\n")
    typer.echo(f"wrote {output}")


def tune_garbage_collector() -> None:
    """Collect less often, and never walk the objects loaded at start-up again.

    Python's default collects every 700 allocations and a request makes thousands, so a busy
    server spent much of its time collecting (measured: a third more intake throughput and
    p99 latency cut from ~70 ms to ~20 ms under 32 connections; docs/performance.md).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def main() -> None:
    """Entry point of the `iap` script."""
    cli()
