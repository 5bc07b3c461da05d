"""The alert feed: timeline events worth telling the citizen become `alert` outbox rows.

Each scan reads the event table past the `feed_cursor` row named "alerts", less an overlap (an
event committed late with an earlier time is still found), a page at a time. What it makes:

- `enquiry.received` → the acknowledgement, with the reference and the tracking link;
- `enquiry.<status>` for a status in the service's `tell` list (services.yaml) → a status alert;
- `status.updated` with `information_requested` → a back-office's question (its text is the
  update's description).

Only for a citizen who agreed (consent.send_updates), whose preferred contact is an email or
a phone with that address given, whose enquiry's alerts were not stopped and whose data was
not removed. The alert table's unique (event_id, channel) makes a re-read, or two workers
feeding at once, add nothing: no change is told twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.catalogue.catalogue import Catalogue
from app.catalogue.status import Status
from app.core.crypto import SealedDataUnreadable, Sealer
from app.core.db import is_postgres, reading, writing
from app.core.models import (
    alert_table,
    enquiry_table,
    event_table,
    feed_cursor_table,
    status_update_table,
    utcnow,
)
from app.core.outbox import new_row
from app.core.settings import AlertSettings
from app.core.supervisor import beat
from app.core.vocabulary import AlertChannel, AlertKind, EventType

log = structlog.get_logger()
FEED_NAME = "alerts"
FEED_PAGE = 500
# Re-read this far before the cursor: an event whose transaction committed after a later one's.
OVERLAP = timedelta(seconds=30)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# The languages a message is written in (app.alerts.templates); any other reads English.
LANGUAGES = ("en", "cy")
v = event_table.c
e = enquiry_table.c
c = feed_cursor_table.c
# Every event of the enquiry's status changing (enquiry.resolved, ...).
_STATUS_EVENTS = [EventType(f"enquiry.{s}") for s in Status if f"enquiry.{s}" in set(EventType)]


@dataclass(frozen=True)
class Contact:
    """How this citizen is told: the channel and the language of the message."""

    channel: AlertChannel
    language: str


def contact_of(citizen: dict[str, Any] | None, consent: dict[str, Any] | None) -> Contact | None:
    """The citizen's preferred contact if they agreed to be told and gave its address."""
    if not citizen or not (consent or {}).get("send_updates"):
        return None
    preferred = citizen.get("preferred_contact")
    if preferred == "email" and citizen.get("email"):
        channel = AlertChannel.email
    elif preferred == "phone" and citizen.get("phone"):
        channel = AlertChannel.sms
    else:
        return None
    return Contact(channel, language_of(citizen.get("language")))


def language_of(tag: str | None) -> str:
    """The template language for a BCP 47 tag: its primary subtag if shipped, else English."""
    primary = (tag or "en").split("-", 1)[0].lower()
    return primary if primary in LANGUAGES else "en"


async def feed(engine: AsyncEngine, catalogue: Catalogue, sealer: Sealer) -> int:
    """Make the alerts of events not yet fed; how many were made."""
    since = await _fed_until(engine) - OVERLAP
    made, after = 0, None
    while True:
        async with reading(engine) as conn:
            events = await _events_after(conn, since, after)
            rows = await _alerts_for(conn, events, catalogue, sealer)
        made += await _insert(engine, rows)
        if events:
            after = (events[-1]["created_at"], events[-1]["id"])
        if len(events) < FEED_PAGE:
            break
    if after is not None:
        await _advance(engine, after[0])
    return made


async def _fed_until(engine: AsyncEngine) -> datetime:
    async with reading(engine) as conn:
        fed = await conn.scalar(select(c.fed_until).where(c.name == FEED_NAME))
    # Never fed: from the start. Enquiries from before alerts existed have no send_updates
    # consent, so nothing is sent for them.
    return fed if fed is not None else _EPOCH


async def _events_after(
    conn: AsyncConnection, since: datetime, after: tuple[datetime, uuid.UUID] | None
) -> list[Any]:
    told = or_(
        v.type.in_([EventType.enquiry_received, *_STATUS_EVENTS]),
        and_(v.type == EventType.status_updated, v.status == Status.information_requested),
    )
    query = (
        select(
            v.id,
            v.enquiry_id,
            v.type,
            v.dispatch_id,
            v.created_at,
            e.service_code,
            e.consent,
            e.citizen_sealed,
        )
        .join(enquiry_table, e.id == v.enquiry_id)
        .where(v.created_at > since, told)
        .where(e.alerts_stopped_at.is_(None), e.anonymised_at.is_(None))
        # Only citizens who agreed to be told: the others' details are never opened here.
        .where(e.consent["send_updates"].as_boolean().is_(True), e.citizen_sealed.is_not(None))
        .order_by(v.created_at, v.id)
        .limit(FEED_PAGE)
    )
    if after is not None:
        query = query.where(tuple_(v.created_at, v.id) > tuple_(*after))
    return list((await conn.execute(query)).mappings())


async def _alerts_for(
    conn: AsyncConnection, events: Sequence[Any], catalogue: Catalogue, sealer: Sealer
) -> list[dict[str, Any]]:
    if not events:
        return []
    now = utcnow()
    # Read again within the overlap: made already, so their citizens need not be opened again.
    made = await _made(conn, [event["id"] for event in events])
    told_last = await _told_last(conn, {event["enquiry_id"] for event in events})
    rows = []
    for event in events:
        if event["id"] in made:
            if (was := made[event["id"]]) is not None:
                told_last[event["enquiry_id"]] = was
            continue
        told = _what_is_told(event, catalogue)
        if told is None:
            continue
        kind, status = told
        if kind is AlertKind.status and status is not None:
            # The same status twice in a row (a withdrawal recorded, then each part closed as
            # withdrawn) is told once; resolved, reopened, resolved is told three times.
            if told_last.get(event["enquiry_id"]) == status:
                continue
            told_last[event["enquiry_id"]] = status
        contact = _contact(event, sealer)
        if contact is None:
            continue
        rows.append(
            new_row(
                now=now,
                enquiry_id=event["enquiry_id"],
                event_id=event["id"],
                kind=kind,
                channel=contact.channel,
                language=contact.language,
                status=status,
            )
        )
    return rows


async def _made(conn: AsyncConnection, event_ids: list[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """The events among these with an alert made, and the status each told (None: not a
    status alert)."""
    a = alert_table.c
    rows = await conn.execute(select(a.event_id, a.kind, a.status).where(a.event_id.in_(event_ids)))
    return {row.event_id: row.status if row.kind == AlertKind.status else None for row in rows}


async def _told_last(conn: AsyncConnection, enquiry_ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The status each of these enquiries' citizens was last told."""
    a = alert_table.c
    rows = await conn.execute(
        select(a.enquiry_id, a.status)
        .join(event_table, v.id == a.event_id)
        .where(a.enquiry_id.in_(enquiry_ids), a.kind == AlertKind.status)
        .order_by(v.created_at, v.id)
    )
    return {row.enquiry_id: row.status for row in rows}  # the newest wins


def _what_is_told(event: Any, catalogue: Catalogue) -> tuple[AlertKind, Status | None] | None:
    """The kind of alert an event makes (and the status it tells), or None."""
    if event["type"] == EventType.enquiry_received:
        return AlertKind.acknowledgement, None
    if event["type"] == EventType.status_updated:
        return AlertKind.question, Status.information_requested
    status = Status(event["type"].removeprefix("enquiry."))
    if status in catalogue.tells(event["service_code"]):
        return AlertKind.status, status
    return None


def _contact(event: Any, sealer: Sealer) -> Contact | None:
    try:
        citizen = sealer.open(event["citizen_sealed"])
    except SealedDataUnreadable:
        log.warning("alerts.unreadable_citizen", enquiry=str(event["enquiry_id"]))
        return None
    return contact_of(citizen, event["consent"])


async def _insert(engine: AsyncEngine, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    async with writing(engine) as conn:
        dialect = postgresql if is_postgres(conn) else sqlite
        inserted = await conn.execute(
            dialect.insert(alert_table)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["event_id", "channel"])
        )
    return int(inserted.rowcount)


async def _advance(engine: AsyncEngine, newest: datetime) -> None:
    """Move the cursor forward to the newest event read, never back."""
    now = utcnow()
    async with writing(engine) as conn:
        dialect = postgresql if is_postgres(conn) else sqlite
        insert = dialect.insert(feed_cursor_table).values(
            name=FEED_NAME, fed_until=newest, updated_at=now
        )
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=["name"],
                set_={"fed_until": newest, "updated_at": now},
                where=c.fed_until < newest,
            )
        )


async def question_text(conn: AsyncConnection, event: Any) -> str | None:
    """What a back-office asked: the description of the update its event recorded."""
    u = status_update_table.c
    return await conn.scalar(
        select(u.description)
        .where(
            u.dispatch_id == event.dispatch_id,
            u.status == Status.information_requested,
            u.created_at == event.created_at,
        )
        .limit(1)
    )


class AlertFeed:
    """Feeds alerts every poll_seconds until stopped, waking the sender when it made some."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        catalogue: Catalogue,
        sealer: Sealer,
        settings: AlertSettings,
        on_new: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.catalogue = catalogue
        self.sealer = sealer
        self.settings = settings
        self.on_new = on_new
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Feed until stop() is called."""
        while not self._stopping.is_set():
            try:
                made = await feed(self.engine, self.catalogue, self.sealer)
                beat()
            except (SQLAlchemyError, OSError) as exc:
                # The database is unreachable: nothing is lost, the cursor has not moved.
                log.warning("alerts.feed_failed", error=type(exc).__name__)
                made = 0
            if made:
                log.info("alerts.fed", count=made)
                self.on_new()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.poll_seconds)

    async def stop(self) -> None:
        self._stopping.set()
