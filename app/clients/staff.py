"""Staff: the people who work enquiries, beside the API keys of machines.

A person has a role, which gives their scopes, and, if they work for a partner, the one
organisation whose parts they may see and change (a police officer, the police's part only).
Each has a personal API token for scripts (an API client of their own, `staff-…`, whose key
is shown once) and may have a password, hashed with argon2id, for the console to sign them in.
Timelines and the audit log name the person (app.core.audit.Actor).

The token's client is named by the person's id, never by their name or email, so logs that
name the client carry no personal data.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.catalogue.catalogue import Catalogue
from app.clients.service import ORGANISATION_WITHHELD, Scope, create_client, forget
from app.core import audit
from app.core.audit import Actor
from app.core.db import reading, writing
from app.core.errors import ClientExists, NotFound, ValidationFailed
from app.core.models import Staff, api_client_table, fetch_all, staff_table, utcnow
from app.core.vocabulary import AuditAction

s = staff_table.c


class StaffRole(StrEnum):
    agent = "agent"  # answers callers, works the triage desk, reads callers' history
    supervisor = "supervisor"  # an agent who also runs the dead-letter desk and stuck work
    data_protection_officer = "data-protection-officer"  # subject access and erasure
    administrator = "administrator"  # everything


ROLE_SCOPES: Mapping[StaffRole, frozenset[Scope]] = {
    StaffRole.agent: frozenset(
        {Scope.enquiries_submit, Scope.enquiries_read_all, Scope.triage, Scope.parts_update}
    ),
    StaffRole.supervisor: frozenset(
        {
            Scope.enquiries_submit,
            Scope.enquiries_read_all,
            Scope.triage,
            Scope.parts_update,
            Scope.deliveries_manage,
            Scope.webhooks_manage,
        }
    ),
    StaffRole.data_protection_officer: frozenset({Scope.enquiries_read_all, Scope.privacy}),
    StaffRole.administrator: frozenset({Scope.admin}),
}
# A partner's staff work their organisation's parts: never the triage desk (its candidates
# are other organisations), never anyone's personal data beyond their own parts
# (ORGANISATION_WITHHELD, the rule for organisation keys too).
PARTNER_ROLES = (StaffRole.agent, StaffRole.supervisor)

_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) parameters
MIN_PASSWORD_LENGTH = 12


def scopes_for(role: StaffRole, organisation_id: str | None) -> frozenset[Scope]:
    """What a person in this role may do; a partner's staff less."""
    scopes = ROLE_SCOPES[role]
    return scopes - ORGANISATION_WITHHELD if organisation_id else scopes


@dataclass(frozen=True)
class StaffInfo:
    """A person as listed: never their password hash."""

    id: uuid.UUID
    name: str
    email: str
    role: StaffRole
    organisation_id: str | None
    created_at: datetime
    disabled_at: datetime | None
    has_password: bool

    @classmethod
    def of(cls, row: Staff) -> StaffInfo:
        return cls(
            id=row.id,
            name=row.name,
            email=row.email,
            role=StaffRole(row.role),
            organisation_id=row.organisation_id,
            created_at=row.created_at,
            disabled_at=row.disabled_at,
            has_password=row.password_hash is not None,
        )


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    return _hasher.hash(password)


def _token_client_name(staff_id: uuid.UUID) -> str:
    return f"staff-{staff_id.hex[:12]}"


async def create_staff(
    engine: AsyncEngine,
    catalogue: Catalogue,
    *,
    name: str,
    email: str,
    role: StaffRole,
    organisation_id: str | None = None,
    password: str | None = None,
    by: Actor,
) -> tuple[StaffInfo, str]:
    """A new person and their personal API token (shown once)."""
    if organisation_id is not None:
        if organisation_id not in catalogue.organisations:
            raise ValidationFailed(f"No organisation has the id '{organisation_id}'.")
        if organisation_id == catalogue.triage.id:
            organisation_id = None  # the contact centre's own staff work every enquiry
        elif role not in PARTNER_ROLES:
            raise ValidationFailed(
                f"A partner's staff can be {' or '.join(PARTNER_ROLES)}, not {role}."
            )
    row = Staff(
        id=uuid.uuid4(),
        name=name.strip(),
        email=email.strip().lower(),
        role=role,
        organisation_id=organisation_id,
        password_hash=hash_password(password) if password is not None else None,
        created_at=utcnow(),
        disabled_at=None,
    )
    try:
        async with writing(engine) as conn:
            await conn.execute(staff_table.insert(), row.model_dump())
            _, token = await create_client(
                engine,
                name=_token_client_name(row.id),
                scopes=sorted(scopes_for(role, organisation_id)),
                conn=conn,
                staff_id=row.id,
            )
            await audit.record(
                conn,
                actor=by,
                action=AuditAction.staff_created,
                subject=f"staff:{row.id}",
                detail={"role": role.value, "organisation_id": organisation_id},
            )
    except (IntegrityError, ClientExists) as exc:
        raise ClientExists(f"A member of staff with the email {row.email} exists.") from exc
    return StaffInfo.of(row), token


async def list_staff(engine: AsyncEngine) -> list[StaffInfo]:
    """Everyone, disabled people included, by name."""
    async with reading(engine) as conn:
        rows = await fetch_all(conn, Staff, select(Staff).order_by(s.name, s.email))
    return [StaffInfo.of(row) for row in rows]


async def find_staff(engine: AsyncEngine, email_or_id: str) -> StaffInfo:
    """The person with this email or id (404 if none)."""
    return StaffInfo.of(await _find(engine, email_or_id))


async def _find(engine: AsyncEngine, email_or_id: str) -> Staff:
    try:
        match = s.id == uuid.UUID(email_or_id)
    except ValueError:
        match = s.email == email_or_id.strip().lower()
    async with reading(engine) as conn:
        found = await fetch_all(conn, Staff, select(Staff).where(match))
    if not found:
        raise NotFound(f"No member of staff has the email or id '{email_or_id}'.")
    return found[0]


async def disable_staff(engine: AsyncEngine, email_or_id: str, *, by: Actor) -> StaffInfo:
    """Stop the person's token and password working at once (in this process; in others
    within the key cache's time); their name stays on what they did."""
    row = await _find(engine, email_or_id)
    if row.disabled_at is None:
        row.disabled_at = utcnow()
        async with writing(engine) as conn:
            await conn.execute(
                update(staff_table).where(s.id == row.id).values(disabled_at=row.disabled_at)
            )
            await conn.execute(
                update(api_client_table)
                .where(api_client_table.c.staff_id == row.id)
                .where(api_client_table.c.revoked_at.is_(None))
                .values(revoked_at=row.disabled_at)
            )
            await audit.record(
                conn, actor=by, action=AuditAction.staff_disabled, subject=f"staff:{row.id}"
            )
            key_ids = (
                await conn.scalars(
                    select(api_client_table.c.key_id).where(api_client_table.c.staff_id == row.id)
                )
            ).all()
        for key_id in key_ids:
            forget(engine, key_id)
    return StaffInfo.of(row)


async def set_password(engine: AsyncEngine, email_or_id: str, password: str) -> StaffInfo:
    row = await _find(engine, email_or_id)
    hashed = hash_password(password)
    async with writing(engine) as conn:
        await conn.execute(update(staff_table).where(s.id == row.id).values(password_hash=hashed))
    row.password_hash = hashed
    return StaffInfo.of(row)


# Verified against when no active person has the email, so a miss costs what a wrong password
# costs and the answer cannot tell which emails are staff.
_NO_SUCH_PASSWORD = _hasher.hash("no member of staff has this password")


async def check_password(engine: AsyncEngine, email: str, password: str) -> StaffInfo | None:
    """The active person with this email and password, or None (for the console's sign-in)."""
    async with reading(engine) as conn:
        found = await fetch_all(
            conn,
            Staff,
            select(Staff)
            .where(func.lower(s.email) == email.strip().lower())
            .where(s.disabled_at.is_(None)),
        )
    row = found[0] if found else None
    stored = row.password_hash if row is not None and row.password_hash else _NO_SUCH_PASSWORD
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row.password_hash is None:
        return None
    return StaffInfo.of(row)
