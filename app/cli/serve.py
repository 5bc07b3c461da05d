"""The long-running commands: `serve` (the API, and by default the loops beside it), `worker`
(the loops alone), `sandbox` (the simulated back-offices), and `migrate`.

app.main (the API) is imported only by the commands that serve it, and app.sandbox only where
the sandbox runs: a worker loads neither."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Annotated
from urllib.parse import urlsplit

import typer
import uvicorn

from app.catalogue.catalogue import Catalogue
from app.cli.base import config_errors, load_settings, open_engine, run_async
from app.clients import service as clients
from app.core.outbound import OutboundGuard
from app.core.settings import Environment, Settings
from app.production import check_production
from app.runtime import (
    Runtime,
    health_app,
    load_configured_catalogue,
    outbound_guard,
    runtime,
)

Host = Annotated[str, typer.Option(metavar="HOST", help="Address to listen on")]


def serve(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on")] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="API only; run `iap worker`s")
    ] = False,
    sandbox: Annotated[
        bool, typer.Option(help="Also run the sandbox back-offices (development only)")
    ] = True,
) -> None:
    """Run the API and, unless --no-worker, a dispatcher in the same process."""
    from app.main import create_app

    settings = load_settings()
    with config_errors():
        app = create_app(settings, run_dispatcher=not no_worker)
    gateway = _Gateway(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
    sandbox_server = (
        _embedded_sandbox(settings, gateway_url=_loopback_url(host, port)) if sandbox else None
    )
    if settings.env is Environment.development:
        key = run_async(settings, load_development_key(settings))
        typer.echo(f"development API key (all scopes, kept in {settings.dev_key_file}): {key}")
    else:
        run_async(settings, _open_database(settings))
    run_async(settings, _serve_together(gateway, sandbox_server))


async def load_development_key(settings: Settings) -> str:
    """The development client's key: the one kept in the key file, or a new one kept there."""
    key_file = settings.dev_key_file
    kept = key_file.read_text().strip() if key_file.exists() else None
    async with open_engine(settings) as engine:
        key = await clients.development_key(engine, kept)
    if key != kept:
        key_file.touch(mode=0o600)
        key_file.write_text(key + "\n")
    return key


async def _open_database(settings: Settings) -> None:
    """Connect (and migrate, unless told not to) before the server starts, so a database it
    cannot open is told in one line rather than as the server's failed start."""
    async with open_engine(settings) as engine, engine.connect():
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

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # After the lifespan, so what it loaded (the catalogue, the locator's tables) is frozen.
        tune_garbage_collector()


class _QuietServer(uvicorn.Server):
    """A second server in the same process: the gateway's server (or the worker) owns the
    signals."""

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


@contextlib.asynccontextmanager
async def _alongside(server: uvicorn.Server | None) -> AsyncIterator[None]:
    """Serve `server` (when there is one) while the body runs, and stop it after."""
    task = asyncio.create_task(server.serve()) if server else None
    try:
        yield
    finally:
        if server is not None and task is not None:
            server.should_exit = True
            await task


async def _serve_together(gateway: uvicorn.Server, sandbox: uvicorn.Server | None) -> None:
    async with _alongside(sandbox):
        await gateway.serve()


def worker(
    health_host: Annotated[
        str, typer.Option(metavar="HOST", help="Address of the --health-port listener")
    ] = "127.0.0.1",
    health_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Also answer /healthz and /readyz (the database and each loop) on this port",
        ),
    ] = None,
) -> None:
    """Deliver, poll and send webhooks (no API); run as many as you like against one PostgreSQL
    database."""
    settings = load_settings()
    with config_errors():
        catalogue = load_configured_catalogue(settings)
        guard = outbound_guard(settings)
        check_production(settings, catalogue, guard=guard)
        health = (health_host, health_port) if health_port is not None else None
        run_async(settings, _work(settings, catalogue, guard, health=health))


async def _work(
    settings: Settings,
    catalogue: Catalogue,
    guard: OutboundGuard,
    *,
    health: tuple[str, int] | None,
) -> None:
    async with runtime(settings, catalogue, guard=guard) as running:
        tune_garbage_collector()  # once started, so all it loaded is frozen
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(running.stop()))
        async with _alongside(_health_listener(running, health)):
            await running.work()


def _health_listener(running: Runtime, address: tuple[str, int] | None) -> uvicorn.Server | None:
    """The worker's /healthz and /readyz, when it was given a port for them."""
    if address is None:
        return None
    host, port = address
    config = uvicorn.Config(
        health_app(running), host=host, port=port, log_config=None, access_log=False
    )
    return _QuietServer(config)


def migrate_command() -> None:
    """Bring the database schema up to date."""
    settings = load_settings()

    async def migrate() -> None:
        async with open_engine(settings, migrated=True):
            pass

    run_async(settings, migrate())
    typer.echo("database is up to date")


def sandbox_command(
    host: Host = "127.0.0.1",
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
    settings = load_settings()
    with config_errors():
        catalogue = load_configured_catalogue(settings)
    smtp = settings.sandbox_smtp_port if smtp_port is None else smtp_port
    step = settings.sandbox_step_seconds if step_seconds is None else step_seconds
    from app.sandbox import create_sandbox_app

    application = create_sandbox_app(
        catalogue, gateway_url=gateway_url, step_seconds=step or None, smtp_port=smtp or None
    )
    uvicorn.run(application, host=host, port=port, log_config=None, access_log=False)


def tune_garbage_collector() -> None:
    """Collect less often, and never walk the objects loaded at start-up again.

    Python's default collects every 700 allocations and a request makes thousands, so a busy
    server spent much of its time collecting (measured: a third more intake throughput and
    p99 latency cut from ~70 ms to ~20 ms under 32 connections; docs/performance.md). Called
    once the process has started: a full collection that still walked the objects loaded at
    start-up took 64-78 ms, every second or two under load; 5.5 ms once frozen (issue 16).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
