"""Routing is a pure function: every shipped service, in clear, ambiguous and unknown places."""

import pytest

from app.catalogue.catalogue import load_catalogue
from app.catalogue.locate import Place
from app.catalogue.routing import route
from app.core.errors import OutOfArea
from app.core.settings import SHIPPED_CONFIG_DIR

CATALOGUE = load_catalogue(SHIPPED_CONFIG_DIR, variables={"IAP_SANDBOX_URL": "http://sandbox"})
COUNTY = "E10000025"
OXFORD, VALE, SOUTH, CHERWELL, WEST = (
    "E07000178",
    "E07000180",
    "E07000179",
    "E07000177",
    "E07000181",
)
POLICE, ICB = "E23000029", "E54000044"

WITNEY = Place(
    county_code=COUNTY,
    district_code=WEST,
    police_area=POLICE,
    health_area=ICB,
    postcode="OX28 6AA",
    precision="postcode",
    source="gazetteer",
)
# Kennington: county, police and NHS are known, the district is not.
KENNINGTON = Place(
    county_code=COUNTY,
    police_area=POLICE,
    health_area=ICB,
    postcode="OX1 5AA",
    precision="sector",
    source="table",
    note="straddles Oxford and Vale",
)
NOWHERE = Place(note="no postcode or point given")

CASES = [
    # service, place, expected organisations
    ("pothole", WITNEY, ["oxfordshire-county"]),
    ("street-light", WITNEY, ["oxfordshire-county"]),
    ("road-gritting", WITNEY, ["oxfordshire-county"]),
    ("library", WITNEY, ["oxfordshire-county"]),
    ("social-care-assessment", WITNEY, ["oxfordshire-county"]),
    ("blue-badge", WITNEY, ["oxfordshire-county"]),
    ("school-place", WITNEY, ["oxfordshire-county"]),
    ("missed-bin", WITNEY, ["west-oxfordshire"]),
    ("recycling", WITNEY, ["west-oxfordshire"]),
    ("fly-tipping", WITNEY, ["west-oxfordshire"]),
    ("graffiti", WITNEY, ["west-oxfordshire"]),
    ("noise-nuisance", WITNEY, ["west-oxfordshire"]),
    ("pest-control", WITNEY, ["west-oxfordshire"]),
    ("council-tax", WITNEY, ["west-oxfordshire"]),
    ("council-housing", WITNEY, ["west-oxfordshire"]),
    ("planning", WITNEY, ["west-oxfordshire"]),
    ("building-regulations", WITNEY, ["west-oxfordshire"]),
    ("non-emergency-crime", WITNEY, ["thames-valley-police"]),
    ("anti-social-behaviour", WITNEY, ["west-oxfordshire", "thames-valley-police"]),
    ("health-enquiry", WITNEY, ["nhs-bob-icb"]),
    ("general-enquiry", WITNEY, ["contact-centre"]),
    # An undecided district only sends district work to triage; the county still gets its own.
    ("pothole", KENNINGTON, ["oxfordshire-county"]),
    ("missed-bin", KENNINGTON, ["contact-centre"]),
    ("anti-social-behaviour", KENNINGTON, ["contact-centre", "thames-valley-police"]),
    ("health-enquiry", KENNINGTON, ["nhs-bob-icb"]),
    # No place at all: anything that depends on the place goes to a person.
    ("council-tax", NOWHERE, ["contact-centre"]),
    ("library", NOWHERE, ["contact-centre"]),
    ("health-enquiry", NOWHERE, ["contact-centre"]),
    ("general-enquiry", NOWHERE, ["contact-centre"]),
]


def test_every_shipped_service_has_a_case():
    assert {service for service, _, _ in CASES} == set(CATALOGUE.services)


@pytest.mark.parametrize(("service", "place", "expected"), CASES)
def test_route(service, place, expected):
    destinations = route(service=CATALOGUE.services[service], place=place, catalogue=CATALOGUE)
    assert [d.organisation_id for d in destinations] == expected
    assert all(d.reason for d in destinations)


def test_each_district_gets_its_own_bins():
    for code, organisation in [
        (OXFORD, "oxford-city"),
        (VALE, "vale-of-white-horse"),
        (SOUTH, "south-oxfordshire"),
        (CHERWELL, "cherwell"),
        (WEST, "west-oxfordshire"),
    ]:
        place = Place(county_code=COUNTY, district_code=code, source="table", precision="sector")
        [destination] = route(
            service=CATALOGUE.services["missed-bin"], place=place, catalogue=CATALOGUE
        )
        assert destination.organisation_id == organisation
        assert code in destination.reason


def test_reason_says_why_triage():
    [triage] = route(
        service=CATALOGUE.services["missed-bin"], place=KENNINGTON, catalogue=CATALOGUE
    )
    assert "OX1 5AA" in triage.reason
    assert "straddles Oxford and Vale" in triage.reason


def test_outside_every_area_is_refused():
    reading = Place(
        district_code="E06000038",
        county_code=None,
        police_area=POLICE,
        health_area=ICB,
        postcode="RG1 1AA",
        source="gazetteer",
    )
    with pytest.raises(OutOfArea, match="RG1 1AA"):
        route(service=CATALOGUE.services["pothole"], place=reading, catalogue=CATALOGUE)
    # ...but Reading is still Thames Valley Police's, so a crime there is routed.
    [police] = route(
        service=CATALOGUE.services["non-emergency-crime"], place=reading, catalogue=CATALOGUE
    )
    assert police.organisation_id == "thames-valley-police"


def test_known_to_lie_outside_the_table_is_refused():
    outside = Place(postcode="SW1A 1AA", source="table", outside=True)
    with pytest.raises(OutOfArea):
        route(service=CATALOGUE.services["missed-bin"], place=outside, catalogue=CATALOGUE)


def test_a_unitary_authority_does_both_tiers():
    unitary = CATALOGUE.model_copy(
        update={
            "organisations": {
                **CATALOGUE.organisations,
                "reading": CATALOGUE.organisations["cherwell"].model_copy(
                    update={
                        "id": "reading",
                        "name": "Reading Borough Council",
                        "kind": "unitary",
                        "areas": ("E06000038",),
                    }
                ),
            }
        }
    )
    place = Place(
        district_code="E06000038", police_area=POLICE, source="gazetteer", postcode="RG1 1AA"
    )
    for service in ("pothole", "missed-bin"):
        [destination] = route(service=CATALOGUE.services[service], place=place, catalogue=unitary)
        assert destination.organisation_id == "reading"
