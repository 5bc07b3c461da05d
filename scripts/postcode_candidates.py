"""Fill postcode_areas.csv's `candidates` column from its notes, once (issue 11).

A straddling row's note reads "straddles Vale of White Horse (231) and South Oxfordshire (46)";
its candidates are then `E07000180:231 E07000179:46`: each council's GSS district code and its
postcodes in that prefix, largest first, as the note lists them. Rows that one council holds
get none. Run again after editing a note: `python scripts/postcode_candidates.py [--check]`.

The councils the notes name, with their GSS codes (ONS). The notes count OS Code-Point Open
2014 postcodes; Buckinghamshire and West Northamptonshire are the unitary councils of 2020/21
that took over those postcodes' districts (Aylesbury Vale and Wycombe; South Northamptonshire).
"Gloucestershire" and "Warwickshire" name counties: every one of their postcodes in these
prefixes is in Cotswold and Stratford-on-Avon districts, which collect the bins, so those
district codes are given (checked against the ONSPD extract's `oslaua` per postcode).
"""

from __future__ import annotations

import csv
import io
import re
import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "app" / "data" / "oxfordshire" / "postcode_areas.csv"
COUNCILS = {
    "Cherwell": "E07000177",
    "Oxford": "E07000178",
    "South Oxfordshire": "E07000179",
    "Vale of White Horse": "E07000180",
    "West Oxfordshire": "E07000181",
    "Buckinghamshire": "E06000060",
    "West Northamptonshire": "E06000062",
    "Reading": "E06000038",
    "Swindon": "E06000030",
    "West Berkshire": "E06000037",
    "Wokingham": "E06000041",
    "Windsor and Maidenhead": "E06000040",
    "Gloucestershire": "E07000079",  # Cotswold
    "Warwickshire": "E07000221",  # Stratford-on-Avon
}
_COUNT = re.compile(r"([A-Z][A-Za-z ]*?) \((\d+)\)")


def candidates(note: str) -> str:
    """`E07000180:231 E07000179:46` for a "straddles ..." note; empty for any other."""
    if not note.startswith("straddles "):
        return ""
    named = note.removeprefix("straddles ").split(";")[0].split(":")[0]
    found = [(name.removeprefix("and ").strip(), int(n)) for name, n in _COUNT.findall(named)]
    return " ".join(f"{COUNCILS[name]}:{count}" for name, count in found)


def rewritten(text: str) -> str:
    rows = list(csv.DictReader(io.StringIO(text)))
    fields = ["prefix", "county_code", "district_code", "police_area", "health_area"]
    out = io.StringIO()
    writer = csv.DictWriter(out, [*fields, "candidates", "note"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "candidates": candidates(row["note"])})
    return out.getvalue()


def main() -> int:
    text = TABLE.read_text(encoding="utf-8")
    new = rewritten(text)
    if "--check" in sys.argv:
        if new != text:
            print(f"{TABLE} is out of date: run scripts/postcode_candidates.py")
            return 1
        return 0
    TABLE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
