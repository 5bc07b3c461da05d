"""Intake: check an enquiry against its service, locate it, route it, store it with its outbox."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.catalogue.catalogue import Catalogue, Service, ServiceAttribute, Tier
from app.catalogue.locate import LocatorChain, Place
from app.catalogue.routing import Destination, route
from app.catalogue.status import Status
from app.clients.service import Caller, hash_secret
from app.core import reference as references
from app.core.audit import Actor
from app.core.crypto import Sealer
from app.core.errors import FieldError, ValidationFailed
from app.core.models import utcnow
from app.core.outbox import new_row
from app.core.settings import ApiSettings
from app.core.vocabulary import EventType, OutboxState
from app.intake import idempotency
from app.intake.idempotency import IdempotencyKey, StoredResponse, fingerprint
from app.intake.schemas import Advice, DestinationOut, EnquiryCreated, EnquiryIn, Location
from app.intake.store import NewEnquiry, ReferenceTaken, store_new_enquiry

_EMERGENCY = re.compile(
    r"\b(999|emergency|in danger|happening now|right now|weapon|knife|knives|gun|stabb\w*|"
    r"attack\w*|assault\w*|break(ing)? in|fire|bleeding|unconscious|not breathing|"
    r"chest pain|stroke|overdose|suicid\w*|kill (my|him|her|them)self)\b",
    re.IGNORECASE,
)
_EMERGENCY_ADVICE = Advice(
    code="call-999",
    message="If anyone is in danger, a crime is happening now, or someone is seriously ill or "
    "injured, call 999 now. This service is not watched around the clock. For urgent medical "
    "help that is not an emergency call NHS 111; to report a crime that is not an emergency "
    "call 101.",
)


@dataclass
class IntakeContext:
    """What intake needs from the running application."""

    engine: AsyncEngine
    catalogue: Catalogue
    locator: LocatorChain
    wake_dispatcher: Callable[[], None]
    sealer: Sealer
    settings: ApiSettings  # how long Idempotency-Keys are kept and may stay in flight


async def accept_enquiry(
    *,
    enquiry: EnquiryIn,
    context: IntakeContext,
    caller: Caller,
    idempotency_key: str | None,
) -> EnquiryCreated | StoredResponse:
    """Submit an enquiry under the Idempotency-Key protocol (app.intake.idempotency): a repeat
    with the same key and body gets the first answer back, a StoredResponse to replay."""
    # A person (an agent on the phone, by the console or their token) is named on the
    # timeline as who took it; a system's key is not.
    actor = Actor.of(caller) if caller.person is not None else None
    if idempotency_key is None:
        return await submit_enquiry(
            enquiry=enquiry,
            context=context,
            client_id=caller.client_id,
            fixed_channel=caller.channel,
            actor=actor,
        )
    key = IdempotencyKey(
        caller.client_id, idempotency_key, fingerprint(enquiry.model_dump(mode="json"))
    )
    stored = await idempotency.begin(context.engine, key, context.settings)
    if stored is not None:
        return stored
    try:
        return await submit_enquiry(
            enquiry=enquiry,
            context=context,
            client_id=caller.client_id,
            idempotency_key=key,
            fixed_channel=caller.channel,
            actor=actor,
        )
    except Exception:
        # The claim stored nothing: forget it, so the client may fix the request and resend.
        await idempotency.release(context.engine, key)
        raise


async def submit_enquiry(
    *,
    enquiry: EnquiryIn,
    context: IntakeContext,
    client_id: str | None,
    idempotency_key: IdempotencyKey | None = None,
    fixed_channel: str | None = None,
    actor: Actor | None = None,
) -> EnquiryCreated:
    """Accept an enquiry: one transaction writes it, its dispatches and its first event.

    A client bound to a channel (a kiosk, say) may only submit enquiries on that channel."""
    if fixed_channel is not None and enquiry.channel.value != fixed_channel:
        raise ValidationFailed(
            f"This API key submits enquiries on the channel '{fixed_channel}' only.",
            [FieldError(f"must be '{fixed_channel}' for this API key", pointer="#/channel")],
        )
    service = _service(enquiry, context.catalogue)
    attributes = checked_attributes(service, enquiry.attributes)
    place, destinations = await locate_and_route(
        service=service,
        location=enquiry.location,
        catalogue=context.catalogue,
        locator=context.locator,
    )
    advice = _advice(service, enquiry.description)
    return await _store(
        enquiry=enquiry,
        attributes=attributes,
        place=place,
        destinations=destinations,
        advice=advice,
        context=context,
        client_id=client_id,
        idempotency_key=idempotency_key,
        actor=actor,
    )


async def locate_and_route(
    *,
    service: Service,
    location: Location | None,
    catalogue: Catalogue,
    locator: LocatorChain,
) -> tuple[Place, list[Destination]]:
    """Where the enquiry is about and who must act on it (`iap routes explain` asks the same):
    a service that needs a location refuses one without it; out of area raises OutOfArea."""
    if service.needs_location and (location is None or location.is_empty()):
        raise ValidationFailed(
            f"{service.name} needs a location: a postcode, a point, an address or a UPRN.",
            [FieldError("required for this service", pointer="#/location")],
        )
    place = await locator.locate(
        postcode=location.postcode if location else None,
        latitude=location.lat if location else None,
        longitude=location.lon if location else None,
        address=location.address if location else None,
    )
    return place, route(service=service, place=place, catalogue=catalogue)


def _service(enquiry: EnquiryIn, catalogue: Catalogue) -> Service:
    service = catalogue.services.get(enquiry.service_code)
    if service is None:
        raise ValidationFailed(
            f"There is no service '{enquiry.service_code}'; GET /v1/services lists them.",
            [FieldError("unknown service", pointer="#/service_code")],
        )
    return service


def checked_attributes(service: Service, given: dict[str, Any]) -> dict[str, Any]:
    """The answers to the service's questions, if they fit it; else ValidationFailed naming
    each answer that does not (the console asks it too, to list every problem at once)."""
    errors = [
        FieldError(f"{service.code} has no attribute '{code}'", pointer=f"#/attributes/{code}")
        for code in given
        if service.attribute(code) is None
    ]
    for attribute in service.attributes:
        value = given.get(attribute.code)
        problem = attribute_problem(attribute, value)
        if problem is not None:
            errors.append(FieldError(problem, pointer=f"#/attributes/{attribute.code}"))
    if errors:
        raise ValidationFailed(f"Some answers do not fit the {service.name} service.", errors)
    return given


def attribute_problem(attribute: ServiceAttribute, value: Any) -> str | None:
    """What is wrong with one answer to a service's question, or None: intake's rule, which
    the kiosk also asks page by page."""
    keys = {v.key for v in attribute.values}
    if value is None or value == "" or value == []:
        if not attribute.required:
            return None
        choices = f" (one of {sorted(keys)})" if keys else ""
        return f"required: {attribute.description}{choices}"
    match attribute.datatype:
        case "number":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return None if ok else "must be a number"
        case "singlevaluelist":
            ok = isinstance(value, str) and value in keys
            return None if ok else f"must be one of {sorted(keys)}"
        case "multivaluelist":
            ok = isinstance(value, list) and set(value) <= keys
            return None if ok else f"must be a list drawn from {sorted(keys)}"
        case "datetime":
            return None if _is_datetime(value) else "must be an ISO 8601 date or date-time"
        case _:
            limit = 4000 if attribute.datatype == "text" else 200
            ok = isinstance(value, str) and len(value) <= limit
            return None if ok else f"must be text of at most {limit} characters"


def _is_datetime(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _advice(service: Service, description: str) -> list[Advice]:
    urgent_tiers = {Tier.police, Tier.health}
    if urgent_tiers & set(service.tiers) and _EMERGENCY.search(description):
        return [_EMERGENCY_ADVICE]
    return []


def _sealed_citizen(enquiry: EnquiryIn, sealer: Sealer) -> dict[str, str | None]:
    """The citizen's details as the enquiry row keeps them: sealed, with look-up hashes."""
    citizen = enquiry.citizen
    details = citizen.model_dump(mode="json", exclude_none=True) if citizen else None
    return {
        "citizen_sealed": sealer.seal(details),
        "citizen_email_hash": sealer.email_hash(citizen.email if citizen else None),
        "citizen_phone_hash": sealer.phone_hash(citizen.phone if citizen else None),
    }


async def _store(
    *,
    enquiry: EnquiryIn,
    attributes: dict[str, Any],
    place: Place,
    destinations: list[Destination],
    advice: list[Advice],
    context: IntakeContext,
    client_id: str | None,
    idempotency_key: IdempotencyKey | None,
    actor: Actor | None,
) -> EnquiryCreated:
    now = utcnow()
    enquiry_id = uuid.uuid4()
    # The citizen's key to this one enquiry: a keyed MAC of its id (256 bits nobody can guess
    # without the key), so a fast hash is enough (see clients.py), and the alert sender can
    # make it again for the tracking link in a message.
    access_token = context.sealer.access_token(enquiry_id)
    dispatches = [
        new_row(now=now, enquiry_id=enquiry_id, organisation_id=d.organisation_id, reason=d.reason)
        for d in destinations
    ]
    row = {
        "id": enquiry_id,
        "service_code": enquiry.service_code,
        "status": Status.routed,
        "channel": enquiry.channel.value,
        "description": enquiry.description,
        "location": enquiry.location.model_dump(exclude_none=True) if enquiry.location else None,
        "place": place.as_dict(),
        **_sealed_citizen(enquiry, context.sealer),
        "attributes": attributes,
        "consent": enquiry.consent.model_dump(),
        "advice": [a.model_dump() for a in advice] or None,
        "client_id": client_id,
        "access_token_hash": hash_secret(access_token),
        "created_at": now,
        "updated_at": now,
    }
    received = {
        "id": uuid.uuid4(),
        "enquiry_id": enquiry_id,
        "type": EventType.enquiry_received,
        "status": Status.routed,
        "detail": "; ".join(f"{d.organisation_id}: {d.reason}" for d in destinations),
        "created_at": now,
        **(actor.on_event() if actor is not None else {}),
    }

    def answer(reference: str) -> EnquiryCreated:
        return EnquiryCreated(
            reference=references.display(reference),
            status=Status.routed,
            service_code=enquiry.service_code,
            destinations=[
                DestinationOut(
                    organisation_id=d.organisation_id,
                    organisation_name=context.catalogue.organisations[d.organisation_id].name,
                    reason=d.reason,
                    state=OutboxState.pending,
                    attempts=0,
                    next_attempt_at=now,
                )
                for d in destinations
            ],
            advice=advice,
            created_at=now,
            access_token=access_token,
        )

    created = await _insert(
        context.engine, row, dispatches, received, answer=answer, idempotency_key=idempotency_key
    )
    context.wake_dispatcher()
    return created


async def _insert(
    engine: AsyncEngine,
    enquiry: dict[str, Any],
    dispatches: list[dict[str, Any]],
    event: dict[str, Any],
    *,
    answer: Callable[[str], EnquiryCreated],
    idempotency_key: IdempotencyKey | None,
) -> EnquiryCreated:
    # A new reference collides about once in 10^12 enquiries; a second draw is plenty.
    for _ in range(3):
        reference = references.new_reference()
        created = answer(reference)
        stored = None
        if idempotency_key is not None:
            body = created.model_dump(mode="json")
            stored = (idempotency_key.client_id, idempotency_key.key, 201, body)
        new = NewEnquiry({**enquiry, "reference": reference}, dispatches, event, stored)
        try:
            await store_new_enquiry(engine, new)
        except ReferenceTaken:
            continue
        return created
    raise RuntimeError("could not find a free enquiry reference")
