"""The dispatcher: claims due dispatches with a lease, delivers them through their adapter,
records every attempt, retries with backoff and jitter, and marks a dispatch dead when it must.

Any number of dispatchers may share one database. A claim is one UPDATE (on PostgreSQL over
rows taken with FOR UPDATE SKIP LOCKED); a finished attempt is written only while the lease is
still ours, so a worker that lost its lease cannot overwrite the one that took it over. A worker
killed at any moment leaves leased rows behind; they are claimed again when the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog
from sqlalchemy import ColumnElement, and_, exists, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.adapters.base import (
    Adapter,
    Delivery,
    Fence,
    LeaseLost,
    PermanentError,
    RetryableError,
    shareable_citizen,
)
from app.catalogue.catalogue import Catalogue
from app.core.crypto import SealedDataUnreadable, Sealer
from app.core.db import DISPATCH_CHANNEL, is_postgres, reading, writing
from app.core.models import (
    PERSONAL_COLUMNS,
    attempt_table,
    dispatch_table,
    enquiry_table,
    event_table,
    utcnow,
)
from app.core.settings import DispatchSettings
from app.core.supervisor import beat
from app.delivery import circuits
from app.delivery.workpool import WorkPool, retry_delay
from app.intake.reference import display
from app.updates.recording import follow_enquiry_status

log = structlog.get_logger()
d = dispatch_table.c
_RELISTEN_SECONDS = 5.0
# An interrupted attempt reads in the timeline as one that will be retried.
_EVENT_TYPE = {"interrupted": "dispatch.retry"}


@dataclass(frozen=True)
class Claim:
    dispatch_id: uuid.UUID
    enquiry_id: uuid.UUID
    organisation_id: str
    attempts: int
    claims: int
    lease_until: datetime


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended."""

    kind: str  # delivered | retry | dead | cancelled | interrupted | lease_lost
    error: str | None = None
    remote_reference: str | None = None
    retry_after: float | None = None
    transient: bool = False  # the back-office was unreachable or failing, not refusing
    # The call may have reached the back-office: the next waits to let it settle.
    ambiguous: bool = False


# Cut off at shutdown with the call perhaps at the back-office.
INTERRUPTED = Outcome(
    "interrupted", "the worker stopped before the attempt finished", ambiguous=True
)


def new_worker_id() -> str:
    """Unique per process and start: host, pid and a random tail."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def unverified_repeats(engine: AsyncEngine, organisation_ids: list[str]) -> dict[str, int]:
    """Deliveries to these organisations made after more than one attempt, by organisation:
    where repeats are not recognised, each may have left a second case for a person to check."""
    async with reading(engine) as conn:
        rows = await conn.execute(
            select(d.organisation_id, func.count())
            .where(d.organisation_id.in_(organisation_ids), d.state == "delivered", d.attempts > 1)
            .group_by(d.organisation_id)
        )
        return {str(organisation): int(count) for organisation, count in rows.all()}


class Dispatcher:
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
        self.engine = engine
        self.catalogue = catalogue
        self.adapters = adapters
        self.sealer = sealer
        self.settings = settings
        self.worker_id = worker_id or new_worker_id()
        self._stopping = asyncio.Event()
        self._pool = WorkPool(concurrency=settings.concurrency, name="dispatcher")
        self._listener: asyncpg.Connection | None = None
        self._listened_at = 0.0
        self._circuits_ready = False
        # As of the last claim: organisations with failures counted, and those whose circuit
        # has opened and not yet closed.
        self._failing: set[str] = set()
        self._tripped: set[str] = set()
        # Calls allowed at once to organisations ramping up after their circuit closed.
        self._ramps: dict[str, int] = {}
        # Organisations whose max_concurrent calls were all in flight at the last count.
        self._full: set[str] = set()

    def wake(self) -> None:
        """New work is waiting: claim it now rather than at the next poll."""
        self._pool.wake()

    async def run(self) -> None:
        """Claim and deliver until stop() is called."""
        await self._listen()
        log.info("dispatcher.started", worker=self.worker_id)
        self._listened_at = asyncio.get_running_loop().time()
        try:
            while not self._stopping.is_set():
                try:
                    await self._claim_and_start()
                    beat()
                except (SQLAlchemyError, OSError) as exc:
                    # The database is unreachable: nothing is lost, try again after a pause.
                    log.warning("dispatcher.claim_failed", error=type(exc).__name__)
                    await asyncio.sleep(self.settings.poll_seconds)
        finally:
            await self._drain()
            await self._unlisten()
            log.info("dispatcher.stopped", worker=self.worker_id)

    async def _claim_and_start(self) -> None:
        await self._keep_listening()
        wanted = self._pool.room(self.settings.batch_size)
        claimed = await self._claim(wanted) if wanted > 0 else []
        for claim in claimed:
            self._pool.start(claim.dispatch_id, self._deliver(claim))
        if wanted == 0:
            await self._pool.sleep(self.settings.poll_seconds)  # a finished delivery wakes us
        elif len(claimed) < wanted:
            await self._pool.sleep(await self._seconds_until_due())

    async def stop(self) -> None:
        """Stop claiming; in-flight deliveries get the grace period, then their leases go back."""
        self._stopping.set()
        self._pool.wake()

    async def run_until_idle(self) -> None:
        """Deliver everything due now, waiting for each attempt (for tests and one-off runs)."""
        while claimed := await self._claim(self.settings.batch_size):
            await asyncio.gather(*(self._deliver(c) for c in claimed))

    async def _seconds_until_due(self) -> float:
        async with reading(self.engine) as conn:
            # Work for an organisation at its cap waits for a call to end, which wakes us.
            next_due = await conn.scalar(
                select(func.min(d.next_attempt_at)).where(
                    d.state == "pending", d.organisation_id.not_in(self._full)
                )
            )
            next_expiry = await conn.scalar(
                select(func.min(d.lease_until)).where(d.state == "delivering")
            )
        due: list[datetime] = [t for t in (next_due, next_expiry) if t is not None]
        if not due:
            return self.settings.poll_seconds
        wait = (min(due) - utcnow()).total_seconds()
        return max(0.0, min(wait + 0.01, self.settings.poll_seconds))

    async def _claim(self, limit: int) -> list[Claim]:
        now = utcnow()
        due = (
            select(d.id)
            .where(
                or_(
                    and_(d.state == "pending", d.next_attempt_at <= now),
                    and_(d.state == "delivering", d.lease_until < now),
                )
            )
            .order_by(d.next_attempt_at)
            .limit(limit)
        )
        if holding := self._pool.holding():
            # Our own call may outlive its lease; it must not be sent a second time alongside.
            due = due.where(d.id.not_in(holding))
        if not self._circuits_ready:
            await circuits.ensure(self.engine, list(self.catalogue.organisations))
            self._circuits_ready = True
        due = due.where(d.organisation_id.not_in(circuits.open_now(now)))
        if full := await self._still_full():
            due = due.where(d.organisation_id.not_in(list(full)))
        if is_postgres(self.engine):
            due = due.with_for_update(skip_locked=True)
        lease_until = now + timedelta(seconds=self.settings.lease_seconds)
        claim = (
            update(dispatch_table)
            .where(d.id.in_(due.scalar_subquery()))
            .values(
                state="delivering",
                lease_owner=self.worker_id,
                lease_until=lease_until,
                claims=d.claims + 1,
                updated_at=now,
            )
            .returning(d.id, d.enquiry_id, d.organisation_id, d.attempts, d.claims)
        )
        async with writing(self.engine) as conn:
            rows = (await conn.execute(claim)).all()
        if not rows:
            return []
        troubled = await circuits.troubled(self.engine)
        self._failing, self._tripped, self._ramps = (
            troubled.counted,
            troubled.tripped,
            troubled.ramps,
        )
        claimed = [
            Claim(
                row.id, row.enquiry_id, row.organisation_id, row.attempts, row.claims, lease_until
            )
            for row in rows
        ]
        return await self._within_caps(claimed)

    def _cap(self, organisation_id: str) -> int:
        adapter = self.adapters.get(organisation_id)
        cap = adapter.config.max_concurrent if adapter is not None else 1
        return min(cap, self._ramps.get(organisation_id, cap))

    async def _in_flight_by_organisation(self, organisations: set[str]) -> dict[str, int]:
        """Calls in flight now, across every worker, per organisation."""
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                select(d.organisation_id, func.count())
                .where(
                    d.state == "delivering",
                    d.lease_until > utcnow(),
                    d.organisation_id.in_(list(organisations)),
                )
                .group_by(d.organisation_id)
            )
            return {str(organisation): int(count) for organisation, count in rows.all()}

    async def _still_full(self) -> set[str]:
        if self._full:
            counts = await self._in_flight_by_organisation(self._full)
            self._full = {o for o in self._full if counts.get(o, 0) >= self._cap(o)}
        return self._full

    async def _within_caps(self, claimed: list[Claim]) -> list[Claim]:
        """Hand back what would take an organisation past its max_concurrent calls.

        Counted after our claim committed, so of two workers claiming at once the second to
        count sees both claims; at worst both hand back, and neither goes over the cap.
        """
        counts = await self._in_flight_by_organisation({c.organisation_id for c in claimed})
        kept: list[Claim] = []
        for claim in reversed(claimed):
            organisation = claim.organisation_id
            if counts.get(organisation, 0) > self._cap(organisation):
                counts[organisation] -= 1
                await self._put_back(claim, utcnow())
            else:
                kept.append(claim)
        self._full |= {o for o, n in counts.items() if n >= self._cap(o)}
        return kept[::-1]

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
            await self._put_back(claim, wait_until)
            return
        started = utcnow()
        try:
            outcome = await self._attempt(claim, attempt)
        except asyncio.CancelledError:
            # Stopped mid-call: whether the back-office has the case is unknown, so the
            # attempt is recorded and the next one looks it up before creating it again.
            await self._record(claim, attempt=attempt, started=started, outcome=INTERRUPTED)
            raise
        if outcome.kind == "lease_lost":
            # Another worker holds it now and may be sending it: no call, no outcome of ours.
            log.warning("dispatch.lease_lost", dispatch=str(claim.dispatch_id))
            return
        if outcome.kind == "retry" and attempt >= self.settings.max_attempts:
            error = f"gave up after {attempt} attempts: {outcome.error}"
            outcome = Outcome("dead", error, transient=True)
        await self._record(claim, attempt=attempt, started=started, outcome=outcome)

    async def _put_back(self, claim: Claim, when: datetime) -> None:
        async with writing(self.engine) as conn:
            await conn.execute(
                update(dispatch_table)
                .where(
                    d.id == claim.dispatch_id,
                    d.lease_owner == self.worker_id,
                    d.claims == claim.claims,
                )
                .values(
                    state="pending",
                    lease_owner=None,
                    lease_until=None,
                    claims=d.claims - 1,
                    next_attempt_at=when,
                )
            )

    async def _attempt(self, claim: Claim, attempt: int) -> Outcome:
        adapter = self.adapters.get(claim.organisation_id)
        if adapter is None:
            return Outcome("dead", f"organisation {claim.organisation_id} is not configured")
        fence = LeaseFence(self, claim, call_seconds=adapter.timeout)
        try:
            delivery = await self._delivery(claim, attempt, fence=fence.check)
            if delivery.enquiry["anonymised_at"] is not None:
                # Erased while this delivery was waiting for another try: nothing left to send.
                return Outcome("cancelled", "called off: the citizen's data was erased")
            await fence.check()
            receipt = await adapter.deliver(delivery)
        except LeaseLost:
            return Outcome("lease_lost")
        except RetryableError as exc:
            return Outcome(
                "retry",
                str(exc),
                retry_after=exc.retry_after,
                transient=True,
                ambiguous=exc.ambiguous,
            )
        except PermanentError as exc:
            return Outcome("dead", str(exc))
        except Exception as exc:
            # A bug in an adapter must not stop the worker; it is retried and shows in the API.
            # It may have failed after its call went out, so the next attempt looks first.
            log.exception("dispatch.adapter_crashed", dispatch=str(claim.dispatch_id))
            error = f"internal error in adapter: {type(exc).__name__}"
            return Outcome("retry", error, ambiguous=True)
        return Outcome("delivered", remote_reference=receipt.remote_reference)

    def _still_held(self, claim: Claim) -> tuple[ColumnElement[bool], ...]:
        """The lease is this worker's, for this claim: the claim number fences off a lease that
        ran out and was taken again."""
        return (
            d.id == claim.dispatch_id,
            d.lease_owner == self.worker_id,
            d.claims == claim.claims,
            d.state == "delivering",
        )

    async def extend_lease(self, claim: Claim, now: datetime) -> datetime:
        """Hold this claim's lease for another lease_seconds, or raise LeaseLost."""
        until = now + timedelta(seconds=self.settings.lease_seconds)
        async with writing(self.engine) as conn:
            extended = await conn.execute(
                update(dispatch_table).where(*self._still_held(claim)).values(lease_until=until)
            )
        if extended.rowcount == 0:
            raise LeaseLost("the lease ran out and another worker took the delivery")
        return until

    async def _delivery(self, claim: Claim, attempt: int, *, fence: Fence) -> Delivery:
        async with reading(self.engine) as conn:
            enquiry = (
                (
                    await conn.execute(
                        select(enquiry_table).where(enquiry_table.c.id == claim.enquiry_id)
                    )
                )
                .mappings()
                .one()
            )
        service = self.catalogue.services.get(enquiry["service_code"])
        organisation = self.catalogue.organisations[claim.organisation_id]
        try:
            citizen = self.sealer.open(enquiry["citizen_sealed"])
        except SealedDataUnreadable as exc:
            # The keys are the operator's to fix; until then the delivery waits its turn.
            raise RetryableError(str(exc)) from exc
        shown = {k: v for k, v in enquiry.items() if k not in PERSONAL_COLUMNS}
        return Delivery(
            dispatch_id=claim.dispatch_id,
            reference=display(enquiry["reference"]),
            attempt=attempt,
            organisation=organisation,
            enquiry=shown,
            service_name=service.name if service else enquiry["service_code"],
            citizen=shareable_citizen({**shown, "citizen": citizen}, organisation),
            fence=fence,
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
                        "outcome": "interrupted",
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
        self, claim: Claim, *, attempt: int, started: datetime, outcome: Outcome
    ) -> None:
        now = utcnow()
        async with writing(self.engine) as conn:
            if is_postgres(conn):
                # Serialise outcomes per enquiry, so "all delivered" is judged on committed rows.
                await conn.execute(
                    select(enquiry_table.c.id)
                    .where(enquiry_table.c.id == claim.enquiry_id)
                    .with_for_update()
                )
            updated = await conn.execute(
                update(dispatch_table)
                .where(*self._still_held(claim))
                .values(**self._dispatch_values(outcome, attempt=attempt, now=now))
            )
            if updated.rowcount == 0:
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
            failing = claim.organisation_id in self._failing
            if outcome.transient or (outcome.kind == "delivered" and failing):
                await self._count_for_circuit(conn, claim, outcome, now)
        log.info(
            f"dispatch.{outcome.kind}",
            dispatch=str(claim.dispatch_id),
            organisation=claim.organisation_id,
            attempt=attempt,
            error=outcome.error,
        )

    async def _count_for_circuit(
        self, conn: AsyncConnection, claim: Claim, outcome: Outcome, now: datetime
    ) -> None:
        change = await circuits.record(
            conn,
            claim.organisation_id,
            failed=outcome.kind != "delivered",
            error=outcome.error,
            settings=self.settings,
            now=now,
        )
        if change is None:
            return
        log.warning(f"circuit.{change}", organisation=claim.organisation_id)
        if change == "closed":
            # The back-office is answering again: what waited for it need wait no longer, and
            # the ramp lets it through a few calls at a time.
            await conn.execute(
                update(dispatch_table)
                .where(
                    d.organisation_id == claim.organisation_id,
                    d.state == "pending",
                    d.next_attempt_at > now,
                )
                .values(next_attempt_at=now)
            )

    def _dispatch_values(self, outcome: Outcome, *, attempt: int, now: datetime) -> dict[str, Any]:
        values: dict[str, Any] = {
            "attempts": attempt,
            "lease_owner": None,
            "lease_until": None,
            "updated_at": now,
            "last_error": outcome.error,
        }
        if outcome.kind == "delivered":
            values.update(
                state="delivered", delivered_at=now, remote_reference=outcome.remote_reference
            )
        elif outcome.kind in ("dead", "cancelled"):
            values.update(state=outcome.kind)
        else:
            values.update(
                state="pending", next_attempt_at=now + self._retry_delay(outcome, attempt)
            )
        return values

    def _retry_delay(self, outcome: Outcome, attempt: int) -> timedelta:
        settle = timedelta(seconds=self.settings.settle_seconds if outcome.ambiguous else 0)
        if outcome.kind == "interrupted":
            return settle  # not the back-office's fault: no back-off, only the settling
        delay = retry_delay(
            self.settings.retry_schedule,
            attempt,
            jitter=self.settings.jitter,
            retry_after=outcome.retry_after,
        )
        return max(delay, settle)

    async def _timeline(
        self, conn: AsyncConnection, claim: Claim, *, attempt: int, outcome: Outcome, now: datetime
    ) -> None:
        organisation = self.catalogue.organisations.get(claim.organisation_id)
        name = organisation.name if organisation else claim.organisation_id
        if outcome.kind == "delivered":
            remote = f" as {outcome.remote_reference}" if outcome.remote_reference else ""
            detail = f"{name} accepted it{remote}"
        elif outcome.kind == "dead":
            detail = f"{name} could not be sent it: {outcome.error}"
        elif outcome.kind == "cancelled":
            detail = f"not sent to {name}: {outcome.error}"
        elif outcome.kind == "interrupted":
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
                "type": _EVENT_TYPE.get(outcome.kind, f"dispatch.{outcome.kind}"),
                "detail": detail,
            },
        )
        if outcome.kind == "cancelled":
            await follow_enquiry_status(conn, claim.enquiry_id, now)
            return
        status = await self._enquiry_status_change(conn, claim, outcome, now)
        if status is not None:
            text = {
                "dispatched": "every organisation has received it",
                "failed": "it could not be delivered everywhere; the contact centre can see why",
            }[status]
            # About the enquiry as a whole: it names no organisation and no dispatch, so an
            # organisation's feed is never sent another organisation's part with it.
            await conn.execute(
                event_table.insert(),
                {
                    **event,
                    "organisation_id": None,
                    "dispatch_id": None,
                    "id": uuid.uuid4(),
                    "type": f"enquiry.{status}",
                    "status": status,
                    "detail": text,
                    # Just after the dispatch event, so the timeline reads in order.
                    "created_at": now + timedelta(microseconds=1),
                },
            )

    async def _enquiry_status_change(
        self, conn: AsyncConnection, claim: Claim, outcome: Outcome, now: datetime
    ) -> str | None:
        e = enquiry_table.c
        if outcome.kind == "delivered":
            undelivered = exists().where(d.enquiry_id == claim.enquiry_id, d.state != "delivered")
            condition, status = ~undelivered, "dispatched"
        elif outcome.kind == "dead":
            condition, status = e.id.is_not(None), "failed"
        else:
            return None
        changed = await conn.execute(
            update(enquiry_table)
            .where(e.id == claim.enquiry_id, e.status == "routed", condition)
            .values(status=status, updated_at=now)
        )
        return status if changed.rowcount else None

    async def _drain(self) -> None:
        await self._pool.drain(self.settings.shutdown_grace_seconds)
        await self._release_leases()

    async def _release_leases(self) -> None:
        """Hand back what we still hold (an attempt whose outcome could not be written) so
        another worker can take it without waiting for the lease to run out. The claim stays
        counted: the next worker records the attempt as interrupted and looks the case up."""
        now = utcnow()
        async with writing(self.engine) as conn:
            released = await conn.execute(
                update(dispatch_table)
                .where(d.lease_owner == self.worker_id, d.state == "delivering")
                .values(
                    state="pending",
                    lease_owner=None,
                    lease_until=None,
                    next_attempt_at=now + timedelta(seconds=self.settings.settle_seconds),
                    updated_at=now,
                )
            )
        if released.rowcount:
            log.info("dispatcher.leases_released", count=released.rowcount)

    async def _listen(self) -> None:
        if not is_postgres(self.engine):
            return
        url = self.engine.url.set(drivername="postgresql")
        try:
            self._listener = await asyncpg.connect(url.render_as_string(hide_password=False))
            await self._listener.add_listener(DISPATCH_CHANNEL, lambda *_: self.wake())
        except (OSError, asyncpg.PostgresError) as exc:
            # Polling still finds the work; only the instant wake-up is lost.
            log.warning("dispatcher.listen_failed", error=type(exc).__name__)
            self._listener = None

    async def _keep_listening(self) -> None:
        """Reconnect LISTEN if its connection dropped (at most every few seconds)."""
        if not is_postgres(self.engine):
            return
        if self._listener is not None and not self._listener.is_closed():
            return
        now = asyncio.get_running_loop().time()
        if now - self._listened_at < _RELISTEN_SECONDS:
            return
        self._listened_at = now
        await self._unlisten()
        await self._listen()

    async def _unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await self._listener.close()
            self._listener = None


class LeaseFence:
    """Checked before every call that may create a case: the lease must still be ours with
    room for the call to end and the back-office to settle before it runs out, so that a worker
    that takes the delivery over after the lease looks up a case that is already there. Within
    that room no query is needed; past it the lease is extended, or LeaseLost is raised."""

    def __init__(self, dispatcher: Dispatcher, claim: Claim, *, call_seconds: float) -> None:
        self.dispatcher = dispatcher
        self.claim = claim
        self.until = claim.lease_until
        settle = dispatcher.settings.settle_seconds
        self.room = timedelta(seconds=call_seconds + settle)

    async def check(self) -> None:
        """Raise LeaseLost unless this worker may make a call now."""
        now = utcnow()
        if self.until - now < self.room:
            self.until = await self.dispatcher.extend_lease(self.claim, now)
