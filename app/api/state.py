"""What the running application holds, built once by the lifespan and read by routers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.base import Adapter
from app.api.ratelimit import RateLimiter
from app.attachments.store import AttachmentStore
from app.catalogue.catalogue import Catalogue
from app.core.crypto import Sealer
from app.core.outbound import OutboundGuard
from app.core.settings import Settings
from app.intake.service import IntakeContext


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    catalogue: Catalogue
    intake: IntakeContext
    adapters: dict[str, Adapter]
    sealer: Sealer
    limiter: RateLimiter
    outbound: OutboundGuard
    attachments: AttachmentStore  # sealed photos and documents (app/attachments)
    # New follow-ups are waiting (app.conversation): this process's sender claims them now.
    wake_follow_ups: Callable[[], None] = field(default=lambda: None)
    # The one shared outbound client (guarded in production): Open311 media_url fetches.
    http: httpx.AsyncClient | None = None


async def get_state(request: Request) -> AppState:
    """The application state (a FastAPI dependency)."""
    state: AppState = request.app.state.iap
    return state
