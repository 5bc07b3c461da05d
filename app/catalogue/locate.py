"""Locating: a postcode or a point → the county, district, police force area and health area.

Sources are tried from the most exact down: the imported ONS Postcode Directory (full postcodes),
an optional postcodes.io-compatible HTTP service, then the built-in table of postcode sectors and
districts, and for a point with no postcode the built-in table of grid squares. A source that
cannot decide a code (a straddling sector; a point whose nearby postcodes disagree) leaves it
empty, with a note saying why; routing then sends that part to the triage desk rather than guess.
"""

from __future__ import annotations

import csv
import math
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.db import reading
from app.core.models import GazetteerPostcode, fetch_all, fetch_one, gazetteer_table
from app.core.outbound import OutboundRefused

log = structlog.get_logger()

_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})$")
# A full postcode inside free text ("12 High Street, Abingdon OX14 3AB"), spaced or not.
_POSTCODE_IN_TEXT = re.compile(r"\b([A-Z]{1,2}[0-9][A-Z0-9]?) ?([0-9][A-Z]{2})\b", re.IGNORECASE)
_DISTRICT = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")
_SECTOR = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ([0-9])$")
# ONSPD fills a county column with this pseudo-code where there is no county (unitary areas).
_NO_AREA = {"", "E99999999", "W99999999", "S99999999", "N99999999"}
# About 200 m: how far a point may be from a postcode's centre to take its areas.
_NEAR_DEGREES = 0.002
_CACHE_SIZE = 50_000
# The most postcodes the gazetteer reads around a point: more than lie within 200 m anywhere.
_NEAR_ROWS = 200
# The point table's grid, about 500 m each way at 51.75°N (scripts/point_areas.py writes it with
# the same steps): chosen by measurement, see app/data/oxfordshire/POSTCODES.md.
LAT_STEP = 0.0045
LON_STEP = 0.0072
_AREA_NAMES = ("county", "district", "police force area", "health area")
# (county, district, police force area, health area); None is "none" here, not "unknown".
Areas = tuple[str | None, str | None, str | None, str | None]


def normalise_postcode(text: str) -> str | None:
    """`ox1 1aa` → `OX1 1AA`; None when it is not a UK postcode."""
    compact = "".join(text.upper().split())
    if compact == "GIR0AA":
        return "GIR 0AA"
    match = _POSTCODE.match(compact)
    return f"{match[1]} {match[2]}" if match else None


def normalise_postcode_or_part(text: str) -> str | None:
    """A full postcode as normalise_postcode makes it, or what a caller may know of one: a
    postcode district (`ox14` → `OX14`) or sector (`ox14 3` → `OX14 3`); None otherwise."""
    full = normalise_postcode(text)
    if full is not None:
        return full
    words = text.upper().split()
    spaced = " ".join(words)
    if len(words) == 1 and _DISTRICT.match(spaced):
        return spaced
    return spaced if _SECTOR.match(spaced) else None


def postcode_in_text(text: str | None) -> str | None:
    """The last full UK postcode written in an address (it usually ends one), normalised."""
    found = [f"{m[1]} {m[2]}".upper() for m in _POSTCODE_IN_TEXT.finditer(text or "")]
    return normalise_postcode(found[-1]) if found else None


@dataclass(frozen=True)
class Place:
    """What is known of where an enquiry is about. A None code is unknown, not absent."""

    county_code: str | None = None
    district_code: str | None = None
    police_area: str | None = None
    health_area: str | None = None
    postcode: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    precision: str = "none"  # postcode | sector | district | point | none
    source: str = "none"  # gazetteer | http | table | none
    outside: bool = False  # known to lie outside every area the table covers
    note: str | None = None
    # Where the table cannot decide the district: each council sharing the prefix, as (GSS
    # district code, its postcodes there), most first; the triage desk's evidence.
    candidates: tuple[tuple[str, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The place as stored with the enquiry (candidates as [code, postcodes] pairs)."""
        stored = {k: v for k, v in self.__dict__.items() if v not in (None, False, ())}
        if self.candidates:
            stored["candidates"] = [list(pair) for pair in self.candidates]
        return stored

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any] | None) -> Place:
        """The place as as_dict stored it."""
        values = dict(stored or {})
        pairs = values.pop("candidates", None) or ()
        known = {f.name for f in fields(cls)}
        place = cls(**{k: v for k, v in values.items() if k in known})
        return replace(place, candidates=tuple((str(c), int(n)) for c, n in pairs))


class Locator(Protocol):
    async def locate(
        self, *, postcode: str | None, latitude: float | None, longitude: float | None
    ) -> Place | None:
        """The place, or None when this source does not know it."""
        ...


class PostcodeTable:
    """The built-in table of postcode districts and sectors (app/data/*/postcode_areas.csv)."""

    def __init__(self, rows: dict[str, dict[str, str]]) -> None:
        self._rows = rows

    @classmethod
    def from_csv(cls, path: Path) -> PostcodeTable:
        if not path.exists():
            return cls({})
        with path.open(newline="", encoding="utf-8") as handle:
            return cls({row["prefix"].strip().upper(): row for row in csv.DictReader(handle)})

    def covers(self, postcode: str) -> bool:
        """Whether this (normalised) postcode's sector or district is in the table; an empty
        table knows no area, so it rules nothing out."""
        outward, _, inward = postcode.partition(" ")
        return not self._rows or f"{outward} {inward[:1]}" in self._rows or outward in self._rows

    async def locate(
        self, *, postcode: str | None, latitude: float | None, longitude: float | None
    ) -> Place | None:
        if postcode is None or not self._rows:
            return None
        outward, _, inward = postcode.partition(" ")
        sector = f"{outward} {inward[0]}" if inward else outward
        for prefix, precision in ((sector, "sector"), (outward, "district")):
            row = self._rows.get(prefix)
            if row is not None:
                return self._place(row, postcode=postcode, precision=precision)
        return Place(
            postcode=postcode,
            source="table",
            outside=True,
            note=f"postcode {'sector' if inward else 'district'} {sector} is outside the area "
            "this table covers",
        )

    @staticmethod
    def _place(row: dict[str, str], *, postcode: str, precision: str) -> Place:
        return Place(
            county_code=row["county_code"] or None,
            district_code=row["district_code"] or None,
            police_area=row["police_area"] or None,
            health_area=row["health_area"] or None,
            postcode=postcode,
            precision=precision,
            source="table",
            note=row.get("note") or None,
            candidates=_candidates(row.get("candidates") or ""),
        )


def _candidates(text: str) -> tuple[tuple[str, int], ...]:
    """`E07000180:231 E07000179:46` → (("E07000180", 231), ("E07000179", 46))."""
    pairs = (item.partition(":") for item in text.split())
    return tuple((code, int(count)) for code, _, count in pairs if code and count.isdigit())


def agreed(place: Place, near: Counter[Areas], *, where: str) -> Place:
    """`place` with each code every postcode in `near` agrees on; a code they disagree on is
    left empty, with a note saying so and, for the district, the councils as candidates."""
    codes: list[str | None] = []
    split: list[str] = []
    districts: Counter[str | None] = Counter()
    for index, name in enumerate(_AREA_NAMES):
        tally: Counter[str | None] = Counter()
        for areas, count in near.items():
            tally[areas[index]] += count
        codes.append(next(iter(tally)) if len(tally) == 1 else None)
        if len(tally) > 1:
            split.append(f"more than one {name} ({_tally(tally)})")
        if index == 1:
            districts = tally
    county, district, police, health = codes
    decided = replace(
        place, county_code=county, district_code=district, police_area=police, health_area=health
    )
    if not split:
        return decided
    total = sum(near.values())
    return replace(
        decided,
        note=f"the {total} postcodes {where} lie in " + " and ".join(split),
        candidates=_ranked(districts) if district is None else (),
    )


def _tally(tally: Counter[str | None]) -> str:
    return ", ".join(f"{code or 'none'}: {count}" for code, count in tally.most_common())


def _ranked(districts: Counter[str | None]) -> tuple[tuple[str, int], ...]:
    """Each council's code and its postcodes, most first (ties by code, so answers repeat)."""
    pairs = [(code, count) for code, count in districts.items() if code]
    return tuple(sorted(pairs, key=lambda pair: (-pair[1], pair[0])))


class PointTable:
    """The built-in table of grid squares (app/data/*/point_areas.csv), for a point with no
    postcode: each square's postcodes per area combination, counted from OS Code-Point Open.

    A code is decided only where the postcodes of the point's square and its eight neighbours
    (500 m to 1 km around it) all agree on it. Loaded once; a look-up is nine dict reads.
    """

    def __init__(self, squares: dict[tuple[int, int], list[tuple[Areas, int]]]) -> None:
        self._squares = squares
        rows = [lat for lat, _ in squares] or [0]
        columns = [lon for _, lon in squares] or [0]
        self._bounds = (min(rows) - 1, max(rows) + 1, min(columns) - 1, max(columns) + 1)

    @classmethod
    def from_csv(cls, path: Path) -> PointTable:
        squares: dict[tuple[int, int], list[tuple[Areas, int]]] = {}
        if not path.exists():
            return cls(squares)
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                areas: Areas = (
                    row["county_code"] or None,
                    row["district_code"] or None,
                    row["police_area"] or None,
                    row["health_area"] or None,
                )
                key = (int(row["lat"]), int(row["lon"]))
                squares.setdefault(key, []).append((areas, int(row["postcodes"])))
        return cls(squares)

    async def locate(
        self, *, postcode: str | None, latitude: float | None, longitude: float | None
    ) -> Place | None:
        if postcode is not None or latitude is None or longitude is None or not self._squares:
            return None
        return self.place(latitude, longitude)

    def place(self, latitude: float, longitude: float) -> Place:
        """Where this point is, as far as the postcodes around it agree."""
        row, column = math.floor(latitude / LAT_STEP), math.floor(longitude / LON_STEP)
        near: Counter[Areas] = Counter()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                for areas, count in self._squares.get((row + dr, column + dc), ()):
                    near[areas] += count
        point = Place(latitude=latitude, longitude=longitude, precision="point", source="table")
        if near:
            return agreed(point, near, where="within about 500 m to 1 km of this point")
        low_row, high_row, low_column, high_column = self._bounds
        if low_row <= row <= high_row and low_column <= column <= high_column:
            return replace(point, note="no postcode lies within about 500 m of this point")
        return replace(point, outside=True, note="this point is outside the area the table covers")


class Gazetteer:
    """Full postcodes imported from the ONS Postcode Directory (`iap gazetteer import`).

    Answers are kept for a minute (postcodes change only on import), and an empty gazetteer is
    not asked at all until it is checked again, so intake pays for a look-up only when there is
    something to find. A new import is used within a minute.
    """

    def __init__(self, engine: AsyncEngine, *, cache_seconds: float = 60.0) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._cache: OrderedDict[str, tuple[float, Place | None]] = OrderedDict()
        self._empty_until = 0.0

    async def locate(
        self, *, postcode: str | None, latitude: float | None, longitude: float | None
    ) -> Place | None:
        now = time.monotonic()
        if now < self._empty_until or _partial(postcode):
            return None
        if postcode is None:
            return await self._look_up(postcode, latitude, longitude)
        cached = self._cache.get(postcode)
        if cached is not None and cached[0] > now:
            return cached[1]
        place = await self._look_up(postcode, latitude, longitude)
        self._cache[postcode] = (now + self._cache_seconds, place)
        self._cache.move_to_end(postcode)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        if place is None and not await self._has_postcodes():
            self._empty_until = now + self._cache_seconds
        return place

    async def _has_postcodes(self) -> bool:
        async with reading(self._engine) as conn:
            found = await conn.scalar(select(gazetteer_table.c.postcode).limit(1))
        return found is not None

    async def _look_up(
        self, postcode: str | None, latitude: float | None, longitude: float | None
    ) -> Place | None:
        if postcode is None:
            if latitude is None or longitude is None:
                return None
            return await self._near(latitude, longitude)
        query = select(GazetteerPostcode).where(gazetteer_table.c.postcode == postcode)
        async with reading(self._engine) as conn:
            found = await fetch_one(conn, GazetteerPostcode, query.limit(1))
        if found is None:
            return None
        return replace(
            _areas_of(found),
            precision="postcode",
            note="terminated postcode" if found.terminated else None,
        )

    async def _near(self, latitude: float, longitude: float) -> Place | None:
        """The postcodes within about 200 m, nearest first (one query on the point index): the
        codes they all agree on, and the nearest's postcode only where they agree on all."""
        query = self._nearest(select(GazetteerPostcode), latitude, longitude).limit(_NEAR_ROWS)
        async with reading(self._engine) as conn:
            found = await fetch_all(conn, GazetteerPostcode, query)
        if not found:
            return None
        near = Counter(
            (row.county_code, row.district_code, row.police_area, row.health_area) for row in found
        )
        nearest = replace(_areas_of(found[0]), latitude=latitude, longitude=longitude)
        point = replace(nearest, precision="point")
        if len(near) == 1:
            return point
        return agreed(replace(point, postcode=None), near, where="within about 200 m of this point")

    @staticmethod
    def _nearest(
        query: Select[GazetteerPostcode], latitude: float, longitude: float
    ) -> Select[GazetteerPostcode]:
        lat, lon = gazetteer_table.c.latitude, gazetteer_table.c.longitude
        return query.where(
            lat.between(latitude - _NEAR_DEGREES, latitude + _NEAR_DEGREES),
            lon.between(longitude - 1.6 * _NEAR_DEGREES, longitude + 1.6 * _NEAR_DEGREES),
        ).order_by((lat - latitude) * (lat - latitude) + (lon - longitude) * (lon - longitude))


def _areas_of(found: GazetteerPostcode) -> Place:
    return Place(
        county_code=found.county_code,
        district_code=found.district_code,
        police_area=found.police_area,
        health_area=found.health_area,
        postcode=found.postcode,
        latitude=found.latitude,
        longitude=found.longitude,
        source="gazetteer",
    )


class HttpLocator:
    """A postcodes.io-compatible service: `GET /postcodes/{pc}` and `GET /postcodes?lat&lon`."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, timeout: float) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout

    async def locate(
        self, *, postcode: str | None, latitude: float | None, longitude: float | None
    ) -> Place | None:
        if _partial(postcode):
            return None
        if postcode is not None:
            url, params = f"{self._base_url}/postcodes/{postcode}", None
        elif latitude is not None and longitude is not None:
            url, params = f"{self._base_url}/postcodes", {"lat": latitude, "lon": longitude}
        else:
            return None
        try:
            response = await self._client.get(url, params=params, timeout=self._timeout)
        except httpx.HTTPError as exc:
            log.warning("locate.http_unavailable", error=type(exc).__name__)
            return None
        except OutboundRefused as exc:  # its host now resolves somewhere production may not go
            log.warning("locate.http_refused", error=str(exc))
            return None
        if response.status_code != 200:
            return None
        result = response.json().get("result")
        if isinstance(result, list):
            return self._near(result, latitude, longitude)
        return self._place(result, postcode=postcode) if isinstance(result, dict) else None

    def _near(
        self, results: list[Any], latitude: float | None, longitude: float | None
    ) -> Place | None:
        """The nearest postcodes it gave (postcodes.io: up to 10 within 100 m): the codes they
        all agree on, as the gazetteer does, never the nearest one's by luck."""
        places = [self._place(r, postcode=None) for r in results if isinstance(r, dict)]
        if not places:
            return None
        near = Counter(
            (p.county_code, p.district_code, p.police_area, p.health_area) for p in places
        )
        point = replace(places[0], latitude=latitude, longitude=longitude)
        if len(near) == 1:
            return point
        return agreed(
            replace(point, postcode=None), near, where="the HTTP locator gave near this point"
        )

    @staticmethod
    def _place(result: dict[str, Any], *, postcode: str | None) -> Place:
        codes = result.get("codes") or {}
        return Place(
            county_code=_code(codes.get("admin_county")),
            district_code=_code(codes.get("admin_district")),
            police_area=_code(codes.get("pfa")),
            health_area=_code(codes.get("icb")),
            postcode=result.get("postcode") or postcode,
            latitude=result.get("latitude"),
            longitude=result.get("longitude"),
            precision="postcode" if postcode is not None else "point",
            source="http",
        )


def _partial(postcode: str | None) -> bool:
    """A district or sector only: nothing that knows full postcodes can place it."""
    return postcode is not None and len(postcode.partition(" ")[2]) < 3


def _starts(postcode: str, part: str) -> bool:
    """Whether a full postcode lies in a district (`OX14`) or sector (`OX14 3`)."""
    return postcode.startswith(part if " " in part else f"{part} ")


def _code(value: Any) -> str | None:
    return None if not isinstance(value, str) or value in _NO_AREA else value


class LocatorChain:
    """Asks each source in turn; the first that knows the place answers."""

    def __init__(self, sources: list[Locator]) -> None:
        self._sources = sources

    async def locate(
        self,
        *,
        postcode: str | None,
        latitude: float | None,
        longitude: float | None,
        address: str | None = None,
    ) -> Place:
        """The place; a postcode written in `address` stands in for a missing (or partly given)
        postcode when there is no point, and cross-checks the point when there is (the pin is
        where the pothole is; the address may be the nearest street's, or the caller's own)."""
        written = postcode_in_text(address)
        if postcode is not None:
            # Only the start given, and the address names a full postcode there: the full one.
            if written is not None and _partial(postcode) and _starts(written, postcode):
                postcode = written
            written = None
        if postcode is None and (latitude is None or longitude is None):
            if written is None:
                return Place(note="no postcode or point given")
            return await self._first(postcode=written, latitude=None, longitude=None)
        place = await self._first(postcode=postcode, latitude=latitude, longitude=longitude)
        if written is None:
            return place
        by_text = await self._first(postcode=written, latitude=None, longitude=None)
        return cross_checked(place, by_text)

    async def _first(
        self, *, postcode: str | None, latitude: float | None, longitude: float | None
    ) -> Place:
        for source in self._sources:
            place = await source.locate(postcode=postcode, latitude=latitude, longitude=longitude)
            if place is not None:
                return replace(
                    place,
                    latitude=place.latitude or latitude,
                    longitude=place.longitude or longitude,
                )
        return Place(
            postcode=postcode,
            latitude=latitude,
            longitude=longitude,
            note="no source could place this point" if postcode is None else None,
        )


def cross_checked(point: Place, written: Place) -> Place:
    """A pin's place checked against the postcode written in its address: where the pin alone
    cannot decide the district and the postcode names one it could be, the postcode's codes
    are taken; where they name different districts, the district is left to the triage desk."""
    text, code = written.postcode, written.district_code
    if code is None or written.outside:
        return point
    if point.district_code == code:
        return point if point.postcode else replace(point, postcode=text)
    possible = not point.outside and (
        not point.candidates or code in {c for c, _ in point.candidates}
    )
    if point.district_code is None and possible:
        why = f"; the point alone could not decide ({point.note})" if point.note else ""
        return replace(
            written,
            latitude=point.latitude,
            longitude=point.longitude,
            note=f"from the postcode {text} written in the address{why}",
        )
    pin = f"the point lies in district {point.district_code}" if point.district_code else None
    return replace(
        point,
        district_code=None,
        county_code=point.county_code if point.county_code == written.county_code else None,
        outside=False,
        note=f"{pin or point.note or 'the point is not placed'}, but the postcode {text} "
        f"written in the address lies in {code}",
    )


def import_onspd_rows(rows: Any) -> list[dict[str, Any]]:
    """ONS Postcode Directory CSV rows → gazetteer rows (pcds, oscty, oslaua, pfa, icb...)."""
    imported = []
    for row in rows:
        postcode = normalise_postcode(row.get("pcds") or row.get("pcd") or "")
        if postcode is None:
            continue
        imported.append(
            {
                "postcode": postcode,
                "county_code": _code(row.get("oscty")),
                "district_code": _code(row.get("oslaua")),
                "police_area": _code(row.get("pfa")),
                "health_area": _code(row.get("icb")),
                "latitude": _float(row.get("lat")),
                "longitude": _float(row.get("long")),
                "terminated": bool((row.get("doterm") or "").strip()),
            }
        )
    return imported


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    # ONSPD writes 99.999999 / 0.000000 where a postcode has no grid reference.
    return None if number in (99.999999, 0.0) else number
