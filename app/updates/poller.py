"""Polling back-offices that do not push: ask each organisation for changes on its schedule.

One `poll_state` row per polling organisation holds its cursor and when it is next due; a
worker takes it with a short lease, so however many workers run, each organisation is asked by
one at a time. Every update goes through record_update, which records each one once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from app.adapters.base import Adapter, DeliveryError, PollResult, Tracked
from app.catalogue.catalogue import Catalogue, Organisation
from app.catalogue.status import FINAL
from app.core.db import is_postgres, reading, writing
from app.core.models import (
    PollState,
    dispatch_table,
    enquiry_table,
    fetch_all,
    poll_state_table,
    utcnow,
)
from app.core.reference import display
from app.core.supervisor import beat
from app.core.vocabulary import OutboxState, ReceivedVia
from app.updates.inbound import forget_old_messages
from app.updates.recording import UnknownCase, record_update, vocabulary

log = structlog.get_logger()
d = dispatch_table.c
p = poll_state_table.c
# Cases are followed this long after delivery; a back-office silent for longer is left be.
TRACK_FOR = timedelta(days=90)
TRACK_AT_ONCE = 500
IDLE_SECONDS = 5.0
_FORGET_MESSAGES_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class PollStatus:
    next_poll_at: datetime
    last_error: str | None


async def poll_states(engine: AsyncEngine) -> dict[str, PollStatus]:
    """Where polling each organisation stands, for those that are polled."""
    async with reading(engine) as conn:
        states = await fetch_all(conn, PollState, select(PollState))
    return {
        state.organisation_id: PollStatus(state.next_poll_at, state.last_error) for state in states
    }


class Poller:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        catalogue: Catalogue,
        adapters: dict[str, Adapter],
        worker_id: str,
    ) -> None:
        self.engine = engine
        self.catalogue = catalogue
        self.adapters = adapters
        self.worker_id = worker_id
        self._stopping = asyncio.Event()
        self.polling = {
            org_id: adapter
            for org_id, adapter in adapters.items()
            if adapter.config.poll_seconds is not None
        }

    async def run(self) -> None:
        """Poll whichever organisation is due, until stop() is called."""
        if not self.polling:
            return
        await self._ensure_rows()
        while not self._stopping.is_set():
            try:
                for organisation_id in await self._take_due():
                    await self.poll(organisation_id)
                await forget_old_messages(self.engine, older_than=_FORGET_MESSAGES_AFTER)
                beat()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("poller.failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), await self._seconds_until_due())

    async def stop(self) -> None:
        self._stopping.set()

    async def poll(self, organisation_id: str) -> int:
        """Ask one organisation for changes now; how many new updates were recorded."""
        adapter = self.polling[organisation_id]
        organisation = self.catalogue.organisations[organisation_id]
        async with reading(self.engine) as conn:
            cursor = await conn.scalar(
                select(col(PollState.cursor)).where(p.organisation_id == organisation_id)
            )
        tracked = await self._tracked(organisation_id)
        try:
            result = await adapter.poll(tracked, cursor=cursor) if tracked else PollResult([])
        except DeliveryError as exc:
            log.warning("poller.poll_failed", organisation=organisation_id, error=str(exc))
            retry_after = getattr(exc, "retry_after", None)
            await self._finish(organisation_id, cursor, error=str(exc), retry_after=retry_after)
            return 0
        except Exception as exc:
            # A bug in an adapter must not stop polling the others; it shows in the logs.
            log.exception("poller.adapter_crashed", organisation=organisation_id)
            await self._finish(
                organisation_id, cursor, error=f"internal error: {type(exc).__name__}"
            )
            return 0
        await self._save_references(organisation_id, result.references)
        recorded = await self._record(organisation, adapter, result)
        await self._finish(organisation_id, result.cursor or cursor, error=None)
        return recorded

    async def _record(
        self, organisation: Organisation, adapter: Adapter, result: PollResult
    ) -> int:
        words = vocabulary(organisation, adapter)
        new = 0
        for remote in sorted(result.updates, key=lambda u: u.updated_at):
            try:
                recorded = await record_update(
                    engine=self.engine,
                    catalogue=self.catalogue,
                    organisation=organisation,
                    words=words,
                    remote=remote,
                    via=ReceivedVia.poll,
                )
            except UnknownCase:
                continue  # a case someone else raised with them, or one we no longer follow
            new += recorded.new
        if new:
            log.info("poller.updates", organisation=organisation.id, new=new)
        return new

    async def _tracked(self, organisation_id: str) -> list[Tracked]:
        since = utcnow() - TRACK_FOR
        query = (
            select(d.id, enquiry_table.c.reference, d.remote_reference, d.delivered_at)
            .join_from(dispatch_table, enquiry_table, enquiry_table.c.id == d.enquiry_id)
            .where(
                d.organisation_id == organisation_id,
                d.state == OutboxState.delivered,
                d.remote_reference.is_not(None),
                d.delivered_at >= since,
                or_(d.remote_status.is_(None), d.remote_status.not_in(list(FINAL))),
            )
            .order_by(d.delivered_at.desc())
            .limit(TRACK_AT_ONCE)
        )
        async with reading(self.engine) as conn:
            rows = (await conn.execute(query)).all()
        return [Tracked(row[0], display(row[1]), row[2], row[3]) for row in rows]

    async def _save_references(
        self, organisation_id: str, references: dict[uuid.UUID, str]
    ) -> None:
        if not references:
            return
        async with writing(self.engine) as conn:
            for dispatch_id, remote_reference in references.items():
                await conn.execute(
                    update(dispatch_table)
                    .where(d.id == dispatch_id, d.organisation_id == organisation_id)
                    .values(remote_reference=remote_reference, updated_at=utcnow())
                )

    async def _ensure_rows(self) -> None:
        now = utcnow()
        dialect = postgresql if is_postgres(self.engine) else sqlite
        async with writing(self.engine) as conn:
            for organisation_id in self.polling:
                await conn.execute(
                    dialect.insert(poll_state_table)
                    .values(organisation_id=organisation_id, next_poll_at=now, updated_at=now)
                    .on_conflict_do_nothing()
                )

    async def _take_due(self) -> list[str]:
        """Lease every organisation that is due and not being polled by another worker."""
        now = utcnow()
        lease = now + timedelta(seconds=60)
        taken = (
            update(poll_state_table)
            .where(
                p.organisation_id.in_(list(self.polling)),
                p.next_poll_at <= now,
                or_(p.lease_until.is_(None), p.lease_until < now),
            )
            .values(lease_owner=self.worker_id, lease_until=lease, updated_at=now)
            .returning(p.organisation_id)
        )
        async with writing(self.engine) as conn:
            return [row[0] for row in (await conn.execute(taken)).all()]

    async def _finish(
        self,
        organisation_id: str,
        cursor: str | None,
        *,
        error: str | None,
        retry_after: float | None = None,
    ) -> None:
        now = utcnow()
        every = self.polling[organisation_id].config.poll_seconds or IDLE_SECONDS
        async with writing(self.engine) as conn:
            await conn.execute(
                update(poll_state_table)
                # Ours, or nobody's when asked to poll now; never another worker's lease.
                .where(
                    p.organisation_id == organisation_id,
                    or_(p.lease_owner == self.worker_id, p.lease_owner.is_(None)),
                )
                .values(
                    cursor=cursor,
                    last_error=error,
                    next_poll_at=now + timedelta(seconds=max(every, retry_after or 0.0)),
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                )
            )

    async def _seconds_until_due(self) -> float:
        async with reading(self.engine) as conn:
            due: datetime | None = await conn.scalar(
                select(p.next_poll_at)
                .where(p.organisation_id.in_(list(self.polling)))
                .order_by(p.next_poll_at)
                .limit(1)
            )
        if due is None:
            return IDLE_SECONDS
        return min(IDLE_SECONDS, max(0.05, (due - utcnow()).total_seconds()))
