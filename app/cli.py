"""The `iap` command: serve, worker, migrate, sandbox, routes, gazetteer, openapi."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import gc
import io
import json
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

import structlog
import typer
import uvicorn
from pydantic import ValidationError
from sqlalchemy import delete, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.catalogue.catalogue import Catalogue, Service
from app.catalogue.locate import PostcodeTable, import_onspd_rows, normalise_postcode
from app.clients import service as clients
from app.core import crypto
from app.core.db import (
    DatabaseUnavailable,
    create_engine,
    describe_database_error,
    migrate,
    writing,
)
from app.core.errors import ConfigError, DomainError
from app.core.logs import configure_logging
from app.core.models import gazetteer_table
from app.core.outbound import OutboundGuard, outbound_client
from app.core.settings import Environment, Settings, describe_settings_error, get_settings
from app.intake.schemas import Channel, Location
from app.intake.service import locate_and_route
from app.main import (
    build_locator,
    create_app,
    load_configured_catalogue,
    outbound_guard,
    runtime,
)
from app.partners import subscriptions as webhooks
from app.privacy import service as privacy
from app.privacy.audit import Actor
from app.production import check_production

# Plain help, each value named by what it is (HOST, FILE) rather than by its Python type.
# (Arguments are described in their command's help: typer lists them with a <type> label.)
_Plain = functools.partial(typer.Typer, no_args_is_help=True, rich_markup_mode=None)
cli = _Plain(help="IAP: the integrated access point for public-service enquiries.")
routes_cli = _Plain(help="Explain routing decisions.")
gazetteer_cli = _Plain(help="Manage the postcode gazetteer.")
clients_cli = _Plain(help="Manage API clients and their keys.")
cli.add_typer(routes_cli, name="routes")
cli.add_typer(gazetteer_cli, name="gazetteer")
privacy_cli = _Plain(help="Keys for citizen details at rest.")
retention_cli = _Plain(help="Anonymise enquiries past their retention.")
cli.add_typer(clients_cli, name="clients")
cli.add_typer(privacy_cli, name="privacy")
cli.add_typer(retention_cli, name="retention")


T = TypeVar("T")


def _settings() -> Settings:
    try:
        settings = get_settings()
    except ValidationError as exc:
        typer.echo(f"configuration error:\n{describe_settings_error(exc)}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, settings.log_renderer)
    return settings


def _run(settings: Settings, work: Coroutine[Any, Any, T]) -> T:
    """Run a command's async work; a database it cannot open ends it with a line saying why and
    what to do, not a traceback."""
    try:
        with _config_errors():
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
def _config_errors() -> Iterator[None]:
    try:
        yield
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from exc


@cli.command()
def serve(
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on")] = 8000,
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
    gateway = _Gateway(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
    sandbox_server = (
        _embedded_sandbox(settings, gateway_url=_loopback_url(host, port)) if sandbox else None
    )
    if settings.env is Environment.development:
        key = _run(settings, load_development_key(settings))
        typer.echo(f"development API key (all scopes, kept in {settings.dev_key_file}): {key}")
    else:
        _run(settings, _open_database(settings))
    tune_garbage_collector()
    _run(settings, _serve_together(gateway, sandbox_server))


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


async def _open_database(settings: Settings) -> None:
    """Connect (and migrate, unless told not to) before the server starts, so a database it
    cannot open is told in one line rather than as the server's failed start."""
    async with _engine(settings) as engine, engine.connect():
        pass


class _Gateway(uvicorn.Server):
    """Ctrl-C or SIGTERM stop it and the command exits 0.

    Once stopped, uvicorn raises the signal again for a handler outside it; there is none here,
    so a clean stop would end in a KeyboardInterrupt traceback or a process killed by SIGTERM.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


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
        _run(settings, _work(settings, catalogue, guard))


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

    _run(settings, run())
    typer.echo("database is up to date")


@cli.command("sandbox")
def sandbox_command(
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="HTTP port of the back-offices")] = 8090,
    smtp_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="SMTP sink port on 127.0.0.1 (0: none) [default: IAP_SANDBOX_SMTP_PORT]",
        ),
    ] = None,
    gateway_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="Gateway to push status updates to, e.g. http://127.0.0.1:8000"
        ),
    ] = None,
    step_seconds: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Move each new case to its next status this often (0: only when told) "
            "[default: IAP_SANDBOX_STEP_SECONDS]",
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
    service: Annotated[
        str, typer.Option("--service", metavar="CODE", help="Service code, e.g. pothole")
    ],
    postcode: Annotated[
        str | None, typer.Option("--postcode", metavar="POSTCODE", help="e.g. OX14 3DB, or OX14")
    ] = None,
) -> None:
    """Print where an enquiry for SERVICE at POSTCODE would go, and why: the answer
    POST /v1/enquiries would give, from the same checks and routing."""
    settings = _settings()
    with _config_errors():
        catalogue = load_configured_catalogue(settings)
    chosen = catalogue.services.get(service)
    if chosen is None:
        typer.echo(f"no service '{service}'; known: {', '.join(catalogue.services)}", err=True)
        raise typer.Exit(2)
    try:
        location = Location(postcode=postcode) if postcode else None
    except ValidationError as exc:
        typer.echo(exc.errors()[0]["msg"].removeprefix("Value error, "), err=True)
        raise typer.Exit(2) from None
    _run(settings, _explain(settings, catalogue, chosen, location))


async def _explain(
    settings: Settings, catalogue: Catalogue, service: Service, location: Location | None
) -> None:
    typer.echo(f"service:  {service.code} ({service.name})")
    async with (
        _engine(settings) as engine,
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


@gazetteer_cli.command("import")
def gazetteer_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, metavar="FILE", hidden=True)],
    replace: Annotated[bool, typer.Option(help="Empty the gazetteer first")] = False,
) -> None:
    """Load full postcodes from FILE, an ONS Postcode Directory CSV (columns pcds, oscty,
    oslaua...)."""
    settings = _settings()
    table = PostcodeTable.from_csv(settings.config_dir / "postcode_areas.csv")
    progress = _ImportProgress(total_bytes=file.stat().st_size)
    tally = _run(settings, _import(settings, file, table, progress, replace=replace))
    progress.done()
    typer.echo(tally.summary(time.monotonic() - progress.started))


@dataclass
class _ImportTally:
    """What an import did with each row of the directory."""

    read: int = 0
    imported: int = 0
    terminated: int = 0  # imported, and marked: a citizen may still give an old postcode
    malformed: int = 0
    outside: int = 0

    def summary(self, seconds: float) -> str:
        rate = self.read / seconds if seconds > 0 else 0.0
        return (
            f"imported {self.imported} postcodes ({self.terminated} of them terminated, kept "
            f"and marked) from {self.read} rows in {seconds:.1f} s ({rate:,.0f} rows/s); "
            f"skipped {self.malformed + self.outside}: {self.malformed} without a valid "
            f"postcode, {self.outside} outside every area of postcode_areas.csv"
        )


class _ImportProgress:
    """Rows done, rate and time left, on stderr: a line rewritten in place on a terminal,
    otherwise a log line every 10 seconds."""

    def __init__(self, *, total_bytes: int, every_seconds: float = 10.0) -> None:
        self.total_bytes = max(total_bytes, 1)
        self.started = self._last = time.monotonic()
        self.every_seconds = 0.5 if sys.stderr.isatty() else every_seconds
        self._drawn = False

    def update(self, *, rows: int, bytes_read: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every_seconds:
            return
        self._last = now
        elapsed = now - self.started
        fraction = min(bytes_read / self.total_bytes, 1.0)
        left = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        rate = rows / elapsed if elapsed > 0 else 0.0
        if sys.stderr.isatty():
            line = f"{rows:,} rows, {fraction:.0%}, {rate:,.0f} rows/s, about {left:.0f} s left"
            sys.stderr.write(f"\r{line:<72}")
            sys.stderr.flush()
            self._drawn = True
        else:
            structlog.get_logger().info(
                "gazetteer.import_progress",
                rows=rows,
                percent=round(fraction * 100),
                rows_per_second=round(rate),
                seconds_left=round(left),
            )

    def done(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")


_ONSPD_POSTCODE_COLUMNS = ("pcds", "pcd")


async def _import(
    settings: Settings,
    file: Path,
    table: PostcodeTable,
    progress: _ImportProgress,
    *,
    replace: bool,
) -> _ImportTally:
    tally = _ImportTally()
    async with _engine(settings) as engine:
        with (
            file.open("rb") as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text,
        ):
            reader = csv.DictReader(text)
            if not set(_ONSPD_POSTCODE_COLUMNS) & set(reader.fieldnames or ()):
                raise ConfigError(
                    f"{file} has no pcds or pcd column: is it the ONS Postcode Directory CSV?"
                )
            async with writing(engine) as conn:
                if replace:
                    await conn.execute(delete(gazetteer_table))
                batch: list[dict[str, str]] = []
                for row in reader:
                    if _keep(row, table, tally):
                        batch.append(row)
                    if len(batch) == 5000:
                        await _import_batch(conn, batch, tally)
                        batch = []
                    if tally.read % 5000 == 0:
                        progress.update(rows=tally.read, bytes_read=raw.tell())
                await _import_batch(conn, batch, tally)
    return tally


def _keep(row: dict[str, str], table: PostcodeTable, tally: _ImportTally) -> bool:
    tally.read += 1
    postcode = normalise_postcode(row.get("pcds") or row.get("pcd") or "")
    if postcode is None:
        tally.malformed += 1
        return False
    if not table.covers(postcode):
        # The built-in table already answers "outside the area" for it.
        tally.outside += 1
        return False
    return True


async def _import_batch(
    conn: AsyncConnection, batch: list[dict[str, str]], tally: _ImportTally
) -> None:
    rows = import_onspd_rows(batch)
    if not rows:
        return
    postcodes = [r["postcode"] for r in rows]
    # Re-importing a newer directory replaces the rows it carries.
    await conn.execute(delete(gazetteer_table).where(gazetteer_table.c.postcode.in_(postcodes)))
    await conn.execute(insert(gazetteer_table), rows)
    tally.imported += len(rows)
    tally.terminated += sum(1 for r in rows if r["terminated"])


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
) -> None:
    """Make an API client called NAME (one people will recognise, e.g. kiosk-banbury); its key
    is printed once, as the last line, and never again."""
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
        made, key = _run(settings, run())
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

    for made in _run(settings, run()):
        state = f"revoked {made.revoked_at:%Y-%m-%d %H:%M}" if made.revoked_at else "active"
        typer.echo(
            f"{made.name}\t{made.id}\t{made.key_hint}\t{','.join(made.scopes)}"
            f"\t{made.channel or '-'}\t{state}"
        )


@clients_cli.command("revoke")
def clients_revoke(
    client: Annotated[str, typer.Argument(metavar="CLIENT", hidden=True)],
) -> None:
    """Stop the key of CLIENT (its name, id or key id) working, from its next request on."""
    settings = _settings()

    async def run() -> clients.ClientInfo:
        async with _engine(settings) as engine:
            return await clients.revoke_client(engine, client)

    try:
        revoked = _run(settings, run())
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
        count, secrets_ = _run(settings, run())
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

    typer.echo(f"anonymised {_run(settings, run())} enquiries past their retention period")


@cli.command("openapi")
def openapi_command(
    output: Annotated[Path, typer.Option(metavar="FILE", help="Where to write it")] = Path(
        "openapi/openapi.json"
    ),
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
