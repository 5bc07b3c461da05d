"""Stuck work: deliveries that need a person, and the daily summary of them sent to
subscribers so that no failure goes silent (FixMyStreet issue #2091).

Each delivery is listed once, under the first kind that applies (app.core.vocabulary.StuckKind):
dead and not handled; still waiting to be delivered longer than IAP_STUCK__PENDING_MINUTES
(counted from when it was made, or last redriven); not finished within its service's
`resolve_days`; no word back within its service's `acknowledge_hours`; delivered and silent for
longer than its organisation's `silence_hours`. Targets count from when the enquiry was
accepted. The triage desk's parts are the triage queue's to show, not this report's, once
delivered; parts closed by a person are over.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.casework.schemas_stuck import StuckItem, StuckReport
from app.catalogue.catalogue import Catalogue, Organisation
from app.catalogue.status import FINAL
from app.clients.service import Caller
from app.core import reference as references
from app.core.db import is_postgres, reading, writing
from app.core.models import dispatch_table, enquiry_table, event_table, utcnow
from app.core.settings import StuckSettings
from app.core.supervisor import beat
from app.core.vocabulary import EventType, OutboxState, StuckKind

log = structlog.get_logger()
d = dispatch_table.c
e = enquiry_table.c
_WAITING = (OutboxState.pending, OutboxState.delivering)
# The ids of the daily summaries are made from the day, so that however many workers write
# one, the database keeps the first (insert-once on the primary key).
_SUMMARY_NAMESPACE = uuid.UUID("1b1f3c5e-8a43-4f6e-9d2b-0c7a5e9f4d11")


async def stuck_work(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    settings: StuckSettings,
    caller: Caller | None,
    now: datetime | None = None,
) -> StuckReport:
    """What is stuck now; a partner's staff see their own organisation's only (None: all)."""
    now = now or utcnow()
    pending_since = now - timedelta(minutes=settings.pending_minutes)
    delivered = and_(
        d.state == OutboxState.delivered,
        d.closure.is_(None),
        d.organisation_id != catalogue.triage.id,
        or_(d.remote_status.is_(None), d.remote_status.not_in(list(FINAL))),
    )
    query = (
        select(
            d.id,
            d.organisation_id,
            d.state,
            d.remote_status,
            d.created_at,
            d.updated_at,
            d.redriven_at,
            d.delivered_at,
            e.reference,
            e.service_code,
            e.created_at.label("accepted_at"),
        )
        .join(enquiry_table, e.id == d.enquiry_id)
        .where(
            or_(
                d.state == OutboxState.dead,
                and_(d.state.in_(_WAITING), d.created_at < pending_since),
                delivered,
            )
        )
    )
    if caller is not None and caller.organisation_id is not None:
        query = query.where(d.organisation_id == caller.organisation_id)
    async with reading(engine) as conn:
        rows = list((await conn.execute(query)).mappings())
    items = [item for row in rows if (item := _classify(row, catalogue, settings, now)) is not None]
    items.sort(key=lambda item: (-item.over_seconds, str(item.dispatch_id)))
    return StuckReport(at=now, counts=dict(Counter(i.kind for i in items)), items=items)


def _clocks(
    row: Any, catalogue: Catalogue, settings: StuckSettings
) -> Iterator[tuple[StuckKind, datetime, timedelta]]:
    """Each kind that could apply to this row, with its clock's start and its threshold, in
    the order a row is listed under."""
    if row["state"] == OutboxState.dead:
        yield StuckKind.dead, row["updated_at"], timedelta(0)
        return
    if row["state"] in _WAITING:
        started = row["redriven_at"] or row["created_at"]
        yield StuckKind.pending, started, timedelta(minutes=settings.pending_minutes)
        return
    service = catalogue.services.get(row["service_code"])
    targets = service.targets if service else None
    if targets is not None and targets.resolve_days is not None:
        yield StuckKind.past_resolve_target, row["accepted_at"], timedelta(targets.resolve_days)
    if row["remote_status"] is not None:
        return
    if targets is not None and targets.acknowledge_hours is not None:
        late = timedelta(hours=targets.acknowledge_hours)
        yield StuckKind.past_acknowledge_target, row["accepted_at"], late
    organisation: Organisation | None = catalogue.organisations.get(row["organisation_id"])
    if organisation is not None:
        silence = timedelta(hours=organisation.silence_hours)
        yield StuckKind.unacknowledged, row["delivered_at"] or row["updated_at"], silence


def _classify(
    row: Any, catalogue: Catalogue, settings: StuckSettings, now: datetime
) -> StuckItem | None:
    for kind, since, threshold in _clocks(row, catalogue, settings):
        due = since + threshold
        if kind is StuckKind.dead or due < now:
            organisation = catalogue.organisations.get(row["organisation_id"])
            return StuckItem(
                dispatch_id=row["id"],
                reference=references.display(row["reference"]),
                service_code=row["service_code"],
                organisation_id=row["organisation_id"],
                organisation_name=organisation.name if organisation else row["organisation_id"],
                kind=kind,
                state=row["state"],
                remote_status=row["remote_status"],
                since=since,
                due=due,
                over_seconds=(now - due).total_seconds(),
            )
    return None


# --- the daily summary -----------------------------------------------------------------------


def summary_id(day: str, organisation_id: str | None) -> uuid.UUID:
    """The one event id of a day's summary, whole (None) or for one organisation."""
    return uuid.uuid5(_SUMMARY_NAMESPACE, f"{EventType.work_stuck_summary}/{day}/{organisation_id}")


def _describe(counts: Counter[StuckKind]) -> str:
    total = sum(counts.values())
    if not total:
        return "nothing is stuck"
    parts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items()))
    return f"{total} stuck: {parts}"


async def write_daily_summary(
    *,
    engine: AsyncEngine,
    catalogue: Catalogue,
    settings: StuckSettings,
    now: datetime | None = None,
) -> int:
    """Today's `work.stuck_summary` events, once the day's summary hour has come: one of the
    whole gateway (counts by kind and by organisation) and one per organisation (its own
    counts), never a reference or anyone's details. Written once a day however many workers
    try; how many this call wrote."""
    now = now or utcnow()
    if now.hour < settings.summary_hour:
        return 0
    day = now.date().isoformat()
    report = await stuck_work(
        engine=engine, catalogue=catalogue, settings=settings, caller=None, now=now
    )
    by_organisation: dict[str, Counter[StuckKind]] = {o: Counter() for o in catalogue.organisations}
    for item in report.items:
        by_organisation.setdefault(item.organisation_id, Counter())[item.kind] += 1
    whole: Counter[StuckKind] = Counter(i.kind for i in report.items)
    events = [
        _summary_event(
            day,
            None,
            whole,
            now,
            by_organisation={o: dict(c) for o, c in by_organisation.items() if c},
        )
    ]
    events += [_summary_event(day, o, c, now) for o, c in sorted(by_organisation.items())]
    dialect = postgresql if is_postgres(engine) else sqlite
    written = 0
    async with writing(engine) as conn:
        for event in events:
            inserted = await conn.execute(
                dialect.insert(event_table)
                .values(event)
                .on_conflict_do_nothing(index_elements=["id"])
            )
            written += int(inserted.rowcount or 0)
    if written:
        log.info("stuck.summary_written", day=day, stuck=sum(whole.values()))
    return written


def _summary_event(
    day: str,
    organisation_id: str | None,
    counts: Counter[StuckKind],
    now: datetime,
    *,
    by_organisation: dict[str, dict[StuckKind, int]] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "day": day,
        "total": sum(counts.values()),
        "by_kind": {kind.value: counts.get(kind, 0) for kind in StuckKind},
    }
    if by_organisation is not None:
        data["by_organisation"] = {
            o: {k.value: n for k, n in c.items()} for o, c in sorted(by_organisation.items())
        }
    return {
        "id": summary_id(day, organisation_id),
        "enquiry_id": None,
        "organisation_id": organisation_id,
        "type": EventType.work_stuck_summary,
        "detail": f"{day}: {_describe(counts)}",
        "data": data,
        "created_at": now,
    }


class StuckSummaries:
    """The worker's loop: checks every summary_check_seconds whether today's summary is due
    and not yet written, and writes it."""

    def __init__(
        self, *, engine: AsyncEngine, catalogue: Catalogue, settings: StuckSettings
    ) -> None:
        self.engine = engine
        self.catalogue = catalogue
        self.settings = settings
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await write_daily_summary(
                    engine=self.engine, catalogue=self.catalogue, settings=self.settings
                )
                beat()
            except (SQLAlchemyError, OSError):
                # The database away: tried again at the next check (anything else is a bug,
                # which the supervisor logs and restarts the loop after).
                log.exception("stuck.summary_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.summary_check_seconds)

    def stop(self) -> None:
        self._stopping.set()
