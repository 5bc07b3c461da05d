"""Field types and the strict base model that every request body uses."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
)


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain the NUL character (U+0000)")
    return text


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_number(value: object) -> object:
    # pydantic would read 0.5 (or "0.5" in a query) as seconds since 1970; JSON Schema's
    # date-time, which the OpenAPI document promises, is text like 2026-12-02T09:00:00Z only.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("must be a date and time like 2026-12-02T09:00:00Z")
    return value


def _in_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


def _whole(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# An integer as JSON Schema counts them (3600.0 is one), still refusing "3600" and true.
WholeNumber = Annotated[int, BeforeValidator(_whole)]
# PostgreSQL cannot hold NUL in a text column, and no person types one.
NoNul = Annotated[str, AfterValidator(_no_nul)]
Text = Annotated[NoNul, StringConstraints(strip_whitespace=True, min_length=1)]
# A time in UTC (taken as UTC when it has no zone); refused when UTC has no such time
# (year 1 at +01:00), which the database could not be asked about.
UtcDatetime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_in_utc)]
AwareUtcDatetime = Annotated[AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_in_utc)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)
