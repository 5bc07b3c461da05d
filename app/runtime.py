"""The composition root of `iap serve` and `iap worker`: the engine, the one HTTP client, the
adapters and the supervised background loops, built the same way for both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters import build_adapters
from app.adapters.base import Adapter
from app.alerts.feed import AlertFeed
from app.alerts.sender import AlertSender
from app.api.problems import install_problem_handlers
from app.attachments.store import AttachmentStore, build_store
from app.casework.stuck import StuckSummaries
from app.catalogue.catalogue import Catalogue, load_catalogue
from app.catalogue.locate import (
    Gazetteer,
    HttpLocator,
    Locator,
    LocatorChain,
    PointTable,
    PostcodeTable,
)
from app.conversation.sender import FollowUpSender
from app.core.crypto import Sealer
from app.core.db import create_engine, migrate
from app.core.outbound import OutboundGuard, OutboundPolicy, Resolver, outbound_client
from app.core.settings import Settings
from app.core.supervisor import Supervised, Supervisor
from app.delivery.dispatcher import Dispatcher
from app.intake.store import close_store
from app.partners.sender import WebhookSender
from app.privacy.service import Retention
from app.routers import meta
from app.updates.poller import IDLE_SECONDS as POLLER_IDLE_SECONDS
from app.updates.poller import Poller


def load_configured_catalogue(settings: Settings) -> Catalogue:
    """The catalogue from IAP_CONFIG_DIR, with the sandbox's addresses filled from the settings."""
    variables = {
        "IAP_SANDBOX_URL": settings.sandbox_url,
        "IAP_SANDBOX_SMTP_PORT": str(settings.sandbox_smtp_port),
    }
    return load_catalogue(settings.config_dir, variables=variables)


@dataclass
class Runtime:
    """What a gateway or worker process runs on: the database, the one HTTP client, the
    adapters, and the background work (delivering, polling back-offices for status, retention,
    the partner event feed over webhooks, and the daily stuck-work summary) under one supervisor."""

    engine: AsyncEngine
    client: httpx.AsyncClient
    adapters: dict[str, Adapter]
    sealer: Sealer
    dispatcher: Dispatcher
    poller: Poller
    retention: Retention
    webhooks: WebhookSender
    supervisor: Supervisor
    stuck: StuckSummaries
    attachments: AttachmentStore  # where sealed photos and documents are kept
    follow_ups: FollowUpSender
    # Telling the citizen (app/alerts): the feed makes alert rows, the sender sends them.
    alert_feed: AlertFeed
    alerts: AlertSender

    async def work(self) -> None:
        """Deliver, poll, apply retention and send webhooks until stop() is called."""
        await self.supervisor.run()

    async def stop(self) -> None:
        self.supervisor.stop()
        self.retention.stop()
        self.stuck.stop()
        await self.follow_ups.stop()
        await self.alert_feed.stop()
        await self.alerts.stop()
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
            yield _compose(settings, catalogue, engine, client, adapters, sealer, guard)
    finally:
        await close_store(engine)
        await engine.dispose()


def _compose(
    settings: Settings,
    catalogue: Catalogue,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    adapters: dict[str, Adapter],
    sealer: Sealer,
    guard: OutboundGuard,
) -> Runtime:
    dispatcher = Dispatcher(
        engine=engine,
        catalogue=catalogue,
        adapters=adapters,
        sealer=sealer,
        settings=settings.dispatch,
    )
    poller = Poller(
        engine=engine, catalogue=catalogue, adapters=adapters, worker_id=dispatcher.worker_id
    )
    attachments = build_store(settings.attachments)
    retention = Retention(
        engine=engine,
        catalogue=catalogue,
        store=attachments,
        interval_seconds=settings.privacy.retention_interval_seconds,
        webhooks=settings.webhooks,
    )
    sender = WebhookSender(
        engine=engine,
        client=client,
        sealer=sealer,
        settings=settings.webhooks,
        worker_id=dispatcher.worker_id,
        shutdown_grace_seconds=settings.dispatch.shutdown_grace_seconds,
    )
    stuck = StuckSummaries(engine=engine, catalogue=catalogue, settings=settings.stuck)
    follow_ups = FollowUpSender(
        engine=engine,
        catalogue=catalogue,
        adapters=adapters,
        sealer=sealer,
        store=attachments,
        settings=settings,
        worker_id=dispatcher.worker_id,
    )
    loops = [
        Supervised("dispatcher", dispatcher.run, settings.dispatch.poll_seconds),
        Supervised("poller", poller.run, POLLER_IDLE_SECONDS),
        Supervised("webhooks", sender.run, settings.webhooks.poll_seconds),
        Supervised("retention", retention.run, settings.privacy.retention_interval_seconds),
        Supervised("stuck-summary", stuck.run, settings.stuck.summary_check_seconds),
        Supervised("follow-ups", follow_ups.run, settings.follow_ups.poll_seconds),
    ]
    alert_sender, alert_feed = _alert_loops(settings, catalogue, engine, sealer, guard, dispatcher)
    if settings.alerts.enabled:
        loops += [
            Supervised("alert-feed", alert_feed.run, settings.alerts.poll_seconds),
            Supervised("alerts", alert_sender.run, settings.alerts.poll_seconds),
        ]
    supervisor = Supervisor(loops, settings.loops)
    return Runtime(
        engine,
        client,
        adapters,
        sealer,
        dispatcher,
        poller,
        retention,
        sender,
        supervisor,
        stuck,
        attachments,
        follow_ups,
        alert_feed=alert_feed,
        alerts=alert_sender,
    )


def _alert_loops(
    settings: Settings,
    catalogue: Catalogue,
    engine: AsyncEngine,
    sealer: Sealer,
    guard: OutboundGuard,
    dispatcher: Dispatcher,
) -> tuple[AlertSender, AlertFeed]:
    """The alert sender and the feed that wakes it (docs/alerts.md)."""
    alert_sender = AlertSender(
        engine=engine,
        catalogue=catalogue,
        sealer=sealer,
        settings=settings,
        outbound=guard,
        worker_id=dispatcher.worker_id,
        shutdown_grace_seconds=settings.dispatch.shutdown_grace_seconds,
    )
    alert_feed = AlertFeed(
        engine=engine,
        catalogue=catalogue,
        sealer=sealer,
        settings=settings.alerts,
        on_new=alert_sender.wake,
    )
    return alert_sender, alert_feed


def build_locator(
    settings: Settings, engine: AsyncEngine, client: httpx.AsyncClient
) -> LocatorChain:
    """Gazetteer first, then the HTTP locator if configured, then the built-in tables (the
    point table only for a point with no postcode)."""
    sources: list[Locator] = [Gazetteer(engine)]
    if settings.locator.http_url:
        sources.append(
            HttpLocator(client, settings.locator.http_url, settings.locator.http_timeout_seconds)
        )
    sources.append(PostcodeTable.from_csv(settings.config_dir / "postcode_areas.csv"))
    sources.append(PointTable.from_csv(settings.config_dir / "point_areas.csv"))
    return LocatorChain(sources)


def health_app(running: Runtime) -> FastAPI:
    """What `iap worker --health-port` serves: /healthz and /readyz (the database and the
    loops, as the API's own /readyz reports them), for the orchestrator's probes."""
    app = FastAPI(title="IAP worker health", docs_url=None, redoc_url=None, openapi_url=None)
    install_problem_handlers(app)
    app.include_router(meta.router)
    app.state.readiness = meta.Readiness(running.engine, running.supervisor)
    return app
