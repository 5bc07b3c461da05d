"""Locating postcodes and points: normalising, the built-in table, the gazetteer, HTTP."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from app.catalogue.locate import (
    Gazetteer,
    HttpLocator,
    LocatorChain,
    PostcodeTable,
    import_onspd_rows,
    normalise_postcode,
)
from app.core.models import gazetteer_table
from app.core.settings import SHIPPED_CONFIG_DIR
from tests.conftest import ThreadedServer

TABLE = PostcodeTable.from_csv(SHIPPED_CONFIG_DIR / "postcode_areas.csv")


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("ox4 1aa", "OX4 1AA"),
        (" OX41AA ", "OX4 1AA"),
        ("sw1a 1aa", "SW1A 1AA"),
        ("gir0aa", "GIR 0AA"),
        ("OX4", None),
        ("12345", None),
        ("OX4 1AAA", None),
        ("", None),
    ],
)
def test_normalise_postcode(typed, expected):
    assert normalise_postcode(typed) == expected


async def locate(source, postcode=None, lat=None, lon=None):
    return await source.locate(postcode=postcode, latitude=lat, longitude=lon)


async def test_table_sector_row_wins_over_district_row():
    place = await locate(TABLE, "OX1 1AA")
    assert place.district_code == "E07000178"
    assert place.precision == "sector"


async def test_table_straddling_sector_is_left_undecided_with_a_reason():
    place = await locate(TABLE, "OX1 5BB")
    assert place.county_code == "E10000025"
    assert place.district_code is None
    assert "Vale of White Horse" in place.note


async def test_table_unlisted_sector_falls_back_to_its_district():
    place = await locate(TABLE, "OX10 7ZZ")
    assert place.precision == "district"
    assert place.district_code == "E07000179"


async def test_table_marks_other_areas_outside():
    place = await locate(TABLE, "SW1A 1AA")
    assert place.outside
    assert "SW1A 1" in place.note


async def test_every_oxfordshire_postcode_district_is_in_the_table():
    oxfordshire = [
        1,
        2,
        3,
        4,
        5,
        7,
        9,
        10,
        11,
        12,
        13,
        14,
        15,
        16,
        17,
        18,
        20,
        25,
        26,
        27,
        28,
        29,
        33,
        39,
        44,
        49,
    ]
    for number in oxfordshire:
        place = await locate(TABLE, f"OX{number} 9ZZ")
        assert not place.outside, number
        # Decided, or undecided with a reason a person at the triage desk can read.
        assert place.county_code == "E10000025" or place.note


ONSPD = [
    {
        "pcds": "OX1 5AB",
        "oscty": "E10000025",
        "oslaua": "E07000180",
        "pfa": "E23000029",
        "icb": "E54000044",
        "lat": "51.7240",
        "long": "-1.2540",
        "doterm": "",
    },
    {
        "pcds": "RG1 1AA",
        "oscty": "E99999999",
        "oslaua": "E06000038",
        "pfa": "E23000029",
        "icb": "E54000044",
        "lat": "51.4560",
        "long": "-0.9690",
        "doterm": "201501",
    },
    {
        "pcds": "not a postcode",
        "oscty": "",
        "oslaua": "",
        "pfa": "",
        "icb": "",
        "lat": "",
        "long": "",
        "doterm": "",
    },
]


def test_onspd_rows_are_mapped_and_bad_rows_skipped():
    rows = import_onspd_rows(ONSPD)
    assert [r["postcode"] for r in rows] == ["OX1 5AB", "RG1 1AA"]
    assert rows[1]["county_code"] is None  # the pseudo-code for "no county"
    assert rows[1]["terminated"] is True


async def test_gazetteer_answers_exactly_and_by_nearest_point(engine):
    async with engine.begin() as conn:
        await conn.execute(gazetteer_table.insert(), import_onspd_rows(ONSPD))
    gazetteer = Gazetteer(engine)
    exact = await locate(gazetteer, "OX1 5AB")
    assert (exact.district_code, exact.precision, exact.source) == (
        "E07000180",
        "postcode",
        "gazetteer",
    )
    near = await locate(gazetteer, lat=51.7241, lon=-1.2541)
    assert (near.postcode, near.precision) == ("OX1 5AB", "point")
    assert await locate(gazetteer, lat=52.5, lon=-1.0) is None
    assert (await locate(gazetteer, "RG1 1AA")).note == "terminated postcode"


async def test_chain_prefers_the_gazetteer_over_the_table(engine):
    async with engine.begin() as conn:
        await conn.execute(gazetteer_table.insert(), import_onspd_rows(ONSPD))
    chain = LocatorChain([Gazetteer(engine), TABLE])
    # The table cannot decide OX1 5; the imported directory can.
    assert (await locate(chain, "OX1 5AB")).district_code == "E07000180"
    assert (await locate(chain, "OX1 5ZZ")).district_code is None
    assert (await locate(chain)).note == "no postcode or point given"


@pytest.fixture(scope="module")
def postcodes_io():
    app = FastAPI()

    @app.get("/postcodes/{postcode}")
    async def one(postcode: str):
        if postcode != "OX1 5AB":
            return JSONResponse({"status": 404, "error": "Postcode not found"}, 404)
        return {
            "status": 200,
            "result": {
                "postcode": "OX1 5AB",
                "latitude": 51.724,
                "longitude": -1.254,
                "codes": {
                    "admin_county": "E10000025",
                    "admin_district": "E07000180",
                    "pfa": "E23000029",
                    "icb": "E54000044",
                },
            },
        }

    def nearby(postcode: str, district: str, lat: float, lon: float) -> dict:
        codes = {"admin_county": "E10000025", "pfa": "E23000029", "icb": "E54000044"}
        return {
            "postcode": postcode,
            "latitude": lat,
            "longitude": lon,
            "codes": {**codes, "admin_district": district},
        }

    @app.get("/postcodes")
    async def near(lat: float, lon: float):
        found = [nearby("OX1 5AB", "E07000180", lat, lon)]
        if lon == -1.254:  # Kennington: an Oxford postcode near the Vale's, too
            found += [nearby("OX1 5AA", "E07000180", lat, lon)] * 2
            found.append(nearby("OX1 4XX", "E07000178", lat, lon))
        return {"status": 200, "result": found}

    server = ThreadedServer(app).start()
    yield server
    server.stop()


async def test_http_locator_reads_postcodes_io_answers(postcodes_io):
    async with httpx.AsyncClient() as client:
        locator = HttpLocator(client, postcodes_io.url, timeout=2)
        place = await locate(locator, "OX1 5AB")
        assert (place.district_code, place.source) == ("E07000180", "http")
        assert await locate(locator, "OX1 5ZZ") is None
        by_point = await locate(locator, lat=51.72, lon=-1.25)
        assert by_point.postcode == "OX1 5AB"
        assert by_point.precision == "point"
        # Its nearest postcodes disagree: not the nearest one's council by luck.
        between = await locate(locator, lat=51.724, lon=-1.254)
        assert (between.district_code, between.postcode) == (None, None)
        assert between.candidates == (("E07000180", 3), ("E07000178", 1))
        assert between.note == (
            "the 4 postcodes the HTTP locator gave near this point lie in more than one "
            "district (E07000180: 3, E07000178: 1)"
        )
        assert (between.county_code, between.police_area) == ("E10000025", "E23000029")


async def test_http_locator_down_falls_through_to_the_table():
    async with httpx.AsyncClient() as client:
        down = HttpLocator(client, "http://127.0.0.1:9", timeout=0.5)
        place = await locate(LocatorChain([down, TABLE]), "OX1 1AA")
    assert place.source == "table"
    assert place.district_code == "E07000178"


async def test_a_straddling_sector_gives_its_councils_as_structured_candidates():
    place = await TABLE.locate(postcode="OX14 3AB", latitude=None, longitude=None)
    assert place is not None
    assert place.district_code is None
    assert place.candidates == (("E07000180", 231), ("E07000179", 46))
    assert place.note == "straddles Vale of White Horse (231) and South Oxfordshire (46)"
    decided = await TABLE.locate(postcode="OX14 1AA", latitude=None, longitude=None)
    assert decided is not None
    assert decided.candidates == ()


def test_the_tables_candidates_are_made_from_its_notes():
    script = Path(__file__).resolve().parents[2] / "scripts" / "postcode_candidates.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
