"""The sandbox application: every simulator on one HTTP port, and the SMTP sink beside it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.catalogue.catalogue import Catalogue
from app.sandbox import admin, county, fhir, generic, mail, notify, open311
from app.sandbox.core import DEFAULT_PUSH_DELAYS, Sandbox
from app.sandbox.faults import SimulatorError, render_simulator_error


def create_sandbox_app(
    catalogue: Catalogue | None = None,
    *,
    gateway_url: str | None = None,
    step_seconds: float | None = None,
    smtp_port: int | None = None,
    token_seconds: float = 300.0,
    push_delays: Sequence[float] = DEFAULT_PUSH_DELAYS,
) -> FastAPI:
    """The simulated back-offices of the catalogue's organisations (not part of the gateway).

    gateway_url: where organisations that push send status updates (None: they don't push).
    step_seconds: move each new case to its next status this often (None: only by hand).
    smtp_port: run the SMTP sink on 127.0.0.1 at this port while the app runs (0: any free
    port, then read `app.state.sandbox.smtp_port`; None: no sink).
    token_seconds: lifetime of the county's OAuth2 access tokens.
    push_delays: seconds between attempts to push one update to a gateway not answering.
    """
    sandbox = Sandbox(
        catalogue=catalogue,
        gateway_url=gateway_url,
        step_seconds=step_seconds,
        token_seconds=token_seconds,
        push_delays=tuple(push_delays),
        smtp_port=smtp_port,
    )
    sandbox.on_move["fhir"] = fhir.record_version

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        controller = None
        if smtp_port is not None:
            sandbox.smtp_port = smtp_port or _free_port()
            controller = await mail.start_sink(sandbox, sandbox.smtp_port)
        try:
            yield
        finally:
            if controller is not None:
                await asyncio.to_thread(controller.stop)
            await sandbox.stop()

    app = FastAPI(
        title="IAP sandbox back-offices",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    app.state.office = sandbox.office
    app.add_exception_handler(SimulatorError, render_simulator_error)
    app.add_middleware(CountInFlight, sandbox=sandbox)
    for router in (admin.router, mail.router, open311.router, county.router, fhir.router):
        app.include_router(router)
    app.include_router(notify.router)  # GOV.UK Notify, for the gateway's alerts to citizens
    app.include_router(generic.router)
    return app


class CountInFlight:
    """Plain ASGI middleware: how many requests the sandbox is still answering."""

    def __init__(self, app: ASGIApp, *, sandbox: Sandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count the request while the app answers it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.sandbox.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.sandbox.in_flight -= 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
