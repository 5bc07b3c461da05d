"""Deliveries for adapter tests, built as the dispatcher builds them (EnquirySnapshot.of), so
the data-sharing rules apply to the citizen's details exactly as in production."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from app.adapters.base import AttachmentFile, Delivery, EnquirySnapshot, FollowUp
from app.catalogue.catalogue import Organisation, load_catalogue
from app.core.models import Enquiry
from app.core.reference import parse
from app.core.settings import SHIPPED_CONFIG_DIR
from app.core.vocabulary import MessageKind

CATALOGUE = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": "http://bo.test"})
REFERENCE = "K7Q-M4X-PB6"
CREATED = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
DISPATCH_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
# The citizen most adapter tests deliver for: every field an agreement can share, filled in.
CITIZEN = {
    "name": "Ann Example",
    "email": "ann@example.org",
    "phone": "01865 000000",
    "preferred_contact": "email",
    "language": "cy",
    "accessibility_needs": "Large print",
}


def stored_enquiry(*, share: bool, **fields: Any) -> Enquiry:
    """An enquiry as the store holds it (its citizen's details sealed elsewhere)."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "reference": parse(REFERENCE),
        "service_code": "pothole",
        "status": "received",
        "channel": "web",
        "description": "Deep pothole outside the school",
        "location": None,
        "attributes": None,
        "consent": {"share_contact_details": share},
        "created_at": CREATED,
        "updated_at": CREATED,
    }
    return Enquiry(**(values | fields))


def delivery(
    organisation: str | Organisation,
    *,
    citizen: Mapping[str, Any] | None,
    share: bool = True,
    shares: tuple[str, ...] | None = None,
    attempt: int = 1,
    dispatch_id: uuid.UUID = DISPATCH_ID,
    service_name: str | None = None,
    **enquiry_fields: Any,
) -> Delivery:
    """One attempt to deliver an enquiry to `organisation` (by id, or as given), its agreement
    narrowed to `shares` when given; `enquiry_fields` are the stored enquiry's columns."""
    if isinstance(organisation, str):
        organisation = CATALOGUE.organisations[organisation]
    if shares is not None:
        organisation = organisation.model_copy(update={"shares": shares})
    snapshot = EnquirySnapshot.of(
        stored_enquiry(share=share, **enquiry_fields),
        citizen=citizen,
        organisation=organisation,
        service_name=service_name,
    )
    return Delivery(
        dispatch_id=dispatch_id, attempt=attempt, organisation=organisation, enquiry=snapshot
    )


def photo(*, exif: bool = False, size: tuple[int, int] = (32, 24)) -> bytes:
    """A small JPEG, with a GPS position in its EXIF when `exif` (what a phone's photo has)."""
    from io import BytesIO

    from PIL import Image

    image = Image.new("RGB", size, (200, 120, 40))
    buffer = BytesIO()
    if exif:
        data = Image.Exif()
        data[0x010F] = "PhoneMaker"  # Make
        data[0x8825] = {1: "N", 2: (51.0, 45.0, 7.0), 3: "W", 4: (1.0, 15.0, 30.0)}  # GPS
        image.save(buffer, "JPEG", exif=data)
    else:
        image.save(buffer, "JPEG")
    return buffer.getvalue()


def attachment_file(
    content: bytes | None = None,
    *,
    number: int = 1,
    url: str = "http://gateway.test/v1/attachments/x?expires=1&signature=s",
) -> AttachmentFile:
    """A re-encoded photo as the follow-up sender hands it to an adapter."""
    return AttachmentFile(
        attachment_id=uuid.UUID(int=0x1000 + number),
        filename=f"photo-{number}.jpg",
        content_type="image/jpeg",
        content=content if content is not None else photo(),
        url=url,
    )


FOLLOW_UP_ID = uuid.UUID("00000000-0000-4000-8000-0000000000f1")


def follow_up(
    organisation: str | Organisation,
    *,
    kind: MessageKind = MessageKind.information,
    text: str | None = "The pothole is on the north side, by the bus stop",
    attachments: tuple[AttachmentFile, ...] = (),
    remote_reference: str = "CASE-1",
    citizen: Mapping[str, Any] | None = None,
    attempt: int = 1,
    follow_up_id: uuid.UUID = FOLLOW_UP_ID,
    by_citizen: bool = True,
    **enquiry_fields: Any,
) -> FollowUp:
    """One attempt to send a follow-up for a case `organisation` holds (its first delivery
    DISPATCH_ID, its case `remote_reference`), as the follow-up sender builds it."""
    first = delivery(organisation, citizen=citizen or CITIZEN, **enquiry_fields)
    return FollowUp(
        follow_up_id=follow_up_id,
        attempt=attempt,
        kind=kind,
        organisation=first.organisation,
        dispatch_id=first.dispatch_id,
        remote_reference=remote_reference,
        enquiry=first.enquiry,
        text=text,
        attachments=attachments,
        created_at=CREATED,
        by_citizen=by_citizen,
    )
