"""What the running application holds, built once by the lifespan and read by routers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.base import Adapter
from app.catalogue import Catalogue
from app.crypto import Sealer
from app.outbound import OutboundGuard
from app.ratelimit import RateLimiter
from app.services.intake import IntakeContext
from app.settings import Settings


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


async def get_state(request: Request) -> AppState:
    """The application state (a FastAPI dependency)."""
    state: AppState = request.app.state.iap
    return state
