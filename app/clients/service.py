"""API clients: keys made, found and checked, scopes, and the development key.

A key reads `iap_<key id>_<secret>`. The key id (12 hex characters) is not secret: it finds the
client in one indexed look-up and lets people tell keys apart in `iap clients list`. Only a
SHA-256 hash of the secret is stored, and it is compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from functools import partial

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.catalogue.catalogue import Catalogue
from app.core.db import reading, writing
from app.core.errors import ClientExists, NotFound, ValidationFailed
from app.core.models import ApiClient, api_client_table, fetch_all, staff_table, utcnow

c = api_client_table.c
KEY_PREFIX = "iap_"
_KEY_ID_LENGTH = 12
DEVELOPMENT_CLIENT = "development"


class Scope(StrEnum):
    """What a client may do; `admin` implies every other scope."""

    enquiries_submit = "enquiries:submit"
    enquiries_read = "enquiries:read"  # only the enquiries this client submitted
    enquiries_read_all = "enquiries:read-all"  # contact-centre agents
    webhooks_manage = "webhooks:manage"
    privacy = "privacy"
    triage = "triage"  # the triage desk: claim, hand on, correct the place, close
    deliveries_manage = "deliveries:manage"  # the dead-letter desk, redrive, stuck work
    parts_update = "parts:update"  # move an organisation's part (its staff, with no system)
    admin = "admin"


# What a caller for one organisation (a partner's staff, an organisation's key) never holds,
# whatever it was given: the triage desk (its candidates are other organisations), new
# enquiries (the contact centre's and the citizens' doors), the privacy desk (anyone's
# personal data) and admin (all of these). Everything else it holds is for its own
# organisation's parts only (Caller.may_act_for, app.intake.reading.Audience).
ORGANISATION_WITHHELD = frozenset(
    {Scope.triage, Scope.enquiries_submit, Scope.privacy, Scope.admin}
)


def held_scopes(stored: Iterable[str], organisation_id: str | None) -> frozenset[Scope]:
    """The scopes a caller holds: those stored that this code knows, less what a caller for
    one organisation never holds (the one rule, for people and keys alike)."""
    scopes = frozenset(Scope(s) for s in stored if s in Scope.__members__.values())
    return scopes - ORGANISATION_WITHHELD if organisation_id is not None else scopes


@dataclass(frozen=True)
class Person:
    """The member of staff behind a personal token (app/clients/staff.py)."""

    id: uuid.UUID
    name: str
    role: str  # a StaffRole
    # A partner's staff see and act on this organisation's part only; None: the gateway's own.
    organisation_id: str | None

    @property
    def actor_id(self) -> str:
        """How the timeline and the audit log name this person."""
        return f"staff:{self.id}"


@dataclass(frozen=True)
class Caller:
    """The authenticated client of one request: a system's key or a person's token."""

    id: uuid.UUID
    name: str
    scopes: frozenset[Scope]
    channel: str | None
    person: Person | None = None
    # An organisation's key (`iap clients create --organisation`): its scopes are for that
    # organisation's parts only, as a partner's staff's are.
    organisation: str | None = None

    def allows(self, scope: Scope) -> bool:
        return Scope.admin in self.scopes or scope in self.scopes

    @property
    def client_id(self) -> str:
        """How the enquiries and idempotency tables name this client."""
        return str(self.id)

    @property
    def organisation_id(self) -> str | None:
        """The one organisation whose parts this caller may see and change; None: any."""
        return self.person.organisation_id if self.person else self.organisation

    def may_act_for(self, organisation_id: str) -> bool:
        """Whether this caller may see and change that organisation's part."""
        return self.organisation_id is None or self.organisation_id == organisation_id


@dataclass(frozen=True)
class ClientInfo:
    """A client as listed: never its secret."""

    id: uuid.UUID
    name: str
    key_id: str
    scopes: list[str]
    channel: str | None
    organisation_id: str | None
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, client: ApiClient) -> ClientInfo:
        """The client as listed: its fields read from the row by name, the secret's hash left
        behind."""
        return cls(**{field.name: getattr(client, field.name) for field in fields(cls)})

    @property
    def key_hint(self) -> str:
        return f"{KEY_PREFIX}{self.key_id}_…"


def hash_secret(secret: str) -> str:
    """SHA-256, not a slow password hash: the secret is 256 random bits, so there is nothing to
    guess and a slow hash (bcrypt, argon2) would only add its cost to every request."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_key() -> tuple[str, str, str]:
    """(key id, secret, whole key)."""
    key_id = secrets.token_hex(_KEY_ID_LENGTH // 2)
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{KEY_PREFIX}{key_id}_{secret}"


def split_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a key in our form, or None."""
    if not key.startswith(KEY_PREFIX) or not len(KEY_PREFIX) + 13 < len(key) <= 200:
        return None
    rest = key[len(KEY_PREFIX) :]
    key_id, separator, secret = (
        rest[:_KEY_ID_LENGTH],
        rest[_KEY_ID_LENGTH],
        rest[_KEY_ID_LENGTH + 1 :],
    )
    if separator != "_" or not secret:
        return None
    return key_id, secret


# Compared against when no client has the key id, so a miss costs what a wrong secret costs.
_NO_SUCH_HASH = hash_secret(secrets.token_urlsafe(32))


# Recently read clients, by (engine, key id): the look-up cost more than the rest of an intake.
# A key id no client has is kept too (as None), so an unknown id costs what a known one does
# and its answer cannot tell an attacker which ids exist. Ids are random: a client made later
# is not asked for by that id before it exists.
_Found = tuple[ApiClient, Person | None] | None
_RECENT: dict[tuple[int, str], tuple[float, _Found]] = {}
# The reads in flight, by the same slot (see _client_row).
_LOOKUPS: dict[tuple[int, str], asyncio.Future[_Found]] = {}


async def authenticate(
    engine: AsyncEngine, key: str, *, cache_seconds: float = 0.0
) -> Caller | None:
    """The client holding this key, or None if it is unknown, wrong or revoked.

    With cache_seconds, a client read from the database is reused for that long: a key revoked
    in another process stops working within that time (in this one, at once).
    """
    parts = split_key(key)
    if parts is None:
        return None
    key_id, secret = parts
    found = await _client_row(engine, key_id, cache_seconds)
    row, person = found if found is not None else (None, None)
    stored = row.secret_hash if row is not None else _NO_SUCH_HASH
    matches = hmac.compare_digest(hash_secret(secret), stored)
    if row is None or not matches or row.revoked_at is not None:
        return None
    organisation_id = person.organisation_id if person else row.organisation_id
    return Caller(
        id=row.id,
        name=row.name,
        scopes=held_scopes(row.scopes, organisation_id),
        channel=row.channel,
        person=person,
        organisation=row.organisation_id if person is None else None,
    )


async def _client_row(engine: AsyncEngine, key_id: str, cache_seconds: float) -> _Found:
    """The client with this key id and, for a person's token, the person (a disabled person's
    token is not found).

    With a cache, one look-up per key is in flight at a time: requests that find the entry
    expired together wait for the same read, rather than each taking a database connection at
    once (under load every request in flight did, and opening the pool's connections together
    held the event loop for a third of a second)."""
    if cache_seconds <= 0:
        return await _read_client(engine, key_id)
    slot = (id(engine), key_id)
    now = time.monotonic()
    recent = _RECENT.get(slot)
    if recent is not None and recent[0] > now:
        return recent[1]
    lookup = _LOOKUPS.get(slot)
    if lookup is None or lookup.get_loop() is not asyncio.get_running_loop():
        lookup = asyncio.ensure_future(_read_client(engine, key_id))
        _LOOKUPS[slot] = lookup
        lookup.add_done_callback(partial(_remember, slot, now + cache_seconds))
    # Shielded: a caller that goes away does not cancel the read the others wait for.
    return await asyncio.shield(lookup)


def _remember(slot: tuple[int, str], until: float, lookup: asyncio.Future[_Found]) -> None:
    if _LOOKUPS.get(slot) is not lookup:
        return  # forgotten while it was read: it may be out of date
    del _LOOKUPS[slot]
    if lookup.cancelled() or lookup.exception() is not None:
        return
    if len(_RECENT) > 10_000:
        _RECENT.clear()
    _RECENT[slot] = (until, lookup.result())


async def _read_client(engine: AsyncEngine, key_id: str) -> _Found:
    s = staff_table.c
    query = (
        select(
            api_client_table,
            s.name.label("staff_name"),
            s.role,
            s.organisation_id.label("staff_organisation_id"),
        )
        .outerjoin(staff_table, s.id == c.staff_id)
        .where(c.key_id == key_id)
        .where(or_(c.staff_id.is_(None), s.disabled_at.is_(None)))
    )
    async with reading(engine) as conn:
        mapped = (await conn.execute(query)).mappings().first()
    if mapped is None:
        return None
    row = ApiClient(**{col.key: mapped[col.key] for col in api_client_table.c})
    person = (
        Person(
            id=row.staff_id,
            name=mapped["staff_name"],
            role=mapped["role"],
            organisation_id=mapped["staff_organisation_id"],
        )
        if row.staff_id is not None
        else None
    )
    return (row, person)


def forget(engine: AsyncEngine, key_id: str) -> None:
    """Drop a key id from this process's cache: it was made, revoked or its person changed."""
    _RECENT.pop((id(engine), key_id), None)
    _LOOKUPS.pop((id(engine), key_id), None)


async def create_client(
    engine: AsyncEngine,
    *,
    name: str,
    scopes: list[Scope],
    channel: str | None = None,
    conn: AsyncConnection | None = None,
    staff_id: uuid.UUID | None = None,
    organisation_id: str | None = None,
    catalogue: Catalogue | None = None,
) -> tuple[ClientInfo, str]:
    """A new client and its key (shown once; only its hash is kept); in `conn`'s transaction
    when given (a person's token is made with the person). An organisation's key names a
    partner organisation of `catalogue`."""
    if organisation_id is not None:
        _check_organisation(organisation_id, scopes, catalogue)
    key_id, secret, key = _new_key()
    client = ApiClient(
        id=uuid.uuid4(),
        name=name,
        key_id=key_id,
        secret_hash=hash_secret(secret),
        scopes=sorted({s.value for s in scopes}),
        channel=channel,
        staff_id=staff_id,
        organisation_id=organisation_id,
        created_at=utcnow(),
        revoked_at=None,
    )
    try:
        if conn is not None:
            await conn.execute(api_client_table.insert(), client.model_dump())
        else:
            async with writing(engine) as own:
                await own.execute(api_client_table.insert(), client.model_dump())
        forget(engine, key_id)  # were it asked for before it existed
    except IntegrityError as exc:
        raise ClientExists(f"A client named '{name}' already exists.") from exc
    return ClientInfo.of(client), key


def _check_organisation(
    organisation_id: str, scopes: list[Scope], catalogue: Catalogue | None
) -> None:
    """An organisation's key is for a partner the catalogue knows, and asks for nothing a
    caller for one organisation never holds (422 otherwise: nothing is made)."""
    if catalogue is None or organisation_id not in catalogue.organisations:
        raise ValidationFailed(f"No organisation has the id '{organisation_id}'.")
    if organisation_id == catalogue.triage.id:
        raise ValidationFailed(
            "The triage desk is the contact centre's own: its keys need no organisation."
        )
    withheld = sorted(set(scopes) & ORGANISATION_WITHHELD)
    if withheld:
        raise ValidationFailed(
            f"An organisation's key cannot hold {', '.join(withheld)}: those are the "
            "contact centre's own."
        )


async def list_clients(engine: AsyncEngine) -> list[ClientInfo]:
    """Every client, revoked ones included, by name."""
    async with reading(engine) as conn:
        clients = await fetch_all(conn, ApiClient, select(ApiClient).order_by(c.name))
    return [ClientInfo.of(client) for client in clients]


async def revoke_client(engine: AsyncEngine, name_or_id: str) -> ClientInfo:
    """Stop a client's key working at once (on its next request, in every process)."""
    as_id = _uuid(name_or_id)
    match = or_(c.name == name_or_id, c.key_id == name_or_id, *([c.id == as_id] if as_id else []))
    async with writing(engine) as conn:
        found = await fetch_all(conn, ApiClient, select(ApiClient).where(match))
        if len(found) != 1:
            raise NotFound(
                f"No client is named or numbered '{name_or_id}'."
                if not found
                else f"More than one client matches '{name_or_id}'; give its id."
            )
        client = found[0]
        forget(engine, client.key_id)
        if client.revoked_at is None:
            client.revoked_at = utcnow()
            await conn.execute(
                update(api_client_table)
                .where(c.id == client.id)
                .values(revoked_at=client.revoked_at)
            )
    return ClientInfo.of(client)


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def _key_id_known(engine: AsyncEngine, key_id: str) -> bool:
    async with reading(engine) as conn:
        found = await conn.scalar(select(c.id).where(c.key_id == key_id))
    return found is not None


async def development_key(engine: AsyncEngine, kept: str | None) -> str:
    """The development client's key (all scopes): `kept` while it still works, or given to the
    client in a database that does not know it yet (a new development database), otherwise a
    new one. For the development default only."""
    if kept:
        caller = await authenticate(engine, kept)
        if caller is not None and caller.name == DEVELOPMENT_CLIENT:
            return kept
    parts = split_key(kept) if kept else None
    if kept and parts is not None and not await _key_id_known(engine, parts[0]):
        key_id, secret, key = parts[0], parts[1], kept
    else:
        key_id, secret, key = _new_key()
    values = {"key_id": key_id, "secret_hash": hash_secret(secret), "revoked_at": None}
    async with writing(engine) as conn:
        reissued = await conn.execute(
            update(api_client_table).where(c.name == DEVELOPMENT_CLIENT).values(**values)
        )
        if reissued.rowcount == 0:
            await conn.execute(
                api_client_table.insert(),
                {
                    "id": uuid.uuid4(),
                    "name": DEVELOPMENT_CLIENT,
                    "scopes": [Scope.admin.value],
                    "channel": None,
                    "created_at": utcnow(),
                    **values,
                },
            )
    forget(engine, key_id)
    return key
