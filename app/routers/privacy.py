"""HTTP for personal data duties: subject access, erasure (scope privacy) and the audit log
(scope admin). The citizen is named in the body, never in a URL that logs would keep."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import Admin, Attachments, Catalogue, Engine, PrivacyOfficer, Sealer
from app.api.problems import documented_problems
from app.api.ratelimit import RATE_LIMITED_RESPONSE
from app.core.audit import Actor
from app.core.types import NoNul
from app.core.vocabulary import AuditAction
from app.privacy import audit
from app.privacy import service as privacy
from app.privacy.schemas import AuditPage, ErasureOut, Subject, SubjectAccessExport

router = APIRouter(tags=["privacy"], responses={429: RATE_LIMITED_RESPONSE})
_SUBJECT_PROBLEMS = documented_problems(
    {422: "Neither a valid email nor phone"}, lacks="the scope privacy"
)


@router.post(
    "/v1/privacy/subject-access",
    response_model=SubjectAccessExport,
    summary="Export everything held about a citizen",
    responses=_SUBJECT_PROBLEMS,
)
async def subject_access(
    subject: Subject,
    engine: Engine,
    catalogue: Catalogue,
    sealer: Sealer,
    caller: PrivacyOfficer,
) -> SubjectAccessExport:
    """Every enquiry made with this email or phone number (a phone matches however it is
    written, +44 or 0): the record with the citizen's details, the organisations that received
    it and which details each was sent, and what they reported back. Written to the audit log.
    """
    return await privacy.export_subject(
        engine=engine,
        catalogue=catalogue,
        sealer=sealer,
        subject=subject,
        actor=Actor.of(caller),
    )


@router.post(
    "/v1/privacy/erasure",
    response_model=ErasureOut,
    summary="Erase a citizen's personal data",
    responses=_SUBJECT_PROBLEMS,
)
async def erasure(
    subject: Subject,
    engine: Engine,
    catalogue: Catalogue,
    sealer: Sealer,
    store: Attachments,
    caller: PrivacyOfficer,
) -> ErasureOut:
    """Anonymise every enquiry made with this email or phone number: the citizen's details,
    the description, the address and free-text answers go; the service, status, areas and
    timeline stay. Deliveries not yet made are called off, and each organisation that received
    the details gets a `privacy.erasure_requested` event. Written to the audit log.
    """
    return await privacy.erase_subject(
        engine=engine,
        catalogue=catalogue,
        sealer=sealer,
        store=store,
        subject=subject,
        actor=Actor.of(caller),
    )


@router.get(
    "/v1/audit",
    response_model=AuditPage,
    summary="Read the audit log, newest first",
    responses=documented_problems({422: "The cursor is not valid"}, lacks="the scope admin"),
)
async def audit_log(
    engine: Engine,
    caller: Admin,
    action: Annotated[
        NoNul | None, Query(max_length=64, examples=[AuditAction.privacy_erase])
    ] = None,
    subject: Annotated[
        NoNul | None, Query(max_length=128, description="An enquiry reference or subject hash")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> AuditPage:
    """Who read an enquiry's personal data, who exported or erased a citizen's, and what each
    retention run anonymised. Entries are never changed or removed."""
    return await audit.entries(
        engine=engine, action=action, subject=subject, cursor=cursor, limit=limit
    )
