"""The triage desk: enquiries the router could not place, or that an organisation sent back.

A person claims an item (one at a time; a claim expires), then hands it on to the right
organisation(s), corrects its place and routes it again, or closes it at the desk. An item is a
dispatch row to the triage organisation whose `closure` is still empty; the acts below set it,
so how each item ended stays countable (Closure).

Candidates are the organisations that could be right, with the evidence: for a postcode sector
the table cannot decide, the councils sharing it and their postcode counts (Place.candidates);
for an enquiry with no location, every organisation of the service's tier; for one an
organisation said is not theirs, the others covering the place.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from app.casework.parts import close_parts
from app.casework.schemas_triage import (
    Candidate,
    ClaimOut,
    CloseIn,
    HandOnIn,
    PlaceSummary,
    RelocateIn,
    SaidNotOurs,
    TriageActOut,
    TriageItem,
    TriageOrder,
    TriagePage,
)
from app.catalogue.catalogue import Catalogue, Organisation, OrganisationKind, Service, Tier
from app.catalogue.locate import Place
from app.catalogue.routing import Destination
from app.catalogue.status import FINAL, Status
from app.clients.service import Caller, Scope
from app.clients.staff import StaffRole
from app.core import audit
from app.core import reference as references
from app.core.audit import Actor
from app.core.db import reading, wake_dispatchers, writing
from app.core.errors import FieldError, NotFound, StateConflict, ValidationFailed
from app.core.models import (
    Dispatch,
    Enquiry,
    api_client_table,
    dispatch_table,
    enquiry_table,
    event_table,
    fetch_all,
    fetch_one,
    staff_table,
    status_update_table,
    utcnow,
)
from app.core.outbox import new_row
from app.core.paging import newest_first, oldest_first, page
from app.core.vocabulary import AuditAction, Closure, EventType, OutboxState
from app.intake.reading import shown_error
from app.intake.schemas import DestinationOut
from app.intake.service import IntakeContext, locate_and_route
from app.updates.recording import follow_enquiry_status, part_status

log = structlog.get_logger()
d = dispatch_table.c
e = enquiry_table.c
su = status_update_table.c
# A triage part still open: not yet closed at the desk, and not called off (an erasure).
_OPEN_STATES = (OutboxState.pending, OutboxState.delivering, OutboxState.delivered)
_KINDS: Mapping[Tier, frozenset[OrganisationKind]] = {
    Tier.county: frozenset({OrganisationKind.county, OrganisationKind.unitary}),
    Tier.district: frozenset({OrganisationKind.district, OrganisationKind.unitary}),
    Tier.police: frozenset({OrganisationKind.police}),
    Tier.health: frozenset({OrganisationKind.health}),
}
_TIER_OF_KIND: Mapping[OrganisationKind, Tier] = {
    OrganisationKind.county: Tier.county,
    OrganisationKind.unitary: Tier.district,
    OrganisationKind.district: Tier.district,
    OrganisationKind.police: Tier.police,
    OrganisationKind.health: Tier.health,
}
_AREA = {
    Tier.county: "county",
    Tier.district: "district",
    Tier.police: "police force area",
    Tier.health: "health area",
}
_CLOSED_AS: Mapping[Closure, tuple[Status, str]] = {
    Closure.first_contact: (Status.resolved, "resolved at first contact"),
    Closure.outside_remit: (Status.closed, "outside every partner's remit (signposted)"),
}
_OVERRIDERS = frozenset({StaffRole.supervisor, StaffRole.administrator})


@dataclass(frozen=True)
class TriageDesk:
    """What the desk works with: the intake's database, catalogue and locator."""

    intake: IntakeContext
    claim_seconds: float

    @property
    def catalogue(self) -> Catalogue:
        return self.intake.catalogue


def _open(catalogue: Catalogue) -> Any:
    return and_(
        d.organisation_id == catalogue.triage.id, d.closure.is_(None), d.state.in_(_OPEN_STATES)
    )


# --- the queue -------------------------------------------------------------------------------


async def list_items(
    desk: TriageDesk,
    *,
    service_code: str | None = None,
    order: TriageOrder = TriageOrder.oldest,
    cursor: str | None = None,
    limit: int = 50,
    now: datetime | None = None,
) -> TriagePage:
    """The open items, longest waiting first (or newest); no citizen's details."""
    now = now or utcnow()
    query = _items(desk.catalogue)
    if service_code is not None:
        query = query.where(e.service_code == service_code)
    paging = oldest_first if order is TriageOrder.oldest else newest_first
    async with reading(desk.intake.engine, one_snapshot=True) as conn:
        found = list(
            (
                await conn.execute(paging(query, d.created_at, d.id, cursor=cursor, limit=limit))
            ).mappings()
        )
        rows, next_cursor = page(found, limit=limit, at="created_at")
        enquiries = {r["enquiry_id"] for r in rows}
        refusals = await _refusals(conn, enquiries)
        active = await _active_parts(conn, enquiries)
        holders = await holder_names(conn, (r["claimed_by"] for r in rows if _held(r, now)))
    items = [_item(r, desk.catalogue, refusals, active, holders, now) for r in rows]
    return TriagePage(items=items, next_cursor=next_cursor)


async def find_item(
    desk: TriageDesk, *, reference: str, now: datetime | None = None
) -> TriageItem | None:
    """One enquiry's item as the queue lists it (its candidates, who holds it), or None when
    the enquiry is not at the desk; no citizen's details."""
    now = now or utcnow()
    query = _items(desk.catalogue).where(e.reference == references.parse(reference))
    async with reading(desk.intake.engine, one_snapshot=True) as conn:
        row = (await conn.execute(query.order_by(d.created_at, d.id).limit(1))).mappings().first()
        if row is None:
            return None
        enquiries = {row["enquiry_id"]}
        refusals = await _refusals(conn, enquiries)
        active = await _active_parts(conn, enquiries)
        holders = await holder_names(conn, [row["claimed_by"]] if _held(row, now) else [])
    return _item(row, desk.catalogue, refusals, active, holders, now)


def _items(catalogue: Catalogue) -> Select[Any]:
    """The open items with what the queue shows of their enquiries."""
    return (
        select(
            dispatch_table, e.reference, e.service_code, e.status.label("enquiry_status"), e.place
        )
        .join(enquiry_table, e.id == d.enquiry_id)
        .where(_open(catalogue))
    )


@dataclass(frozen=True)
class _Refusal:
    organisation_id: str
    words: str | None
    sent_because: str
    at: datetime


async def _refusals(
    conn: AsyncConnection, enquiry_ids: set[uuid.UUID]
) -> dict[uuid.UUID, list[_Refusal]]:
    """Each enquiry's "not ours" updates, oldest first."""
    if not enquiry_ids:
        return {}
    query = (
        select(su.enquiry_id, su.organisation_id, su.description, su.created_at, d.reason)
        .join(dispatch_table, d.id == su.dispatch_id)
        .where(su.enquiry_id.in_(enquiry_ids), su.status == Status.not_our_responsibility)
        .order_by(su.created_at)
    )
    found: dict[uuid.UUID, list[_Refusal]] = {}
    for row in (await conn.execute(query)).all():
        found.setdefault(row[0], []).append(_Refusal(row[1], row[2], row[4], row[3]))
    return found


async def _active_parts(
    conn: AsyncConnection, enquiry_ids: set[uuid.UUID]
) -> dict[uuid.UUID, set[str]]:
    """The organisations still working each enquiry (a part neither finished nor closed)."""
    if not enquiry_ids:
        return {}
    query = select(d.enquiry_id, d.organisation_id, d.state, d.remote_status, d.closure).where(
        d.enquiry_id.in_(enquiry_ids)
    )
    found: dict[uuid.UUID, set[str]] = {}
    for enquiry_id, organisation_id, state, remote, closure in (await conn.execute(query)).all():
        if _is_active(state, remote, closure):
            found.setdefault(enquiry_id, set()).add(organisation_id)
    return found


def _is_active(state: str, remote_status: str | None, closure: str | None) -> bool:
    if closure is not None or state in (OutboxState.cancelled, OutboxState.handled):
        return False
    return part_status(state, remote_status) not in FINAL


async def holder_names(conn: AsyncConnection, actor_ids: Iterable[str | None]) -> dict[str, str]:
    """The names of claim holders: people (`staff:<id>`) and API clients (their id)."""
    wanted = {a for a in actor_ids if a}
    people = {a: _uuid(a.removeprefix("staff:")) for a in wanted if a.startswith("staff:")}
    clients = {a: _uuid(a) for a in wanted if not a.startswith("staff:")}
    names: dict[str, str] = {}
    for table, ids, prefix in ((staff_table, people, "staff:"), (api_client_table, clients, "")):
        valid = [i for i in ids.values() if i is not None]
        if valid:
            rows = await conn.execute(select(table.c.id, table.c.name).where(table.c.id.in_(valid)))
            names.update({f"{prefix}{row_id}": name for row_id, name in rows.all()})
    return {a: names.get(a, a) for a in wanted}


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _held(row: Mapping[str, Any], now: datetime) -> bool:
    until = row["claimed_until"]
    return row["claimed_by"] is not None and until is not None and until > now


def _item(
    row: Mapping[str, Any],
    catalogue: Catalogue,
    refusals: Mapping[uuid.UUID, list[_Refusal]],
    active: Mapping[uuid.UUID, set[str]],
    holders: Mapping[str, str],
    now: datetime,
) -> TriageItem:
    service = catalogue.services.get(row["service_code"])
    place = Place.from_dict(row["place"])
    refusal = _refusal_of(row, refusals.get(row["enquiry_id"], []), catalogue)
    refused_by = catalogue.organisations.get(refusal.organisation_id) if refusal else None
    held = _held(row, now)
    return TriageItem(
        reference=references.display(row["reference"]),
        service_code=row["service_code"],
        service_name=service.name if service else row["service_code"],
        status=row["enquiry_status"],
        reason=row["reason"],
        said_not_ours=_said(refusal, catalogue) if refusal else None,
        waiting_since=row["created_at"],
        waiting_seconds=max(0, int((now - row["created_at"]).total_seconds())),
        place=PlaceSummary(postcode=place.postcode, precision=place.precision),
        claimed_by=holders.get(row["claimed_by"]) if held else None,
        claimed_until=row["claimed_until"] if held else None,
        candidates=candidates_for(
            service=service,
            place=place,
            catalogue=catalogue,
            refused_by=refused_by,
            busy=active.get(row["enquiry_id"], set()),
        ),
    )


def _refusal_of(
    row: Mapping[str, Any], refusals: Sequence[_Refusal], catalogue: Catalogue
) -> _Refusal | None:
    """The "not ours" that sent this item to the desk: the newest before it was made (an item
    made at intake has none)."""
    before = [
        r
        for r in refusals
        if r.at <= row["created_at"] and r.organisation_id != catalogue.triage.id
    ]
    return before[-1] if before else None


def _said(refusal: _Refusal, catalogue: Catalogue) -> SaidNotOurs:
    organisation = catalogue.organisations.get(refusal.organisation_id)
    return SaidNotOurs(
        organisation_id=refusal.organisation_id,
        organisation_name=organisation.name if organisation else refusal.organisation_id,
        words=refusal.words,
        sent_because=refusal.sent_because,
    )


# --- candidates ------------------------------------------------------------------------------


def candidates_for(
    *,
    service: Service | None,
    place: Place,
    catalogue: Catalogue,
    refused_by: Organisation | None = None,
    busy: set[str] | None = None,
) -> list[Candidate]:
    """Who could be right, with the evidence; never the desk, the organisation that said no,
    or one already working the enquiry (`busy`)."""
    if service is None:
        return []
    if refused_by is not None:
        found = _after_refusal(refused_by, place, catalogue)
    else:
        found = []
        for tier in service.tiers:
            if tier is not Tier.triage and _code_for(tier, place) is None:
                found += _undecided(tier, place, catalogue)
    excluded = {catalogue.triage.id, *(busy or set())}
    if refused_by is not None:
        excluded.add(refused_by.id)
    unique: dict[str, Candidate] = {}
    for candidate in found:
        key = candidate.organisation_id or candidate.organisation_name
        if candidate.organisation_id not in excluded and key not in unique:
            unique[key] = candidate
    return list(unique.values())


def _undecided(tier: Tier, place: Place, catalogue: Catalogue) -> list[Candidate]:
    if tier is Tier.district and place.candidates:
        return _sharing(place, catalogue)
    return _every(tier, place, catalogue)


def _after_refusal(refused_by: Organisation, place: Place, catalogue: Catalogue) -> list[Candidate]:
    """The others of the refusing organisation's tier at this place first, then every
    organisation covering the place (the work may be another tier's)."""
    tier = _TIER_OF_KIND.get(refused_by.kind)
    found = []
    if tier is not None and _code_for(tier, place) is None:
        found += _undecided(tier, place, catalogue)
    tiers = [t for t in (tier, *_KINDS) if t is not None]
    for each in dict.fromkeys(tiers):
        code = _code_for(each, place)
        if code is not None:
            found += [
                Candidate(
                    organisation_id=o.id,
                    organisation_name=o.name,
                    evidence=f"covers {_AREA[each]} {code}{_at(place)}",
                )
                for o in _covering(each, code, catalogue)
            ]
    return found


def _sharing(place: Place, catalogue: Catalogue) -> list[Candidate]:
    """The councils sharing the place's straddling sector or district, most postcodes first;
    a council that is no partner of ours is named (from neighbours.yaml) with no id."""
    total = sum(count for _, count in place.candidates)
    where = (
        "near the point" if place.precision == "point" else f"in {place.precision} {_prefix(place)}"
    )
    found = []
    for code, count in place.candidates:
        organisation = next(iter(_covering(Tier.district, code, catalogue)), None)
        found.append(
            Candidate(
                organisation_id=organisation.id if organisation else None,
                organisation_name=organisation.name
                if organisation
                else catalogue.neighbours.get(code, code),
                evidence=f"{count} of {total} postcodes {where}",
                postcodes=count,
            )
        )
    return found


def _every(tier: Tier, place: Place, catalogue: Catalogue) -> list[Candidate]:
    where = _at(place)
    why = "no location was given" if not where else f"the {_AREA[tier]}{where} is not known"
    return [
        Candidate(
            organisation_id=o.id,
            organisation_name=o.name,
            evidence=f"a {tier.value} organisation of this gateway; {why}",
        )
        for o in catalogue.organisations.values()
        if o.kind in _KINDS[tier]
    ]


def _covering(tier: Tier, code: str, catalogue: Catalogue) -> list[Organisation]:
    return [
        o for o in catalogue.organisations.values() if o.kind in _KINDS[tier] and code in o.areas
    ]


def _code_for(tier: Tier, place: Place) -> str | None:
    if tier is Tier.county:
        return place.county_code or place.district_code
    if tier is Tier.triage:
        return None
    return {
        Tier.district: place.district_code,
        Tier.police: place.police_area,
        Tier.health: place.health_area,
    }[tier]


def _prefix(place: Place) -> str:
    outward, _, inward = (place.postcode or "").partition(" ")
    return f"{outward} {inward[:1]}" if place.precision == "sector" and inward else outward


def _at(place: Place) -> str:
    if place.postcode:
        return f" at {place.postcode}"
    if place.latitude is not None and place.longitude is not None:
        return f" at {place.latitude},{place.longitude}"
    return ""


# --- claims ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    enquiry: Enquiry
    parts: list[Dispatch]  # its open triage parts (one, unless two organisations sent it back)

    @property
    def reference(self) -> str:
        return references.display(self.enquiry.reference)


async def _locked_item(conn: AsyncConnection, catalogue: Catalogue, reference: str) -> _Item:
    """The enquiry and its open triage parts, locked for this transaction; 404 / 409."""
    canonical = references.parse(reference)
    enquiry = await fetch_one(
        conn, Enquiry, select(Enquiry).where(e.reference == canonical).with_for_update()
    )
    if enquiry is None:
        raise NotFound(f"No enquiry has the reference {references.display(canonical)}.")
    parts = await fetch_all(
        conn,
        Dispatch,
        select(Dispatch)
        .where(d.enquiry_id == enquiry.id, _open(catalogue))
        .order_by(d.created_at, d.id)
        .with_for_update(),
    )
    if not parts:
        raise StateConflict(
            f"{references.display(canonical)} is not at the triage desk (it is {enquiry.status})."
        )
    return _Item(enquiry, parts)


def _holder(item: _Item, now: datetime) -> Dispatch | None:
    return next(
        (p for p in item.parts if p.claimed_by and p.claimed_until and p.claimed_until > now),
        None,
    )


async def _ensure_free(conn: AsyncConnection, item: _Item, actor: Actor, now: datetime) -> None:
    """409 while another holds an unexpired claim on the item."""
    held = _holder(item, now)
    if held is None or held.claimed_by == actor.id or held.claimed_until is None:
        return
    name = (await holder_names(conn, [held.claimed_by]))[held.claimed_by or ""]
    raise StateConflict(
        f"{name} holds {item.reference} at the triage desk until "
        f"{held.claimed_until.isoformat(timespec='seconds')}; ask them, or wait until then."
    )


async def _set_claim(
    conn: AsyncConnection, item: _Item, by: str | None, until: datetime | None, now: datetime
) -> None:
    await conn.execute(
        update(dispatch_table)
        .where(d.id.in_([p.id for p in item.parts]))
        .values(claimed_by=by, claimed_until=until, updated_at=now)
    )


async def claim(
    desk: TriageDesk, *, reference: str, caller: Caller, now: datetime | None = None
) -> ClaimOut:
    """Take the item for the caller, or extend the caller's own claim; 409 if another holds it."""
    now = now or utcnow()
    actor = Actor.of(caller)
    until = now + timedelta(seconds=desk.claim_seconds)
    async with writing(desk.intake.engine) as conn:
        item = await _locked_item(conn, desk.catalogue, reference)
        await _ensure_free(conn, item, actor, now)
        await _set_claim(conn, item, actor.id, until, now)
        await audit.record(
            conn,
            actor=actor,
            action=AuditAction.triage_claimed,
            subject=item.reference,
            detail={"until": until.isoformat()},
            at=now,
        )
    return ClaimOut(reference=item.reference, claimed_by=actor.name, claimed_until=until)


async def release(
    desk: TriageDesk, *, reference: str, caller: Caller, now: datetime | None = None
) -> None:
    """Let go of a claim: the holder's own, or anyone's for a supervisor or an administrator."""
    now = now or utcnow()
    actor = Actor.of(caller)
    async with writing(desk.intake.engine) as conn:
        item = await _locked_item(conn, desk.catalogue, reference)
        held = _holder(item, now)
        if held is None:
            return
        if held.claimed_by != actor.id and not _may_override(caller):
            await _ensure_free(conn, item, actor, now)
        await _set_claim(conn, item, None, None, now)
        await audit.record(
            conn,
            actor=actor,
            action=AuditAction.triage_released,
            subject=item.reference,
            detail={"held_by": held.claimed_by},
            at=now,
        )


def _may_override(caller: Caller) -> bool:
    if caller.person is None:
        return caller.allows(Scope.admin)
    return caller.person.role in _OVERRIDERS


# --- hand on, relocate, close ----------------------------------------------------------------


def _checked_organisations(ids: Sequence[str], catalogue: Catalogue) -> list[Organisation]:
    errors = []
    for index, organisation_id in enumerate(ids):
        pointer = f"#/organisations/{index}"
        if organisation_id not in catalogue.organisations:
            errors.append(FieldError(f"no organisation '{organisation_id}'", pointer=pointer))
        elif organisation_id == catalogue.triage.id:
            errors.append(FieldError("the triage desk cannot hand on to itself", pointer=pointer))
    if errors:
        raise ValidationFailed("Some organisations cannot be handed the enquiry.", errors)
    return [catalogue.organisations[i] for i in ids]


async def hand_on(
    desk: TriageDesk,
    *,
    reference: str,
    body: HandOnIn,
    caller: Caller,
    now: datetime | None = None,
) -> TriageActOut:
    """Give the enquiry to these organisations, through the outbox like any dispatch (the same
    data-sharing rules and consent apply when it is delivered), and close the desk's part."""
    now = now or utcnow()
    actor = Actor.of(caller)
    organisations = _checked_organisations(body.organisations, desk.catalogue)
    async with writing(desk.intake.engine) as conn:
        item = await _locked_item(conn, desk.catalogue, reference)
        await _ensure_free(conn, item, actor, now)
        await _refuse_busy(conn, item, [o.id for o in organisations])
        destinations = [
            Destination(o.id, f"{desk.catalogue.triage.name} handed it on: {body.reason}")
            for o in organisations
        ]
        await _hand_on(conn, desk, item, destinations, actor, now, why=body.reason)
        await follow_enquiry_status(conn, item.enquiry.id, now)
        await audit.record(
            conn,
            actor=actor,
            action=AuditAction.triage_handed_on,
            subject=item.reference,
            detail={"organisations": [o.id for o in organisations], "reason": body.reason},
            at=now,
        )
    desk.intake.wake_dispatcher()
    log.info("triage.handed_on", reference=item.reference, organisations=len(organisations))
    return await _answer(desk, item.enquiry.id)


async def _refuse_busy(conn: AsyncConnection, item: _Item, ids: Sequence[str]) -> None:
    busy = (await _active_parts(conn, {item.enquiry.id})).get(item.enquiry.id, set())
    already = [i for i in ids if i in busy]
    if already:
        raise StateConflict(
            f"{', '.join(already)} already {'has' if len(already) == 1 else 'have'} "
            f"{item.reference} and {'is' if len(already) == 1 else 'are'} working it."
        )


async def _hand_on(
    conn: AsyncConnection,
    desk: TriageDesk,
    item: _Item,
    destinations: Sequence[Destination],
    actor: Actor,
    now: datetime,
    *,
    why: str,
    keep_open: bool = False,
) -> None:
    """New dispatches for `destinations`, the event naming them, and the desk's part closed
    (unless `keep_open`: the desk still has a part to place)."""
    triage = desk.catalogue.triage
    await conn.execute(
        dispatch_table.insert(),
        [
            new_row(
                now=now,
                enquiry_id=item.enquiry.id,
                organisation_id=dest.organisation_id,
                reason=dest.reason,
            )
            for dest in destinations
        ],
    )
    if not keep_open:
        await close_parts(
            conn, [p.id for p in item.parts], closure=Closure.handed_on, by=actor, note=why, now=now
        )
    names = ", ".join(desk.catalogue.organisations[x.organisation_id].name for x in destinations)
    await _event(
        conn,
        item,
        EventType.enquiry_handed_on,
        f"handed on to {names}: {why}",
        actor,
        at=now + timedelta(microseconds=1),
        organisation_id=triage.id,
    )
    await wake_dispatchers(conn)


async def _event(
    conn: AsyncConnection,
    item: _Item,
    event_type: EventType,
    detail: str,
    actor: Actor,
    *,
    at: datetime,
    organisation_id: str | None = None,
    status: Status | None = None,
) -> None:
    await conn.execute(
        event_table.insert(),
        {
            "id": uuid.uuid4(),
            "enquiry_id": item.enquiry.id,
            "dispatch_id": item.parts[0].id,
            "organisation_id": organisation_id,
            "type": event_type,
            "status": status,
            "detail": detail,
            "created_at": at,
            **actor.on_event(),
        },
    )


async def relocate(
    desk: TriageDesk,
    *,
    reference: str,
    body: RelocateIn,
    caller: Caller,
    now: datetime | None = None,
) -> TriageActOut:
    """Locate and route the enquiry again at the place the caller gave: hand it on to the
    organisations now found, or keep it at the desk with its new place and candidates."""
    actor = Actor.of(caller)
    async with reading(desk.intake.engine) as conn:
        enquiry = await _waiting_enquiry(conn, desk.catalogue, reference)
    service = desk.catalogue.services.get(enquiry.service_code)
    if service is None:
        raise StateConflict(
            f"The service '{enquiry.service_code}' is no longer configured, so the enquiry "
            "cannot be routed again; hand it on instead."
        )
    # Located before the write lock is taken: the locator may ask a service over HTTP.
    place, destinations = await locate_and_route(
        service=service,
        location=body.location,
        catalogue=desk.catalogue,
        locator=desk.intake.locator,
    )
    now = now or utcnow()
    triage_id = desk.catalogue.triage.id
    async with writing(desk.intake.engine) as conn:
        item = await _locked_item(conn, desk.catalogue, reference)
        await _ensure_free(conn, item, actor, now)
        busy = (await _active_parts(conn, {item.enquiry.id})).get(item.enquiry.id, set())
        found = [x for x in destinations if x.organisation_id not in busy | {triage_id}]
        still = any(x.organisation_id == triage_id for x in destinations)
        await _move(conn, item, body, place, now)
        await _event(
            conn,
            item,
            EventType.enquiry_relocated,
            f"the place is now {place.postcode or _point(place)} ({place.precision}); "
            + (
                "routed again to " + ", ".join(x.organisation_id for x in found)
                if found
                else "still for the triage desk"
            ),
            actor,
            at=now,
        )
        if found:
            await _hand_on(
                conn, desk, item, found, actor, now, why="the place was corrected", keep_open=still
            )
        if still:
            await _keep(conn, item, destinations, triage_id, actor, desk, now)
        await follow_enquiry_status(conn, item.enquiry.id, now)
        await audit.record(
            conn,
            actor=actor,
            action=AuditAction.triage_relocated,
            subject=item.reference,
            detail={
                "postcode": place.postcode,
                "precision": place.precision,
                "handed_on": [x.organisation_id for x in found],
            },
            at=now,
        )
    if found:
        desk.intake.wake_dispatcher()
    return await _answer(desk, item.enquiry.id)


def _point(place: Place) -> str:
    if place.latitude is not None and place.longitude is not None:
        return f"{place.latitude},{place.longitude}"
    return "not known"


async def _waiting_enquiry(conn: AsyncConnection, catalogue: Catalogue, reference: str) -> Enquiry:
    canonical = references.parse(reference)
    enquiry = await fetch_one(conn, Enquiry, select(Enquiry).where(e.reference == canonical))
    if enquiry is None:
        raise NotFound(f"No enquiry has the reference {references.display(canonical)}.")
    waiting = await conn.scalar(
        select(d.id).where(d.enquiry_id == enquiry.id, _open(catalogue)).limit(1)
    )
    if waiting is None:
        raise StateConflict(
            f"{references.display(canonical)} is not at the triage desk (it is {enquiry.status})."
        )
    return enquiry


async def _move(
    conn: AsyncConnection, item: _Item, body: RelocateIn, place: Place, now: datetime
) -> None:
    await conn.execute(
        update(enquiry_table)
        .where(e.id == item.enquiry.id)
        .values(
            location=body.location.model_dump(exclude_none=True),
            place=place.as_dict(),
            updated_at=now,
        )
    )


async def _keep(
    conn: AsyncConnection,
    item: _Item,
    destinations: Sequence[Destination],
    triage_id: str,
    actor: Actor,
    desk: TriageDesk,
    now: datetime,
) -> None:
    """The desk keeps it: its reason is the router's new one, and the person holds it."""
    reason = next(x.reason for x in destinations if x.organisation_id == triage_id)
    await conn.execute(
        update(dispatch_table)
        .where(d.id.in_([p.id for p in item.parts]))
        .values(
            reason=reason,
            claimed_by=actor.id,
            claimed_until=now + timedelta(seconds=desk.claim_seconds),
            updated_at=now,
        )
    )


async def close(
    desk: TriageDesk,
    *,
    reference: str,
    body: CloseIn,
    caller: Caller,
    now: datetime | None = None,
) -> TriageActOut:
    """Close the desk's part: resolved at first contact, or outside every partner's remit;
    the note (the advice or signposting given) is kept with the part, for reports."""
    now = now or utcnow()
    actor = Actor.of(caller)
    closure = Closure(body.outcome)
    status, said = _CLOSED_AS[closure]
    async with writing(desk.intake.engine) as conn:
        item = await _locked_item(conn, desk.catalogue, reference)
        await _ensure_free(conn, item, actor, now)
        await close_parts(
            conn, [p.id for p in item.parts], closure=closure, by=actor, note=body.note, now=now
        )
        await _event(
            conn,
            item,
            EventType.status_updated,
            f"{desk.catalogue.triage.name} closed it at the desk: {said}",
            actor,
            at=now,
            organisation_id=desk.catalogue.triage.id,
            status=status,
        )
        await follow_enquiry_status(conn, item.enquiry.id, now)
        await audit.record(
            conn,
            actor=actor,
            action=AuditAction.triage_closed,
            subject=item.reference,
            detail={"outcome": closure.value},
            at=now,
        )
    return await _answer(desk, item.enquiry.id)


async def _answer(desk: TriageDesk, enquiry_id: uuid.UUID) -> TriageActOut:
    """The enquiry after the act: its status and every destination."""
    async with reading(desk.intake.engine, one_snapshot=True) as conn:
        enquiry = await fetch_one(conn, Enquiry, select(Enquiry).where(e.id == enquiry_id))
        dispatches = await fetch_all(
            conn,
            Dispatch,
            select(Dispatch)
            .where(d.enquiry_id == enquiry_id)
            .order_by(d.created_at, d.organisation_id),
        )
    assert enquiry is not None
    catalogue = desk.catalogue
    return TriageActOut(
        reference=references.display(enquiry.reference),
        status=Status(enquiry.status),
        still_at_triage=any(
            x.organisation_id == catalogue.triage.id
            and x.closure is None
            and x.state in _OPEN_STATES
            for x in dispatches
        ),
        destinations=[_destination(x, catalogue) for x in dispatches],
    )


def _destination(dispatch: Dispatch, catalogue: Catalogue) -> DestinationOut:
    organisation = catalogue.organisations.get(dispatch.organisation_id)
    return DestinationOut(
        organisation_id=dispatch.organisation_id,
        organisation_name=organisation.name if organisation else dispatch.organisation_id,
        reason=dispatch.reason,
        state=OutboxState(dispatch.state),
        attempts=dispatch.attempts,
        last_error=shown_error(dispatch.state, dispatch.last_error, staff=True),
        remote_reference=dispatch.remote_reference,
        remote_status=dispatch.remote_status,
        remote_status_at=dispatch.remote_status_at,
        next_attempt_at=dispatch.next_attempt_at if dispatch.state == OutboxState.pending else None,
        delivered_at=dispatch.delivered_at,
    )
