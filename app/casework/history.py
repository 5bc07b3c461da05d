"""A caller's history: their earlier enquiries, found by the phone number or email they gave.

Found through the keyed hashes intake stores beside the sealed details (app.core.crypto), so
a phone number matches however it is typed ("07700 900123", "+44 7700 900123") and an email
whatever its case. For staff who work every enquiry (enquiries:read-all); a partner's staff
find only enquiries with their organisation's part. A page of summaries, not the
data-protection officer's full export; each search is audited, without the phone or email.
"""

from __future__ import annotations

from dataclasses import replace

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from app.clients.service import Caller, Scope
from app.core import audit
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.db import writing
from app.core.errors import FieldError, Forbidden, ValidationFailed
from app.core.vocabulary import AuditAction
from app.intake.reading import EnquiryFilter, count_enquiries, list_enquiries
from app.intake.schemas import EnquiryPage

log = structlog.get_logger()


async def caller_history(
    *,
    engine: AsyncEngine,
    sealer: Sealer,
    caller: Caller,
    filters: EnquiryFilter,
    phone: str | None = None,
    email: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> EnquiryPage:
    """The enquiries of the caller with this phone number or email, newest first, within
    `filters` (the reader's own scope); the search is written to the audit log."""
    if not caller.allows(Scope.enquiries_read_all):
        raise Forbidden(
            "Finding a caller's enquiries by phone or email needs the scope "
            "enquiries:read-all (a citizen's full record is a subject access request).",
            needs=Scope.enquiries_read_all.value,
        )
    kind, digest = _lookup(sealer, phone=phone, email=email)
    found = (
        replace(filters, phone_hash=digest)
        if kind == "phone"
        else replace(filters, email_hash=digest)
    )
    page = await list_enquiries(engine=engine, filters=found, cursor=cursor, limit=limit)
    total = await count_enquiries(engine=engine, filters=found)
    async with writing(engine) as conn:
        await audit.record(
            conn,
            actor=Actor.of(caller),
            action=AuditAction.caller_history,
            # As subject access names the citizen: a keyed hash, never the address itself.
            subject=f"{kind}:{digest[:32]}",
            detail={"by": kind, "found": total},
        )
    log.info("enquiry.caller_history", by=kind, found=total)
    return page


def _lookup(sealer: Sealer, *, phone: str | None, email: str | None) -> tuple[str, str]:
    """(kind, keyed hash) of the one thing searched by."""
    if phone is not None and email is not None:
        raise ValidationFailed(
            "Search by phone or by email, not both at once.",
            [
                FieldError("give phone or email, not both", parameter="phone"),
                FieldError("give phone or email, not both", parameter="email"),
            ],
        )
    if phone is not None:
        digest = sealer.phone_hash(phone)
        if digest is None:
            raise ValidationFailed(
                "That phone number has no digits.",
                [FieldError("should be a phone number", parameter="phone")],
            )
        return "phone", digest
    digest = sealer.email_hash(email)
    if digest is None:
        raise ValidationFailed(
            "Give the email address to search by.",
            [FieldError("should be an email address", parameter="email")],
        )
    return "email", digest
