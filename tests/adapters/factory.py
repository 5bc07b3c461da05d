"""Deliveries for adapter tests, built as the dispatcher builds them (EnquirySnapshot.of), so
the data-sharing rules apply to the citizen's details exactly as in production."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from app.adapters.base import Delivery, EnquirySnapshot
from app.catalogue.catalogue import Organisation, load_catalogue
from app.core.models import Enquiry
from app.core.reference import parse
from app.core.settings import SHIPPED_CONFIG_DIR

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
