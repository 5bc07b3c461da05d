"""The dispatcher: delivers the dispatch outbox through each organisation's adapter, records
every attempt, retries with backoff and jitter, and marks a dispatch dead when it must.

Claims, leases and their fence, hand-back and the run loop are the outbox's
(app.core.outbox); here is what a dispatch adds: the adapter call, the circuit breaker and
concurrency caps per organisation, the attempt log and the enquiry's timeline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Row, Update, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from app.adapters.base import (
    Adapter,
    Delivery,
    EnquirySnapshot,
    Fence,
    LeaseLost,
    PermanentError,
    RetryableError,
)
from app.catalogue.catalogue import Catalogue, Organisation
from app.catalogue.status import Status
from app.core import outbox
from app.core.crypto import SealedDataUnreadable, Sealer
from app.core.db import DISPATCH_CHANNEL, is_postgres, reading, wake_follow_ups, writing
from app.core.models import (
    Enquiry,
    attempt_table,
    dispatch_table,
    enquiry_table,
    event_table,
    fetch_one,
    follow_up_table,
    message_table,
    utcnow,
)
from app.core.outbox import LeaseFence, LeaseQueue, finished
from app.core.settings import DispatchSettings
from app.core.vocabulary import BreakerChange, EventType, MessageKind, OutboxState, Outcome
from app.delivery import circuits
from app.updates.recording import follow_enquiry_status

log = structlog.get_logger()
d = dispatch_table.c
# The timeline's words when the enquiry as a whole moves on.
_ENQUIRY_DETAIL = {
    Status.dispatched: "every organisation has received it",
    Status.failed: "it could not be delivered everywhere; the contact centre can see why",
}


# The statements of every delivery, built once: building one costs more than running it.
_IN_FLIGHT = (
    select(d.organisation_id, func.count())
    .where(
        d.state == OutboxState.delivering,
        d.lease_until > bindparam("now"),
        d.organisation_id.in_(bindparam("organisations", expanding=True)),
    )
    .group_by(d.organisation_id)
)
_LOCK_ENQUIRY = (
    select(enquiry_table.c.id)
    .where(enquiry_table.c.id == bindparam("enquiry_id"))
    .with_for_update()
)


def _status_change(status: Status, condition: ColumnElement[bool]) -> Update:
    e = enquiry_table.c
    return (
        update(enquiry_table)
        .where(e.id == bindparam("enquiry_id"), e.status == Status.routed, condition)
        .values(status=status, updated_at=bindparam("now"))
    )


_ALL_DELIVERED = _status_change(
    Status.dispatched,
    ~exists().where(d.enquiry_id == bindparam("enquiry_id"), d.state != OutboxState.delivered),
)
_ONE_DEAD = _status_change(Status.failed, enquiry_table.c.id.is_not(None))
_m, _f, _e = message_table.c, follow_up_table.c, enquiry_table.c
# What was said on the enquiry and not yet sent to this organisation (see _catch_up).
_UNSENT = (
    select(_m.id, _m.kind)
    .join(enquiry_table, _e.id == _m.enquiry_id)
    .where(
        _m.enquiry_id == bindparam("enquiry_id"),
        (_m.kind == MessageKind.information)
        | ((_m.kind == MessageKind.withdrawal) & (_e.status == Status.withdrawn)),
        ~exists().where(_f.message_id == _m.id, _f.organisation_id == bindparam("organisation_id")),
    )
    .order_by(_m.created_at, _m.id)
)
_ENQUIRY = select(Enquiry).where(col(Enquiry.id) == bindparam("enquiry_id"))


@dataclass(frozen=True, kw_only=True)
class Claim(outbox.Claim):
    enquiry_id: uuid.UUID
    organisation_id: str
    attempts: int
    redriven_at: datetime | None
    lease_until: datetime

    @property
    def dispatch_id(self) -> uuid.UUID:
        return self.row_id


@dataclass(frozen=True, kw_only=True)
class Result(outbox.Result):
    remote_reference: str | None = None
    transient: bool = False  # the back-office was unreachable or failing, not refusing
    # The call may have reached the back-office: the next waits to let it settle.
    ambiguous: bool = False


# Cut off at shutdown with the call perhaps at the back-office.
INTERRUPTED = Result(
    Outcome.interrupted, "the worker stopped before the attempt finished", ambiguous=True
)


async def unverified_repeats(engine: AsyncEngine, organisation_ids: list[str]) -> dict[str, int]:
    """Deliveries to these organisations made after more than one attempt, by organisation:
    where repeats are not recognised, each may have left a second case for a person to check."""
    async with reading(engine) as conn:
        rows = await conn.execute(
            select(d.organisation_id, func.count())
            .where(
                d.organisation_id.in_(organisation_ids),
                d.state == OutboxState.delivered,
                d.attempts > 1,
            )
            .group_by(d.organisation_id)
        )
        return {str(organisation): int(count) for organisation, count in rows.all()}


async def _in_flight(conn: AsyncConnection, organisations: set[str]) -> dict[str, int]:
    """Calls in flight now, across every worker, per organisation."""
    rows = await conn.execute(_IN_FLIGHT, {"organisations": list(organisations), "now": utcnow()})
    return {str(organisation): int(count) for organisation, count in rows.all()}


class CalledOff(Exception):
    """Nothing is to be sent: the enquiry was withdrawn, or its personal data erased, while
    the work waited; the message says which."""


async def snapshot_for(
    conn: AsyncConnection,
    catalogue: Catalogue,
    sealer: Sealer,
    *,
    enquiry_id: uuid.UUID,
    organisation: Organisation,
    withdrawn_too: bool = False,
) -> EnquirySnapshot:
    """The enquiry as `organisation` may be sent it now, by the data-sharing rules: the one
    place deliveries and follow-ups are given it. CalledOff once it was erased, or withdrawn
    (unless `withdrawn_too`: the withdrawal itself is sent); RetryableError while no
    configured key opens the citizen's details."""
    enquiry = await fetch_one(conn, Enquiry, _ENQUIRY, {"enquiry_id": enquiry_id})
    if enquiry is None or enquiry.anonymised_at is not None:
        # Erased while this work was waiting for another try: nothing left to send.
        raise CalledOff("called off: the citizen's data was erased")
    if enquiry.status == Status.withdrawn and not withdrawn_too:
        raise CalledOff("called off: the citizen withdrew the enquiry")
    service = catalogue.services.get(enquiry.service_code)
    try:
        citizen = sealer.open(enquiry.citizen_sealed)
    except SealedDataUnreadable as exc:
        # The keys are the operator's to fix; until then the work waits its turn.
        raise RetryableError(str(exc)) from exc
    return EnquirySnapshot.of(
        enquiry,
        citizen=citizen,
        organisation=organisation,
        service_name=service.name if service else None,
    )


class Dispatcher(LeaseQueue[Claim]):
    """Delivers dispatches through their organisations' adapters."""

    table = dispatch_table
    name = "dispatcher"
    channel = DISPATCH_CHANNEL
    claim_columns = (d.enquiry_id, d.organisation_id, d.attempts, d.redriven_at)
    settings: DispatchSettings

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        catalogue: Catalogue,
        adapters: dict[str, Adapter],
        sealer: Sealer,
        settings: DispatchSettings,
        worker_id: str | None = None,
    ) -> None:
        super().__init__(engine=engine, settings=settings, worker_id=worker_id)
        self.catalogue = catalogue
        self.adapters = adapters
        self.sealer = sealer
        self._circuits_ready = False
        # As of the last claim: organisations with failures counted, and those whose circuit
        # has opened and not yet closed.
        self._failing: set[str] = set()
        self._tripped: set[str] = set()
        # Calls allowed at once to organisations ramping up after their circuit closed.
        self._ramps: dict[str, int] = {}
        # Organisations whose max_concurrent calls were all in flight at the last count.
        self._full: set[str] = set()

    def _grace_seconds(self) -> float:
        return self.settings.shutdown_grace_seconds

    def _released(self, now: datetime) -> dict[str, Any]:
        # The claim stays counted: the next worker records the attempt as interrupted and
        # looks the case up, after the back-office has had time to settle.
        return {"next_attempt_at": now + timedelta(seconds=self.settings.settle_seconds)}

    def _waiting(self) -> list[ColumnElement[bool]]:
        # Work for an organisation at its cap waits for a call to end, which wakes us.
        return [d.organisation_id.not_in(self._full)]

    async def _claimable(self, now: datetime) -> list[ColumnElement[bool]]:
        if not self._circuits_ready:
            await circuits.ensure(self.engine, list(self.catalogue.organisations))
            self._circuits_ready = True
        conditions: list[ColumnElement[bool]] = [d.organisation_id.not_in(circuits.open_now(now))]
        if full := await self._still_full():
            conditions.append(d.organisation_id.not_in(list(full)))
        return conditions

    async def _claimed(self, rows: Sequence[Row[Any]], lease_until: datetime) -> list[Claim]:
        # One read for what the claim needs: the circuits, and the calls in flight now
        # (counted after the claim committed, see _within_caps). The enquiry itself is read
        # just before each call, so that one erased or withdrawn meanwhile is not sent.
        async with reading(self.engine) as conn:
            troubled = await circuits.troubled(conn)
            counts = await _in_flight(conn, {row.organisation_id for row in rows})
        self._failing, self._tripped, self._ramps = (
            troubled.counted,
            troubled.tripped,
            troubled.ramps,
        )
        claimed = [Claim(**row._asdict(), lease_until=lease_until) for row in rows]
        return await self._within_caps(claimed, counts)

    def _cap(self, organisation_id: str) -> int:
        adapter = self.adapters.get(organisation_id)
        cap = adapter.config.max_concurrent if adapter is not None else 1
        return min(cap, self._ramps.get(organisation_id, cap))

    async def _in_flight_by_organisation(self, organisations: set[str]) -> dict[str, int]:
        """Calls in flight now, across every worker, per organisation."""
        async with reading(self.engine) as conn:
            return await _in_flight(conn, organisations)

    async def _still_full(self) -> set[str]:
        if self._full:
            counts = await self._in_flight_by_organisation(self._full)
            self._full = {o for o in self._full if counts.get(o, 0) >= self._cap(o)}
        return self._full

    async def _within_caps(self, claimed: list[Claim], counts: dict[str, int]) -> list[Claim]:
        """Hand back what would take an organisation past its max_concurrent calls, by the
        `counts` in flight.

        Counted after our claim committed, so of two workers claiming at once the second to
        count sees both claims; at worst both hand back, and neither goes over the cap.
        """
        kept: list[Claim] = []
        over: list[Claim] = []
        for claim in reversed(claimed):
            organisation = claim.organisation_id
            if counts.get(organisation, 0) > self._cap(organisation):
                counts[organisation] -= 1
                over.append(claim)
            else:
                kept.append(claim)
        if over:
            await self._hand_back(utcnow(), *over)
        self._full |= {o for o, n in counts.items() if n >= self._cap(o)}
        return kept[::-1]

    async def _claim_limit(self, wanted: int) -> int:
        """No more than the most room any organisation has under its cap: rows claimed past
        it were handed straight back, a write each (most of the drain's work when one
        organisation had everything due). Counted only while this worker has calls in
        flight: an idle one claims what it has room for (at worst handing back once what
        other workers leave no room for), and spends no query before its next delivery."""
        if not self._pool.holding():
            return wanted
        organisations = set(self.adapters)
        counts = await self._in_flight_by_organisation(organisations)
        room = max((self._cap(o) - counts.get(o, 0) for o in organisations), default=wanted)
        return max(0, min(wanted, room))

    async def _deliver(self, claim: Claim) -> None:
        attempts = claim.attempts
        if claim.claims > attempts + 1:
            # An earlier lease ran out with no outcome written: its worker died mid-attempt.
            attempts = await self._record_interrupted(claim)
        attempt = attempts + 1
        wait_until = None
        if claim.organisation_id in self._tripped:
            wait_until = await circuits.take_trial(
                self.engine, claim.organisation_id, self.settings
            )
        if wait_until is not None:
            # Its circuit is being tested by another delivery: wait, spending no attempt.
            await self._hand_back(wait_until, claim)
            return
        started = utcnow()
        try:
            outcome = await self._attempt(claim, attempt)
        except asyncio.CancelledError:
            # Stopped mid-call: whether the back-office has the case is unknown, so the
            # attempt is recorded and the next one looks it up before creating it again.
            await self._record(claim, attempt=attempt, started=started, outcome=INTERRUPTED)
            raise
        if outcome.kind is Outcome.lease_lost:
            # Another worker holds it now and may be sending it: no call, no outcome of ours.
            log.warning("dispatch.lease_lost", dispatch=str(claim.dispatch_id))
            return
        if (gave_up := self._gave_up(outcome, attempt)) is not None:
            outcome = Result(kind=Outcome.dead, error=gave_up, transient=True)
        await self._record(claim, attempt=attempt, started=started, outcome=outcome)

    async def _attempt(self, claim: Claim, attempt: int) -> Result:
        adapter = self.adapters.get(claim.organisation_id)
        if adapter is None:
            return Result(Outcome.dead, f"organisation {claim.organisation_id} is not configured")
        room = adapter.timeout + self.settings.settle_seconds
        fence = LeaseFence(self, claim, lease_until=claim.lease_until, room_seconds=room)
        try:
            delivery = await self._delivery(claim, attempt, fence=fence.check)
            await fence.check()
            receipt = await adapter.deliver(delivery)
        except LeaseLost:
            return Result(Outcome.lease_lost)
        except CalledOff as exc:
            return Result(Outcome.cancelled, str(exc))
        except RetryableError as exc:
            return Result(
                Outcome.retry,
                str(exc),
                retry_after=exc.retry_after,
                transient=True,
                ambiguous=exc.ambiguous,
            )
        except PermanentError as exc:
            return Result(Outcome.dead, str(exc))
        except Exception as exc:
            # A bug in an adapter must not stop the worker; it is retried and shows in the API.
            # It may have failed after its call went out, so the next attempt looks first.
            log.exception("dispatch.adapter_crashed", dispatch=str(claim.dispatch_id))
            error = f"internal error in adapter: {type(exc).__name__}"
            return Result(Outcome.retry, error, ambiguous=True)
        return Result(Outcome.delivered, remote_reference=receipt.remote_reference)

    async def _delivery(self, claim: Claim, attempt: int, *, fence: Fence) -> Delivery:
        """What this attempt sends (CalledOff: nothing is to be sent)."""
        organisation = self.catalogue.organisations[claim.organisation_id]
        async with reading(self.engine) as conn:
            snapshot = await snapshot_for(
                conn,
                self.catalogue,
                self.sealer,
                enquiry_id=claim.enquiry_id,
                organisation=organisation,
            )
        return Delivery(
            dispatch_id=claim.dispatch_id,
            attempt=attempt,
            organisation=organisation,
            enquiry=snapshot,
            fence=fence,
            redriven=claim.redriven_at is not None,
        )

    async def _record_interrupted(self, claim: Claim) -> int:
        attempts = claim.claims - 1
        now = utcnow()
        async with writing(self.engine) as conn:
            await conn.execute(
                attempt_table.insert(),
                [
                    {
                        "id": uuid.uuid4(),
                        "dispatch_id": claim.dispatch_id,
                        "number": number,
                        "outcome": Outcome.interrupted,
                        "error": "the worker stopped before the attempt finished",
                        "worker": "unknown",
                        "started_at": now,
                        "finished_at": now,
                    }
                    for number in range(claim.attempts + 1, attempts + 1)
                ],
            )
            await conn.execute(
                update(dispatch_table)
                .where(d.id == claim.dispatch_id, d.claims == claim.claims)
                .values(attempts=attempts)
            )
        return attempts

    async def _record(
        self, claim: Claim, *, attempt: int, started: datetime, outcome: Result
    ) -> None:
        now = utcnow()
        async with writing(self.engine) as conn:
            if is_postgres(conn):
                # Serialise outcomes per enquiry, so "all delivered" is judged on committed rows.
                await conn.execute(_LOCK_ENQUIRY, {"enquiry_id": claim.enquiry_id})
            values = self._dispatch_values(outcome, attempt=attempt, now=now)
            if not await self._settle(conn, claim, values):
                log.warning("dispatch.lease_lost", dispatch=str(claim.dispatch_id))
                return
            await conn.execute(
                attempt_table.insert(),
                {
                    "id": uuid.uuid4(),
                    "dispatch_id": claim.dispatch_id,
                    "number": attempt,
                    "outcome": outcome.kind,
                    "error": outcome.error,
                    "worker": self.worker_id,
                    "started_at": started,
                    "finished_at": now,
                },
            )
            await self._timeline(conn, claim, attempt=attempt, outcome=outcome, now=now)
            if outcome.kind is Outcome.delivered:
                await _catch_up(conn, claim, now)
            failing = claim.organisation_id in self._failing
            if outcome.transient or (outcome.kind is Outcome.delivered and failing):
                await self._count_for_circuit(conn, claim, outcome, now)
        log.info(
            f"dispatch.{outcome.kind}",
            dispatch=str(claim.dispatch_id),
            organisation=claim.organisation_id,
            attempt=attempt,
            error=outcome.error,
        )

    async def _count_for_circuit(
        self, conn: AsyncConnection, claim: Claim, outcome: Result, now: datetime
    ) -> None:
        change = await circuits.record(
            conn,
            claim.organisation_id,
            failed=outcome.kind is not Outcome.delivered,
            error=outcome.error,
            settings=self.settings,
            now=now,
        )
        if change is None:
            return
        log.warning(f"circuit.{change}", organisation=claim.organisation_id)
        if change is BreakerChange.closed:
            # The back-office is answering again: what waited for it need wait no longer, and
            # the ramp lets it through a few calls at a time.
            await conn.execute(
                update(dispatch_table)
                .where(
                    d.organisation_id == claim.organisation_id,
                    d.state == OutboxState.pending,
                    d.next_attempt_at > now,
                )
                .values(next_attempt_at=now)
            )

    def _dispatch_values(self, outcome: Result, *, attempt: int, now: datetime) -> dict[str, Any]:
        values = finished(
            outcome.kind,
            attempt=attempt,
            now=now,
            error=outcome.error,
            retry_in=lambda: self._retry_delay(outcome, attempt),
        )
        if outcome.kind is Outcome.delivered:
            values["remote_reference"] = outcome.remote_reference
        return values

    def _retry_delay(self, outcome: Result, attempt: int) -> timedelta:
        settle = timedelta(seconds=self.settings.settle_seconds if outcome.ambiguous else 0)
        if outcome.kind is Outcome.interrupted:
            return settle  # not the back-office's fault: no back-off, only the settling
        return max(self._backoff(attempt, outcome.retry_after), settle)

    async def _timeline(
        self, conn: AsyncConnection, claim: Claim, *, attempt: int, outcome: Result, now: datetime
    ) -> None:
        organisation = self.catalogue.organisations.get(claim.organisation_id)
        name = organisation.name if organisation else claim.organisation_id
        if outcome.kind is Outcome.delivered:
            remote = f" as {outcome.remote_reference}" if outcome.remote_reference else ""
            detail = f"{name} accepted it{remote}"
        elif outcome.kind is Outcome.dead:
            detail = f"{name} could not be sent it: {outcome.error}"
        elif outcome.kind is Outcome.cancelled:
            detail = f"not sent to {name}: {outcome.error}"
        elif outcome.kind is Outcome.interrupted:
            detail = f"attempt {attempt} to {name} was cut off; it will be looked up and retried"
        else:
            detail = f"attempt {attempt} to {name} failed ({outcome.error}); it will be retried"
        event = {
            "enquiry_id": claim.enquiry_id,
            "dispatch_id": claim.dispatch_id,
            "organisation_id": claim.organisation_id,
            "created_at": now,
        }
        await conn.execute(
            event_table.insert(),
            {
                **event,
                "id": uuid.uuid4(),
                "type": EventType.dispatch_outcome(outcome.kind),
                "detail": detail,
            },
        )
        if outcome.kind is Outcome.cancelled:
            await follow_enquiry_status(conn, claim.enquiry_id, now)
            return
        status = await self._enquiry_status_change(conn, claim, outcome, now)
        if status is not None:
            # About the enquiry as a whole: it names no organisation and no dispatch, so an
            # organisation's feed is never sent another organisation's part with it.
            await conn.execute(
                event_table.insert(),
                {
                    **event,
                    "organisation_id": None,
                    "dispatch_id": None,
                    "id": uuid.uuid4(),
                    "type": EventType.enquiry_status(status),
                    "status": status,
                    "detail": _ENQUIRY_DETAIL[status],
                    # Just after the dispatch event, so the timeline reads in order.
                    "created_at": now + timedelta(microseconds=1),
                },
            )

    async def _enquiry_status_change(
        self, conn: AsyncConnection, claim: Claim, outcome: Result, now: datetime
    ) -> Status | None:
        if outcome.kind is Outcome.delivered:
            statement, status = _ALL_DELIVERED, Status.dispatched
        elif outcome.kind is Outcome.dead:
            statement, status = _ONE_DEAD, Status.failed
        else:
            return None
        changed = await conn.execute(statement, {"enquiry_id": claim.enquiry_id, "now": now})
        return status if changed.rowcount else None


async def _catch_up(conn: AsyncConnection, claim: Claim, now: datetime) -> None:
    """What was said while this delivery waited or was on its way (more information, photos;
    a withdrawal made while the call was in flight) follows it to the back-office: a follow-up
    for each such message this organisation was not sent yet, queued in the delivery's own
    transaction (unique per message and part, so never twice)."""
    # One indexed look-up, in the delivery's transaction (usually finding nothing).
    unsent = await conn.execute(
        _UNSENT, {"enquiry_id": claim.enquiry_id, "organisation_id": claim.organisation_id}
    )
    rows = [
        outbox.new_row(
            now=now,
            message_id=message_id,
            dispatch_id=claim.dispatch_id,
            enquiry_id=claim.enquiry_id,
            organisation_id=claim.organisation_id,
            kind=kind,
        )
        for message_id, kind in unsent
    ]
    if rows:
        await conn.execute(follow_up_table.insert(), rows)
        await wake_follow_ups(conn)
