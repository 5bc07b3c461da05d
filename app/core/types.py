"""Field types and the strict base model that every request body uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    StringConstraints,
)


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not contain the NUL character (U+0000)")
    return text


def _in_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


# PostgreSQL cannot hold NUL in a text column, and no person types one.
NoNul = Annotated[str, AfterValidator(_no_nul)]
Text = Annotated[NoNul, StringConstraints(strip_whitespace=True, min_length=1)]
# A time in UTC (taken as UTC when it has no zone); refused when UTC has no such time
# (year 1 at +01:00), which the database could not be asked about.
UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]
AwareUtcDatetime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)
