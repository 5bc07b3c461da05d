"""What an Open311 request form means to the gateway: the same `EnquiryIn` as /v1 takes.

`attribute[code]` answers a question once, `attribute[code][]` (repeated) a multivaluelist;
a number question's answer is read as a number. The location is one of `lat`+`long`,
`address_string` or `address_id` (a UPRN); the citizen is `first_name`, `last_name`, `email`
and `phone`. `device_id` and `account_id` are the client's own and are not kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from app.catalogue.catalogue import Catalogue, Service
from app.core.errors import FieldError, NotFound, ValidationFailed, error_message
from app.intake.schemas import Channel, EnquiryIn

_ATTRIBUTE = re.compile(r"^attribute\[([^\]]{1,64})\](\[\])?$")
# Said once in a form; a repeat of one of these is refused rather than one of them guessed.
SINGLE = (
    "api_key",
    "jurisdiction_id",
    "service_code",
    "lat",
    "long",
    "address_string",
    "address_id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "description",
    "media_url",
    "device_id",
    "account_id",
)
# The spec's limit on a description.
MAX_DESCRIPTION = 4000
MAX_FIELDS = 200

Pairs = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class RequestForm:
    """A POST requests form, read: the enquiry, and the photo's address if one came."""

    enquiry: EnquiryIn
    media_url: str | None


def check_form(pairs: Pairs) -> None:
    """400 for a form no client sends: too many fields, or a NUL character anywhere (no
    database keeps one in text)."""
    if len(pairs) > MAX_FIELDS:
        raise ValidationFailed(f"A form has at most {MAX_FIELDS} fields.")
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise ValidationFailed(
                "The form holds a NUL character (U+0000).",
                [FieldError("must not contain the NUL character", parameter=name[:64])],
            )


def single_values(pairs: Pairs, names: Sequence[str] = SINGLE) -> dict[str, str]:
    """The form's one-value fields (blank ones left out); 400 when one is given twice."""
    check_form(pairs)
    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in names:
            continue
        if name in values:
            raise ValidationFailed(f"{name} is given more than once.")
        if value.strip():
            values[name] = value.strip()
    return values


def read_request_form(pairs: Pairs, *, catalogue: Catalogue, channel: Channel) -> RequestForm:
    """The enquiry an Open311 request form describes; 404 for an unknown service_code, 400
    (ValidationFailed) naming each field that does not fit."""
    values = single_values(pairs)
    code = values.get("service_code")
    if code is None:
        raise ValidationFailed(
            "service_code is required.", [FieldError("required", parameter="service_code")]
        )
    service = catalogue.services.get(code)
    if service is None:
        raise NotFound(f"There is no service '{code[:64]}'; GET services.json lists them.")
    body = {
        "service_code": service.code,
        "description": values.get("description") or service.name,
        "channel": channel.value,
        "location": _location(values),
        "citizen": _citizen(values),
        "attributes": _attributes(pairs, service),
        # The client sends the citizen's details for the council: they are shared with the
        # organisations handling it (each agreement still limits which); news of progress is
        # the client's to give (servicerequestupdates), so the gateway sends none itself.
        "consent": {"share_contact_details": _has_contact(values), "send_updates": False},
    }
    return RequestForm(enquiry=_enquiry(body), media_url=values.get("media_url"))


def _location(values: dict[str, str]) -> dict[str, Any] | None:
    location: dict[str, Any] = {}
    lat, lon = values.get("lat"), values.get("long")
    if lat is not None or lon is not None:
        if lat is None or lon is None:
            raise ValidationFailed(
                "Give both lat and long, or neither.",
                [FieldError("required with the other", parameter="long" if lon is None else "lat")],
            )
        location["lat"], location["lon"] = _number(lat, "lat"), _number(lon, "long")
    if "address_string" in values:
        location["address"] = values["address_string"]
    if "address_id" in values:
        location["uprn"] = values["address_id"]
    return location or None


def _number(text: str, name: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValidationFailed(
            f"{name} is not a number.", [FieldError("must be a decimal number", parameter=name)]
        )
    return number


def _citizen(values: dict[str, str]) -> dict[str, Any] | None:
    name = " ".join(v for v in (values.get("first_name"), values.get("last_name")) if v)
    citizen = {
        "name": name or None,
        "email": values.get("email"),
        "phone": values.get("phone"),
    }
    kept = {k: v for k, v in citizen.items() if v is not None}
    return kept or None


def _has_contact(values: dict[str, str]) -> bool:
    return any(k in values for k in ("email", "phone", "first_name", "last_name"))


def _attributes(pairs: Pairs, service: Service) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for name, value in pairs:
        match = _ATTRIBUTE.match(name)
        if match is None:
            continue
        code, many = match.group(1), match.group(2) is not None
        if many:
            listed = answers.setdefault(code, [])
            if not isinstance(listed, list):
                raise _twice(code)
            if value.strip():
                listed.append(value.strip())
        elif code in answers:
            raise _twice(code)
        else:
            answers[code] = _answer(service, code, value.strip())
    return {k: v for k, v in answers.items() if v not in ("", [])}


def _twice(code: str) -> ValidationFailed:
    return ValidationFailed(
        f"attribute[{code}] is given more than once; a multivaluelist is sent as "
        f"attribute[{code}][].",
        [FieldError("given more than once", parameter=f"attribute[{code}]")],
    )


def _answer(service: Service, code: str, value: str) -> Any:
    attribute = service.attribute(code)
    if attribute is None or value == "":
        return value
    if attribute.datatype == "number":
        number = _number(value, f"attribute[{code}]")
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if attribute.datatype == "multivaluelist":
        return [value]  # one answer sent without []: still a list of one
    return value


def _enquiry(body: dict[str, Any]) -> EnquiryIn:
    try:
        return EnquiryIn.model_validate(body)
    except ValidationError as error:
        problems = [
            FieldError(error_message(e), parameter=_parameter(e["loc"])) for e in error.errors()
        ]
        raise ValidationFailed("Some fields of the request do not fit.", problems) from None


# Where EnquiryIn's fields come from in the form.
_FORM_NAMES: dict[tuple[str, ...], str] = {
    ("location", "lat"): "lat",
    ("location", "lon"): "long",
    ("location", "address"): "address_string",
    ("location", "uprn"): "address_id",
    ("citizen", "name"): "first_name",
    ("citizen", "email"): "email",
    ("citizen", "phone"): "phone",
}


def _parameter(loc: tuple[int | str, ...]) -> str:
    names = tuple(str(part) for part in loc)
    if names[:1] == ("attributes",) and len(names) > 1:
        return f"attribute[{names[1]}]"
    return _FORM_NAMES.get(names[:2], names[0] if names else "form")
