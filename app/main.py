"""The application factory: its lifespan owns the engine, the HTTP client and the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters import build_adapters
from app.adapters.base import Adapter
from app.api.auth import admit
from app.api.middleware import BodyGuard, add_http_guards
from app.api.problems import PROBLEM_JSON, install_problem_handlers
from app.api.ratelimit import RateLimiter
from app.api.request_log import add_request_log
from app.api.state import AppState
from app.catalogue.catalogue import Catalogue, load_catalogue
from app.catalogue.locate import Gazetteer, HttpLocator, Locator, LocatorChain, PostcodeTable
from app.core.crypto import Sealer
from app.core.db import create_engine, migrate
from app.core.outbound import OutboundGuard, OutboundPolicy, Resolver, outbound_client
from app.core.settings import Settings, get_settings
from app.delivery.dispatcher import Dispatcher
from app.intake.service import IntakeContext
from app.intake.store import close_store
from app.partners.sender import WebhookSender
from app.privacy.service import Retention
from app.production import check_production
from app.routers import catalogue, enquiries, inbound, meta, privacy, webhooks
from app.updates.inbound import InboundUpdate
from app.updates.poller import Poller

API_DESCRIPTION = """
One endpoint for every public-service enquiry in a two-tier area. Submit an enquiry; the gateway
works out from the service and the place which organisations must act (county, district,
police, NHS, or a person at the triage desk), stores it, and delivers it to each of them.

Every error is an RFC 9457 `application/problem+json` document with a stable `type`.
"""
DOCS_ASSETS = "/docs/assets"


def load_configured_catalogue(settings: Settings) -> Catalogue:
    """The catalogue from IAP_CONFIG_DIR, with the sandbox's addresses filled from the settings."""
    variables = {
        "IAP_SANDBOX_URL": settings.sandbox_url,
        "IAP_SANDBOX_SMTP_PORT": str(settings.sandbox_smtp_port),
    }
    return load_catalogue(settings.config_dir, variables=variables)


def create_app(
    settings: Settings | None = None,
    *,
    run_dispatcher: bool = True,
    resolver: Resolver | None = None,
) -> FastAPI:
    """Build the API; with run_dispatcher it also delivers enquiries in this process.

    With IAP_ENV=production a configuration production refuses stops it here (ConfigError).
    `resolver` answers host names for the outbound rules instead of the system's (tests).
    """
    settings = settings or get_settings()
    catalogue_ = load_configured_catalogue(settings)
    guard = outbound_guard(settings, resolver)
    check_production(settings, catalogue_, guard=guard)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime(settings, catalogue_, guard=guard) as running:
            intake = IntakeContext(
                engine=running.engine,
                catalogue=catalogue_,
                locator=build_locator(settings, running.engine, running.client),
                wake_dispatcher=running.dispatcher.wake if run_dispatcher else lambda: None,
                sealer=running.sealer,
                settings=settings.api,
            )
            limiter = RateLimiter(settings.api)
            app.state.iap = AppState(
                settings,
                running.engine,
                catalogue_,
                intake,
                running.adapters,
                running.sealer,
                limiter,
                outbound=guard,
            )
            app.state.runtime = running
            task = asyncio.create_task(running.work()) if run_dispatcher else None
            try:
                yield
            finally:
                await limiter.close()
                if task is not None:
                    await running.stop()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    app = FastAPI(
        title="IAP: integrated access point",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    add_docs_pages(app)
    app.add_middleware(BodyGuard, max_body_bytes=settings.api.max_body_bytes, admit=admit)
    add_http_guards(app, settings)
    add_request_log(app, settings)
    install_problem_handlers(app, admit=admit)
    for router in (
        enquiries.router,
        privacy.router,
        webhooks.router,
        inbound.router,
        catalogue.router,
        meta.router,
    ):
        app.include_router(router)
    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
    return app


def add_docs_pages(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts and styles served by the gateway itself,
    from the fastapi-offline package, so they work on a council network that reaches no CDN."""
    assets = Path(str(files("fastapi_offline") / "static"))
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
    title = f"{app.title}: API documentation"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )


@dataclass
class Runtime:
    """What a gateway or worker process runs on: the database, the one HTTP client, the
    adapters, and the background work (delivering, polling back-offices for status, retention,
    and the partner event feed over webhooks)."""

    engine: AsyncEngine
    client: httpx.AsyncClient
    adapters: dict[str, Adapter]
    sealer: Sealer
    dispatcher: Dispatcher
    poller: Poller
    retention: Retention
    webhooks: WebhookSender

    async def work(self) -> None:
        """Deliver, poll, apply retention and send webhooks until stop() is called."""
        await asyncio.gather(
            self.dispatcher.run(), self.poller.run(), self.retention.run(), self.webhooks.run()
        )

    async def stop(self) -> None:
        self.retention.stop()
        await self.webhooks.stop()
        await self.poller.stop()
        await self.dispatcher.stop()


def outbound_guard(settings: Settings, resolver: Resolver | None = None) -> OutboundGuard:
    """The outbound rules of these settings (enforced in production only)."""
    return OutboundGuard(
        OutboundPolicy.from_settings(settings),
        resolver=resolver,
        cache_seconds=settings.outbound.resolve_cache_seconds,
    )


@asynccontextmanager
async def runtime(
    settings: Settings, catalogue: Catalogue, *, guard: OutboundGuard | None = None
) -> AsyncIterator[Runtime]:
    """The database engine (migrated), the shared HTTP client, adapters, dispatcher, poller."""
    guard = guard or outbound_guard(settings)
    sealer = settings.sealer()
    engine = create_engine(settings.database_url, settings.database)
    try:
        if settings.migrate_on_start:
            await migrate(engine, sealer=sealer)
        async with outbound_client(settings, guard) as client:
            adapters = build_adapters(catalogue, client, settings, outbound=guard)
            dispatcher = Dispatcher(
                engine=engine,
                catalogue=catalogue,
                adapters=adapters,
                sealer=sealer,
                settings=settings.dispatch,
            )
            poller = Poller(
                engine=engine,
                catalogue=catalogue,
                adapters=adapters,
                worker_id=dispatcher.worker_id,
            )
            retention = Retention(
                engine=engine,
                catalogue=catalogue,
                interval_seconds=settings.privacy.retention_interval_seconds,
            )
            sender = WebhookSender(
                engine=engine,
                client=client,
                sealer=sealer,
                settings=settings.webhooks,
                worker_id=dispatcher.worker_id,
                shutdown_grace_seconds=settings.dispatch.shutdown_grace_seconds,
            )
            yield Runtime(engine, client, adapters, sealer, dispatcher, poller, retention, sender)
    finally:
        await close_store(engine)
        await engine.dispose()


def build_locator(
    settings: Settings, engine: AsyncEngine, client: httpx.AsyncClient
) -> LocatorChain:
    """Gazetteer first, then the HTTP locator if configured, then the built-in table."""
    sources: list[Locator] = [Gazetteer(engine)]
    if settings.locator.http_url:
        sources.append(
            HttpLocator(client, settings.locator.http_url, settings.locator.http_timeout_seconds)
        )
    sources.append(PostcodeTable.from_csv(settings.config_dir / "postcode_areas.csv"))
    return LocatorChain(sources)


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the Problem schema that every error response uses."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    # Read raw (its signature covers the bytes), so FastAPI cannot document it by itself.
    schemas["InboundUpdate"] = InboundUpdate.model_json_schema()
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    problem_content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path in schema["paths"].values():
        for operation in path.values():
            responses = operation.get("responses", {})
            # FastAPI documents its own 422 body; ours is problem+json.
            if "HTTPValidationError" in str(responses.get("422", "")):
                responses["422"] = {"description": "Validation error", "content": problem_content}
    app.openapi_schema = schema
    return schema


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "Stable URI of the problem type"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "What went wrong, for a person"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["detail"],
                "properties": {
                    "detail": {"type": "string"},
                    "pointer": {"type": "string", "description": "JSON pointer into the body"},
                    "parameter": {"type": "string"},
                    "header": {"type": "string"},
                },
            },
        },
    },
}
