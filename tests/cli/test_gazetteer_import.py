"""`iap gazetteer import` of a real ONS Postcode Directory extract (24,405 rows of Oxfordshire
and its border sectors): what it imports, what it skips and why, and exact answers after."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli.test_cli import ROOT, iap

EXTRACT = "oxfordshire-postcodes-onspd.csv"


def shared_extract() -> Path:
    """The extract in shared/data beside the repository (CI: ../shared; a worktree further up)."""
    for folder in ROOT.parents:
        candidate = folder / "shared" / "data" / EXTRACT
        if candidate.exists():
            return candidate
    raise AssertionError(f"no shared/data/{EXTRACT} beside {ROOT} or above it")


# Rows an operator's download may also hold: a terminated postcode (kept and marked), a postcode
# far outside every area of the table, and rows with no valid postcode.
EXTRA_ROWS = [
    '"OX4 9ZZ","OX4  9ZZ","OX4 9ZZ","198001","201012","E10000025","","E07000178"',
    '"SW1A 1AA","SW1A 1AA","SW1A 1AA","198001","","E99999999","","E09000033"',
    '"NOTAPC","NOTAPC","NOTAPC","198001","","E10000025","","E07000178"',
    '"","","","198001","","E10000025","","E07000178"',
]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    copy = tmp_path / "onspd.csv"
    shutil.copy(shared_extract(), copy)
    with copy.open("a") as handle:
        handle.write("\n".join(EXTRA_ROWS) + "\n")
    return copy


def explain(service: str, postcode: str, database_url: str) -> str:
    args = ("routes", "explain", "--service", service, "--postcode", postcode)
    return iap(*args, database_url=database_url, check=False).stdout


def test_importing_the_directory_says_what_it_took_and_skipped(directory, database_url):
    result = iap("gazetteer", "import", str(directory), database_url=database_url)
    assert (
        "imported 24406 postcodes (1 of them terminated, kept and marked) from 24409 rows"
        in result.stdout
    )
    assert (
        "skipped 3: 2 without a valid postcode, 1 outside every area of postcode_areas.csv"
        in result.stdout
    )
    assert "rows/s" in result.stdout
    # Kennington (OX1 5, a sector split between Oxford and the Vale) is answered per postcode.
    vale = explain("missed-bin", "OX1 5AB", database_url)
    assert "decision: vale-of-white-horse:" in vale
    assert "via gazetteer" in vale
    oxford = explain("missed-bin", "OX1 5AJ", database_url)
    assert "decision: oxford-city:" in oxford
    assert "via gazetteer" in oxford
    # Over the county border: the gazetteer knows it is Cotswold's, not Oxfordshire's.
    assert "refused (out-of-area)" in explain("pothole", "GL7 3AA", database_url)


def test_a_file_that_is_not_the_directory_is_refused(database_url, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("name,phone\nAnn,01295 000000\n")
    result = iap("gazetteer", "import", str(other), database_url=database_url, check=False)
    assert result.returncode == 2
    assert "has no pcds or pcd column" in result.stderr
    assert "Traceback" not in result.stderr
