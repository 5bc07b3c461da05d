"""Request and response bodies of subject access, erasure and the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

from app.core.types import Strict
from app.core.vocabulary import AuditAction, ReceivedVia
from app.intake.schemas import (
    EnquiryOut,
)


class Subject(Strict):
    """A citizen, named by the email or phone number they gave (either, or both)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "sam.taylor@example.org"}],
            "anyOf": [
                {"required": ["email"], "properties": {"email": {"type": "string"}}},
                {"required": ["phone"], "properties": {"phone": {"type": "string"}}},
            ],
        }
    )

    email: EmailStr | None = None
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()-]{7,20}$")] | None = None

    @model_validator(mode="after")
    def _named(self) -> Subject:
        if self.email is None and self.phone is None:
            raise ValueError("give the citizen's email, phone, or both")
        return self


class SharedWith(BaseModel):
    """An organisation that received the enquiry, and which of the citizen's details."""

    organisation_id: str
    organisation_name: str
    delivered_at: datetime | None = None
    remote_reference: str | None = None
    citizen_fields: list[str] = Field(
        description="The citizen's details it was sent under its data-sharing agreement "
        "(as configured now); empty when the citizen did not consent to sharing them."
    )


class StatusUpdateOut(BaseModel):
    organisation_id: str
    their_status: str
    status: str | None = None
    description: str | None = None
    updated_at: datetime
    received_via: ReceivedVia


class FileCopy(BaseModel):
    """Where the officer fetches a copy of one of the enquiry's attachments to give the
    citizen (files are not inlined: an enquiry may hold hundreds of megabytes of them)."""

    id: uuid.UUID = Field(description="The attachment's id, as in `attachments`")
    filename: str = Field(examples=["photo-1.jpg"])
    sha256: str = Field(description="Of the file as kept: check a fetched copy against it")
    fetch: str = Field(
        description="GET this with an API key holding enquiries:read-all (a data protection "
        "officer's own); each fetch is written to the audit log",
        examples=["/v1/enquiries/K7Q-M4X-PB6/attachments/0b5e0f0e-4a9f-4c0e-9d6a-2f4c3b1a0e11"],
    )


class EnquiryExport(EnquiryOut):
    """Everything held about one enquiry: its record, who received it, what they said."""

    consent: dict[str, Any] | None = None
    shared_with: list[SharedWith]
    status_updates: list[StatusUpdateOut]
    # `messages` (staff notes too) and `attachments` are the enquiry's, as staff read them.
    files: list[FileCopy] = Field(
        default=[], description="How to fetch a copy of each attachment, oldest first"
    )


class SubjectAccessExport(BaseModel):
    """A subject access export (UK GDPR Article 15): every enquiry the citizen made."""

    generated_at: datetime
    matched_by: list[str] = Field(examples=[["email"]])
    enquiries: list[EnquiryExport]


class ErasureNotice(BaseModel):
    organisation_id: str
    reference: str
    remote_reference: str | None = None


class ErasureOut(BaseModel):
    """What an erasure did: the enquiries anonymised and the organisations told."""

    erased_at: datetime
    references: list[str]
    organisations_told: list[ErasureNotice]


class AuditEntryOut(BaseModel):
    id: uuid.UUID
    at: datetime
    actor: str
    actor_id: str | None = None
    action: AuditAction
    subject: str | None = None
    detail: dict[str, Any] | None = None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as `cursor` for the next page; absent on the last"
    )
