"""The application factory: the API, its docs pages and its OpenAPI document; its lifespan runs
the engine, the HTTP client and (unless API-only) the supervised loops of app.runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app.api.auth import admit
from app.api.middleware import BodyGuard, add_http_guards
from app.api.openapi import (
    TAGS,
    add_answer_examples,
    add_webhooks,
    operation_id,
    refine,
    unique_schema_names,
)
from app.api.problems import PROBLEM_JSON, install_problem_handlers
from app.api.ratelimit import RateLimiter
from app.api.request_log import add_request_log
from app.api.state import AppState
from app.core.outbound import Resolver
from app.core.settings import Settings, get_settings
from app.intake.service import IntakeContext
from app.production import check_production
from app.routers import (
    alerts,
    attachments,
    catalogue,
    console,
    conversation,
    dispatches,
    enquiries,
    inbound,
    kiosk,
    meta,
    open311,
    parts,
    privacy,
    stuck,
    track,
    triage,
    webhooks,
)
from app.runtime import build_locator, load_configured_catalogue, outbound_guard, runtime
from app.updates.inbound import InboundUpdate
from app.web import i18n, pages

API_DESCRIPTION = """
One endpoint for every public-service enquiry in a two-tier area. Submit an enquiry; the gateway
works out from the service and the place which organisations must act (county, district,
police, NHS, or a person at the triage desk), stores it, and delivers it to each of them.

Every error is an RFC 9457 `application/problem+json` document with a stable `type`.
"""
DOCS_ASSETS = "/docs/assets"
UPLOAD_MARGIN_BYTES = 64 * 1024


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
                attachments=running.attachments,
                wake_follow_ups=running.follow_ups.wake if run_dispatcher else lambda: None,
                http=running.client,
            )
            app.state.runtime = running
            app.state.readiness = meta.Readiness(
                running.engine, running.supervisor if run_dispatcher else None
            )
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
        openapi_tags=TAGS,
        servers=[{"url": settings.public_url}],
        generate_unique_id_function=operation_id,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry hooks are off: IAP's telemetry is its JSON logs and
        # /readyz, and the hooks looked for a configured provider on every request (8% of
        # the intake's throughput, bench/).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    add_docs_pages(app)
    # The pages' stylesheets and scripts, from the package (app/web/static).
    app.mount(pages.ASSETS, StaticFiles(directory=str(i18n.STATIC_DIR)), name="assets")
    uploads = settings.attachments
    app.add_middleware(
        BodyGuard,
        max_body_bytes=settings.api.max_body_bytes,
        admit=admit,
        # Every file a request may carry at its largest, and room for the form around them.
        max_upload_bytes=uploads.max_bytes * uploads.max_files + UPLOAD_MARGIN_BYTES,
    )
    add_http_guards(app, settings)
    add_request_log(app, settings)
    install_problem_handlers(app, admit=admit)
    for router in (
        enquiries.router,
        conversation.router,
        triage.router,
        parts.router,
        privacy.router,
        webhooks.router,
        dispatches.router,
        stuck.router,
        inbound.router,
        catalogue.router,
        attachments.router,
        alerts.router,
        track.router,
        kiosk.router,
        open311.router,
        meta.router,
    ):
        app.include_router(router)
    console.install(app)
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


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the Problem schema that every error response uses."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
        servers=app.servers,
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
    refine(schema, app.routes)
    add_webhooks(schema)
    schema = unique_schema_names(schema)
    add_answer_examples(schema)
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
