"""Staff signed in to the console: sign-in by password (and a second factor if the person has
one), or by the council's single sign-on; lockout after repeated failures; sessions that end
after an idle time, after a working day, at sign-out, and when the person is disabled.

The session cookie holds a random token; the database keeps only its SHA-256 (a stolen
database opens no session). A token is made fresh at every step of signing in and never taken
from the browser, so a session cannot be fixed in advance. The person's rights are their
personal API client's scopes (app/clients/staff.py): the console calls the same services with
the same Caller the API would build from their token.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import pyotp
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.clients.service import Caller, Person, Scope, hash_secret, held_scopes
from app.clients.staff import StaffInfo, check_password
from app.core import audit
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.db import reading, writing
from app.core.models import (
    ConsoleSession,
    Staff,
    api_client_table,
    console_session_table,
    fetch_all,
    fetch_one,
    sign_in_lockout_table,
    staff_table,
    utcnow,
)
from app.core.settings import ConsoleSettings
from app.core.vocabulary import AuditAction

c = console_session_table.c
s = staff_table.c
lk = sign_in_lockout_table.c
TOTP_ISSUER = "IAP console"


class Outcome(StrEnum):
    signed_in = "signed-in"
    second_factor_due = "second-factor-due"  # the password was right: a code is asked next
    refused = "refused"  # a wrong email, password or code (the same answer for each)
    locked = "locked"  # too many failures for this email: nothing is checked until it lapses


@dataclass(frozen=True)
class SignIn:
    """What a sign-in step gave: its outcome and, unless refused or locked, the new session's
    token for the cookie."""

    outcome: Outcome
    token: str | None = None


@dataclass(frozen=True)
class SignedIn:
    """The person behind a console request, and the Caller the services are called with."""

    session_id: uuid.UUID
    token_hash: str
    staff: StaffInfo
    caller: Caller
    second_factor_due: bool

    @property
    def csrf_binding(self) -> bytes:
        """What the session's forms are bound to (Sealer.form_tokens)."""
        return bytes.fromhex(self.token_hash)

    def allows(self, scope: Scope) -> bool:
        return self.caller.allows(scope)


class Sessions:
    """Signing in and out, and finding the person behind a session token."""

    def __init__(self, engine: AsyncEngine, sealer: Sealer, settings: ConsoleSettings) -> None:
        self.engine = engine
        self.sealer = sealer
        self.settings = settings

    async def sign_in(self, email: str, password: str) -> SignIn:
        """The first step: email and password. A locked email is refused before the password
        is looked at (so guessing stops), whether or not it is a person's."""
        email_hash = self._email_hash(email)
        if await self._locked(email_hash):
            return SignIn(Outcome.locked)
        person = await check_password(self.engine, email, password)
        if person is None:
            return SignIn(await self._failed(email_hash))
        await self._cleared(email_hash)
        due = await self._has_second_factor(person.id)
        token = await self._open(person.id, second_factor_due=due, why="password")
        return SignIn(Outcome.second_factor_due if due else Outcome.signed_in, token)

    async def second_factor(self, pending: SignedIn, code: str) -> SignIn:
        """The second step: the code from the person's authenticator app, good once. The
        half-open session is ended and a new one opened (a fresh token)."""
        email_hash = self._email_hash(pending.staff.email)
        if await self._locked(email_hash):
            return SignIn(Outcome.locked)
        if not await self._code_is_good(pending.staff.id, code):
            return SignIn(await self._failed(email_hash))
        await self._cleared(email_hash)
        await self.sign_out(pending.token_hash)
        token = await self._open(pending.staff.id, second_factor_due=False, why="second-factor")
        return SignIn(Outcome.signed_in, token)

    async def single_sign_on(self, subject: str, email: str | None) -> SignIn:
        """Signed in by the council's OpenID Connect provider: the person whose subject it is,
        or the first time, the active person with the provider's verified email (then bound
        to the subject). Refused for anyone else: accounts are made by `iap staff create`."""
        async with writing(self.engine) as conn:
            row = await fetch_one(
                conn,
                Staff,
                select(Staff).where(s.oidc_subject == subject).where(s.disabled_at.is_(None)),
            )
            if row is None and email:
                row = await fetch_one(
                    conn,
                    Staff,
                    select(Staff)
                    .where(s.email == email.strip().lower())
                    .where(s.oidc_subject.is_(None))
                    .where(s.disabled_at.is_(None)),
                )
                if row is not None:
                    await conn.execute(
                        update(staff_table).where(s.id == row.id).values(oidc_subject=subject)
                    )
        if row is None:
            return SignIn(Outcome.refused)
        return SignIn(
            Outcome.signed_in, await self._open(row.id, second_factor_due=False, why="sso")
        )

    async def find(self, token: str | None) -> SignedIn | None:
        """The live session with this token, or None: unknown, ended, idle too long, older
        than a working day, or its person disabled. Each request moves its idle clock."""
        if not token or len(token) > 100:
            return None
        token_hash = hash_secret(token)
        now = utcnow()
        query = (
            select(console_session_table, staff_table.c.disabled_at.label("staff_disabled_at"))
            .join(staff_table, s.id == c.staff_id)
            .where(c.token_hash == token_hash)
            .where(c.ended_at.is_(None))
        )
        async with reading(self.engine) as conn:
            found = (await conn.execute(query)).mappings().first()
        if found is None or found["staff_disabled_at"] is not None:
            return None
        session = ConsoleSession(**{col.key: found[col.key] for col in console_session_table.c})
        if self._expired(session, now):
            await self.sign_out(token_hash)
            return None
        person = await self._person(session.staff_id)
        if person is None:
            return None
        staff, caller = person
        if now - session.last_seen_at > timedelta(seconds=30):  # one write a half-minute at most
            async with writing(self.engine) as conn:
                await conn.execute(
                    update(console_session_table).where(c.id == session.id).values(last_seen_at=now)
                )
        return SignedIn(session.id, token_hash, staff, caller, session.second_factor_due)

    async def sign_out(self, token_hash: str) -> None:
        async with writing(self.engine) as conn:
            await conn.execute(
                update(console_session_table)
                .where(c.token_hash == token_hash)
                .where(c.ended_at.is_(None))
                .values(ended_at=utcnow())
            )

    async def enrol_second_factor(self, staff_id: uuid.UUID, *, by: Actor) -> str:
        """A new TOTP secret for the person (replacing any), as the otpauth:// URI their
        authenticator app reads; their open sessions end."""
        secret = pyotp.random_base32()
        async with writing(self.engine) as conn:
            email = await conn.scalar(select(s.email).where(s.id == staff_id))
            await conn.execute(
                update(staff_table)
                .where(s.id == staff_id)
                .values(totp_secret=self.sealer.seal({"totp": secret}), totp_last_step=None)
            )
            await self._end_all(conn, staff_id)
            await audit.record(
                conn,
                actor=by,
                action=AuditAction.staff_second_factor,
                subject=f"staff:{staff_id}",
            )
        return pyotp.TOTP(secret).provisioning_uri(name=str(email), issuer_name=TOTP_ISSUER)

    def _expired(self, session: ConsoleSession, now: datetime) -> bool:
        idle = timedelta(minutes=self.settings.idle_minutes)
        longest = timedelta(hours=self.settings.session_hours)
        if session.second_factor_due:
            longest = min(longest, timedelta(minutes=5))  # a code is typed within minutes
        return now - session.last_seen_at > idle or now - session.created_at > longest

    async def _open(self, staff_id: uuid.UUID, *, second_factor_due: bool, why: str) -> str:
        token = secrets.token_urlsafe(32)
        now = utcnow()
        oldest = now - timedelta(hours=self.settings.session_hours)
        async with writing(self.engine) as conn:
            # Sessions past any use are dropped as new ones open: the table stays small.
            await conn.execute(delete(console_session_table).where(c.created_at < oldest))
            await conn.execute(
                console_session_table.insert(),
                {
                    "id": uuid.uuid4(),
                    "token_hash": hash_secret(token),
                    "staff_id": staff_id,
                    "created_at": now,
                    "last_seen_at": now,
                    "second_factor_due": second_factor_due,
                    "ended_at": None,
                },
            )
            if not second_factor_due:
                await audit.record(
                    conn,
                    actor=Actor(f"staff-{staff_id.hex[:12]}", f"staff:{staff_id}"),
                    action=AuditAction.staff_signed_in,
                    subject=f"staff:{staff_id}",
                    detail={"by": why},
                )
        return token

    async def _end_all(self, conn: AsyncConnection, staff_id: uuid.UUID) -> None:
        await conn.execute(
            update(console_session_table)
            .where(c.staff_id == staff_id)
            .where(c.ended_at.is_(None))
            .values(ended_at=utcnow())
        )

    async def _person(self, staff_id: uuid.UUID) -> tuple[StaffInfo, Caller] | None:
        """The person and the Caller of their personal API client (its scopes are theirs)."""
        a = api_client_table.c
        async with reading(self.engine) as conn:
            rows = await fetch_all(conn, Staff, select(Staff).where(s.id == staff_id))
            client = (
                await conn.execute(
                    select(a.id, a.name, a.scopes, a.channel)
                    .where(a.staff_id == staff_id)
                    .where(a.revoked_at.is_(None))
                    .order_by(a.created_at.desc())
                    .limit(1)
                )
            ).first()
        if not rows or rows[0].disabled_at is not None or client is None:
            return None
        staff = StaffInfo.of(rows[0])
        caller = Caller(
            id=client.id,
            name=client.name,
            scopes=held_scopes(client.scopes, staff.organisation_id),
            channel=client.channel,
            person=Person(
                id=staff.id, name=staff.name, role=staff.role, organisation_id=staff.organisation_id
            ),
        )
        return staff, caller

    async def _has_second_factor(self, staff_id: uuid.UUID) -> bool:
        async with reading(self.engine) as conn:
            secret = await conn.scalar(select(s.totp_secret).where(s.id == staff_id))
        return secret is not None

    async def _code_is_good(self, staff_id: uuid.UUID, code: str) -> bool:
        """The code for now (or the step either side, for a clock a little out), and never a
        step already used: a code overheard or replayed does not work twice."""
        code = code.replace(" ", "").strip()
        if not code.isdigit() or len(code) != 6:
            return False
        async with writing(self.engine) as conn:
            found = (
                await conn.execute(select(s.totp_secret, s.totp_last_step).where(s.id == staff_id))
            ).first()
            if found is None or found.totp_secret is None:
                return False
            opened = self.sealer.open(found.totp_secret) or {}
            totp = pyotp.TOTP(str(opened.get("totp", "")))
            now = utcnow()
            step = totp.timecode(now)
            for candidate in (step - 1, step, step + 1):
                if found.totp_last_step is not None and candidate <= found.totp_last_step:
                    continue
                if secrets.compare_digest(totp.generate_otp(candidate), code):
                    await conn.execute(
                        update(staff_table).where(s.id == staff_id).values(totp_last_step=candidate)
                    )
                    return True
        return False

    def _email_hash(self, email: str) -> str:
        return self.sealer.email_hash(email.strip().lower()) or ""

    async def _locked(self, email_hash: str) -> bool:
        async with reading(self.engine) as conn:
            until = await conn.scalar(select(lk.locked_until).where(lk.email_hash == email_hash))
        return until is not None and until > utcnow()

    async def _failed(self, email_hash: str) -> Outcome:
        """One more failure for the email in the window; locked when it reaches the limit."""
        try:
            return await self._count_failure(email_hash)
        except IntegrityError:  # another request counted the first failure at the same time
            return await self._count_failure(email_hash)

    async def _count_failure(self, email_hash: str) -> Outcome:
        now = utcnow()
        window = timedelta(minutes=self.settings.lockout_minutes)
        async with writing(self.engine) as conn:
            row = (
                await conn.execute(
                    select(lk.failures, lk.first_failed_at).where(lk.email_hash == email_hash)
                )
            ).first()
            if row is None or now - row.first_failed_at > window:
                failures, first = 1, now
                await conn.execute(delete(sign_in_lockout_table).where(lk.email_hash == email_hash))
                await conn.execute(
                    sign_in_lockout_table.insert(),
                    {"email_hash": email_hash, "failures": 1, "first_failed_at": now},
                )
            else:
                failures, first = row.failures + 1, row.first_failed_at
            locked = failures >= self.settings.lockout_failures
            await conn.execute(
                update(sign_in_lockout_table)
                .where(lk.email_hash == email_hash)
                .values(
                    failures=failures,
                    first_failed_at=first,
                    locked_until=now + window if locked else None,
                )
            )
        return Outcome.locked if locked else Outcome.refused

    async def _cleared(self, email_hash: str) -> None:
        async with writing(self.engine) as conn:
            await conn.execute(delete(sign_in_lockout_table).where(lk.email_hash == email_hash))
