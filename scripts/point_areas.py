"""Count an ONSPD-format extract into app/data/oxfordshire/point_areas.csv (issue 14).

Each row is one grid square of LAT_STEP by LON_STEP degrees (about 500 m by 500 m at 51.75°N,
so no projection is needed when a pin is looked up) and one combination of the four area codes
its postcodes have: county, district, police force area and NHS ICB, with how many postcodes of
that combination lie in the square. `lat`/`lon` are the square's index: floor(degrees / step).

The 2014 districts taken over by the unitary councils of 2020/21 are read as their successors,
as postcode_areas.csv reads them (Aylesbury Vale and Wycombe → Buckinghamshire E06000060, South
Northamptonshire → West Northamptonshire E06000062; their county becomes none, as for any
unitary). ONSPD's "no county" pseudo-codes become empty.

    python scripts/point_areas.py EXTRACT.csv           # write the table
    python scripts/point_areas.py EXTRACT.csv --check   # fail if the table is not what it makes
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections import Counter
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "app" / "data" / "oxfordshire" / "point_areas.csv"
# Kept in step with app/catalogue/locate.py's PointTable (it reads them from the table's rows
# only as indexes, so the steps are the contract): about 500 m each way at Oxfordshire.
LAT_STEP = 0.0045
LON_STEP = 0.0072
SUCCESSORS = {
    "E07000004": "E06000060",  # Aylesbury Vale → Buckinghamshire
    "E07000007": "E06000060",  # Wycombe → Buckinghamshire
    "E07000155": "E06000062",  # South Northamptonshire → West Northamptonshire
}
_NO_AREA = {"", "E99999999", "W99999999", "S99999999", "N99999999"}
FIELDS = ["lat", "lon", "county_code", "district_code", "police_area", "health_area", "postcodes"]


def areas(row: dict[str, str]) -> tuple[str, str, str, str]:
    """The four codes of one extract row, as the table stores them."""
    district = row["oslaua"].strip()
    county = row["oscty"].strip()
    if district in SUCCESSORS:
        district, county = SUCCESSORS[district], ""
    codes = (county, district, row["pfa"].strip(), row["icb"].strip())
    return tuple("" if code in _NO_AREA else code for code in codes)  # type: ignore[return-value]


def square(latitude: float, longitude: float) -> tuple[int, int]:
    """The grid square a point lies in."""
    return math.floor(latitude / LAT_STEP), math.floor(longitude / LON_STEP)


def counted(extract: Path) -> Counter[tuple[int, int, str, str, str, str]]:
    """Live postcodes with a grid reference, per square and area combination."""
    counts: Counter[tuple[int, int, str, str, str, str]] = Counter()
    with extract.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if (row.get("doterm") or "").strip():
                continue
            try:
                latitude, longitude = float(row["lat"]), float(row["long"])
            except ValueError:
                continue
            if latitude == 99.999999 or (latitude, longitude) == (0.0, 0.0):  # no grid reference
                continue
            counts[(*square(latitude, longitude), *areas(row))] += 1
    return counts


def written(counts: Counter[tuple[int, int, str, str, str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for key in sorted(counts):
        writer.writerow([*key, counts[key]])
    return out.getvalue()


def main(argv: list[str]) -> int:
    paths = [a for a in argv if not a.startswith("--")]
    if len(paths) != 1:
        print("usage: point_areas.py EXTRACT.csv [--check]", file=sys.stderr)
        return 2
    new = written(counted(Path(paths[0])))
    if "--check" in argv:
        if not TABLE.exists() or TABLE.read_text(encoding="utf-8") != new:
            print(f"{TABLE} is out of date: run scripts/point_areas.py {paths[0]}")
            return 1
        return 0
    TABLE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
