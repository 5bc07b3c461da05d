"""The one way a route gets what it uses: an `Annotated` dependency per service and per caller.

A route names what it needs (`engine: Engine`, `caller: Submitter`) and never reaches into the
application state itself; the state is built once by the lifespan (app.api.state).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends
from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.base import Adapter
from app.api.auth import optional_caller, require
from app.api.state import AppState, get_state
from app.attachments.store import AttachmentStore
from app.casework.triage import TriageDesk
from app.catalogue import catalogue
from app.clients.service import Caller, Scope
from app.core import crypto
from app.core.models import utcnow
from app.core.outbound import OutboundGuard
from app.core.settings import StuckSettings, WebhookSettings
from app.intake.service import IntakeContext
from app.updates.inbound import Inbox as InboxService

State = Annotated[AppState, Depends(get_state)]


async def _engine(state: State) -> AsyncEngine:
    return state.engine


async def _catalogue(state: State) -> catalogue.Catalogue:
    return state.catalogue


async def _sealer(state: State) -> crypto.Sealer:
    return state.sealer


async def _adapters(state: State) -> dict[str, Adapter]:
    return state.adapters


async def _outbound(state: State) -> OutboundGuard:
    return state.outbound


async def _attachments(state: State) -> AttachmentStore:
    return state.attachments


async def _intake(state: State) -> IntakeContext:
    return state.intake


async def _inbox(state: State) -> InboxService:
    return InboxService(engine=state.engine, catalogue=state.catalogue, adapters=state.adapters)


async def _triage_desk(state: State) -> TriageDesk:
    return TriageDesk(intake=state.intake, claim_seconds=state.settings.triage.claim_seconds)


async def current_time() -> datetime:
    """Now, for reports that measure how long things have waited (tests override it: a
    controlled clock, never a query parameter a client could send)."""
    return utcnow()


async def _stuck_settings(state: State) -> StuckSettings:
    return state.settings.stuck


async def _webhook_settings(state: State) -> WebhookSettings:
    return state.settings.webhooks


Engine = Annotated[AsyncEngine, Depends(_engine)]
Now = Annotated[datetime, Depends(current_time)]
Stuck = Annotated[StuckSettings, Depends(_stuck_settings)]
Webhooks = Annotated[WebhookSettings, Depends(_webhook_settings)]
Catalogue = Annotated[catalogue.Catalogue, Depends(_catalogue)]
Sealer = Annotated[crypto.Sealer, Depends(_sealer)]
Adapters = Annotated[dict[str, Adapter], Depends(_adapters)]
Outbound = Annotated[OutboundGuard, Depends(_outbound)]
Intake = Annotated[IntakeContext, Depends(_intake)]
Attachments = Annotated[AttachmentStore, Depends(_attachments)]
Inbox = Annotated[InboxService, Depends(_inbox)]
Desk = Annotated[TriageDesk, Depends(_triage_desk)]

# Who calls: 401 without a valid key, 403 without the scope (admin holds every scope).
OptionalCaller = Annotated[Caller | None, Depends(optional_caller)]
Submitter = Annotated[Caller, Depends(require(Scope.enquiries_submit))]
READERS = (Scope.enquiries_read, Scope.enquiries_read_all)
Reader = Annotated[Caller, Depends(require(*READERS))]
StaffReader = Annotated[Caller, Depends(require(Scope.enquiries_read_all))]
PrivacyOfficer = Annotated[Caller, Depends(require(Scope.privacy))]
WebhookManager = Annotated[Caller, Depends(require(Scope.webhooks_manage))]
TriageAgent = Annotated[Caller, Depends(require(Scope.triage))]
DeliveryManager = Annotated[Caller, Depends(require(Scope.deliveries_manage))]
WebhookDeliveryManager = Annotated[
    Caller, Depends(require(Scope.webhooks_manage, Scope.deliveries_manage))
]
PartUpdater = Annotated[Caller, Depends(require(Scope.parts_update))]
Admin = Annotated[Caller, Depends(require(Scope.admin))]
