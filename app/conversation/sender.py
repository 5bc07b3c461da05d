"""The follow-up sender: carries information, withdrawals and reopenings to the back-offices.

The `follow_up` outbox (app.core.outbox, as the dispatcher's and the webhook sender's): each
row is one message for one organisation's part, sent through that organisation's adapter
(`Adapter.follow_up`) with the enquiry as the organisation may receive it (the dispatcher's
own snapshot_for), the part's back-office reference, and the message's files opened from the
attachment store with their signed URLs. Every claim is an attempt; a repeat carries the same
follow_up_id, which the back-office dedupes on. A row whose part ended meanwhile, or whose
enquiry's personal data was erased, is cancelled, not sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.base import (
    Adapter,
    AttachmentFile,
    Fence,
    FollowUp,
    LeaseLost,
    PermanentError,
    RetryableError,
)
from app.attachments.service import AttachmentDamaged, filename, open_file, signed_url
from app.attachments.store import AttachmentMissing, AttachmentStore
from app.catalogue.catalogue import Catalogue
from app.catalogue.status import FINAL, Status
from app.core import outbox
from app.core.crypto import Sealer
from app.core.db import FOLLOW_UP_CHANNEL, reading, writing
from app.core.models import (
    Attachment,
    attachment_table,
    dispatch_table,
    event_table,
    fetch_all,
    follow_up_table,
    message_table,
    utcnow,
)
from app.core.outbox import LeaseFence, LeaseQueue, finished
from app.core.settings import FollowUpSettings, Settings
from app.core.vocabulary import EventType, MessageKind, OutboxState, Outcome
from app.delivery.dispatcher import CalledOff, snapshot_for

log = structlog.get_logger()
f = follow_up_table.c
d = dispatch_table.c
# How long a follow-up call may take past the adapter's timeout before its lease must be
# extended: the back-office settles what it was sent.
_SETTLE_SECONDS = 5.0


@dataclass(frozen=True, kw_only=True)
class Claim(outbox.Claim):
    message_id: uuid.UUID
    dispatch_id: uuid.UUID
    enquiry_id: uuid.UUID
    organisation_id: str
    kind: str
    lease_until: datetime


@dataclass(frozen=True, kw_only=True)
class Result(outbox.Result):
    remote_reference: str | None = None
    case_reference: str | None = None  # the part's case moved (a reopening made anew)


class FollowUpSender(LeaseQueue[Claim]):
    """Sends follow-ups through their organisations' adapters until stopped."""

    table = follow_up_table
    name = "follow_ups"
    channel = FOLLOW_UP_CHANNEL
    claim_columns = (f.message_id, f.dispatch_id, f.enquiry_id, f.organisation_id, f.kind)
    settings: FollowUpSettings

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        catalogue: Catalogue,
        adapters: dict[str, Adapter],
        sealer: Sealer,
        store: AttachmentStore,
        settings: Settings,
        worker_id: str | None = None,
    ) -> None:
        super().__init__(engine=engine, settings=settings.follow_ups, worker_id=worker_id)
        self.catalogue = catalogue
        self.adapters = adapters
        self.sealer = sealer
        self.store = store
        self.app_settings = settings
        self.shutdown_grace_seconds = settings.dispatch.shutdown_grace_seconds

    def _grace_seconds(self) -> float:
        return self.shutdown_grace_seconds

    async def _claimed(self, rows: Sequence[Row[Any]], lease_until: datetime) -> list[Claim]:
        return [Claim(**row._asdict(), lease_until=lease_until) for row in rows]

    async def _deliver(self, claim: Claim) -> None:
        attempt = claim.claims  # one whose worker died mid-call counts too
        outcome = await self._attempt(claim, attempt)
        if outcome.kind is Outcome.lease_lost:
            log.warning("follow_up.lease_lost", follow_up=str(claim.row_id))
            return
        if (gave_up := self._gave_up(outcome, attempt)) is not None:
            outcome = Result(Outcome.dead, gave_up)
        await self._record(claim, attempt=attempt, outcome=outcome)

    async def _attempt(self, claim: Claim, attempt: int) -> Result:
        adapter = self.adapters.get(claim.organisation_id)
        if adapter is None:
            return Result(Outcome.dead, f"organisation {claim.organisation_id} is not configured")
        room = adapter.timeout + _SETTLE_SECONDS
        fence = LeaseFence(self, claim, lease_until=claim.lease_until, room_seconds=room)
        try:
            follow_up = await self._follow_up(claim, attempt, fence=fence.check)
            if follow_up is None:
                return Result(Outcome.cancelled, "called off: its part was over")
            await fence.check()
            receipt = await adapter.follow_up(follow_up)
        except LeaseLost:
            return Result(Outcome.lease_lost)
        except CalledOff as exc:
            return Result(Outcome.cancelled, str(exc))
        except RetryableError as exc:
            return Result(Outcome.retry, str(exc), retry_after=exc.retry_after)
        except PermanentError as exc:
            return Result(Outcome.dead, str(exc))
        except (AttachmentMissing, AttachmentDamaged) as exc:
            # The store lost a file, or holds another: the operator's to restore, not retried.
            return Result(Outcome.dead, f"a file of it cannot be opened ({type(exc).__name__})")
        except Exception as exc:
            # A bug in an adapter must not stop the worker; the repeat carries the same key.
            log.exception("follow_up.adapter_crashed", follow_up=str(claim.row_id))
            return Result(Outcome.retry, f"internal error in adapter: {type(exc).__name__}")
        return Result(
            Outcome.delivered,
            remote_reference=receipt.remote_reference,
            case_reference=receipt.case_reference,
        )

    async def _follow_up(self, claim: Claim, attempt: int, *, fence: Fence) -> FollowUp | None:
        """What this attempt sends; None once the part ended (CalledOff once erased)."""
        organisation = self.catalogue.organisations[claim.organisation_id]
        async with reading(self.engine, one_snapshot=True) as conn:
            part = (
                await conn.execute(select(dispatch_table).where(d.id == claim.dispatch_id))
            ).first()
            if part is None or _ended(part):
                return None
            snapshot = await snapshot_for(
                conn,
                self.catalogue,
                self.sealer,
                enquiry_id=claim.enquiry_id,
                organisation=organisation,
                withdrawn_too=True,
            )
            message = (
                await conn.execute(
                    select(message_table).where(message_table.c.id == claim.message_id)
                )
            ).one()
            files = await self._files(conn, claim)
        return FollowUp(
            follow_up_id=claim.row_id,
            attempt=attempt,
            kind=MessageKind(claim.kind),
            organisation=organisation,
            dispatch_id=claim.dispatch_id,
            remote_reference=part.remote_reference or "",
            enquiry=snapshot,
            text=message.text,
            attachments=files,
            created_at=message.created_at,
            by_citizen=message.actor_id is None,
            fence=fence,
        )

    async def _files(self, conn: AsyncConnection, claim: Claim) -> tuple[AttachmentFile, ...]:
        """The message's files, opened from the store, named by their place in the enquiry."""
        a = attachment_table.c
        rows = await fetch_all(
            conn,
            Attachment,
            select(Attachment).where(a.enquiry_id == claim.enquiry_id).order_by(a.created_at, a.id),
        )
        now = utcnow()
        files = []
        for number, row in enumerate(rows, start=1):
            if row.message_id != claim.message_id:
                continue
            files.append(
                AttachmentFile(
                    attachment_id=row.id,
                    filename=filename(row, number),
                    content_type=row.content_type,
                    content=await open_file(self.store, self.sealer, row),
                    url=signed_url(self.app_settings, self.sealer, row.id, now=now),
                )
            )
        return tuple(files)

    async def _record(self, claim: Claim, *, attempt: int, outcome: Result) -> None:
        now = utcnow()
        values = finished(
            outcome.kind,
            attempt=attempt,
            now=now,
            error=outcome.error,
            retry_in=lambda: self._backoff(attempt, outcome.retry_after),
        )
        if outcome.kind is Outcome.delivered:
            values["remote_reference"] = outcome.remote_reference
        async with writing(self.engine) as conn:
            if not await self._settle(conn, claim, values):
                log.warning("follow_up.lease_lost", follow_up=str(claim.row_id))
                return
            if outcome.case_reference:
                await conn.execute(
                    update(dispatch_table)
                    .where(d.id == claim.dispatch_id)
                    .values(remote_reference=outcome.case_reference, updated_at=now)
                )
            await self._timeline(conn, claim, outcome, now)
        log.info(
            f"follow_up.{outcome.kind}",
            follow_up=str(claim.row_id),
            organisation=claim.organisation_id,
            kind=claim.kind,
            attempt=attempt,
            error=outcome.error,
        )

    async def _timeline(
        self, conn: AsyncConnection, claim: Claim, outcome: Result, now: datetime
    ) -> None:
        event_type = _EVENTS.get(outcome.kind)
        if event_type is None:
            return  # a retry is the sender's business, shown on the part's follow-ups
        organisation = self.catalogue.organisations.get(claim.organisation_id)
        name = organisation.name if organisation else claim.organisation_id
        what = _WHAT[MessageKind(claim.kind)]
        if outcome.kind is Outcome.delivered:
            remote = f" as {outcome.remote_reference}" if outcome.remote_reference else ""
            detail = f"{name} was given {what}{remote}"
        elif outcome.kind is Outcome.dead:
            detail = f"{name} could not be given {what}: {outcome.error}"
        else:
            detail = f"{what} was not sent to {name}: {outcome.error}"
        await conn.execute(
            event_table.insert(),
            {
                "id": uuid.uuid4(),
                "enquiry_id": claim.enquiry_id,
                "dispatch_id": claim.dispatch_id,
                "organisation_id": claim.organisation_id,
                "type": event_type,
                "detail": detail,
                "created_at": now,
            },
        )


_EVENTS = {
    Outcome.delivered: EventType.follow_up_delivered,
    Outcome.dead: EventType.follow_up_dead,
    Outcome.cancelled: EventType.follow_up_cancelled,
}
_WHAT = {
    MessageKind.information: "the information added",
    MessageKind.withdrawal: "the withdrawal",
    MessageKind.reopening: "the reopening",
}


def _ended(part: Row[Any]) -> bool:
    """The part is over here or at its back-office: nothing more is sent to it."""
    if part.state != OutboxState.delivered or part.closure is not None:
        return True
    return part.remote_status is not None and Status(part.remote_status) in FINAL
