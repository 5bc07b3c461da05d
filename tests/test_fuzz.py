"""Whatever a client sends to the intake, it gets a 2xx or a problem, never a 500 or a half-stored
enquiry."""

from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.models import dispatch_table, enquiry_table, event_table
from tests.conftest import enquiry_body

finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["service_code", "description", "channel", "location", "citizen", "attributes", "consent"]
nearly_valid = st.builds(
    lambda changes, dropped: {
        **{k: v for k, v in enquiry_body().items() if k not in dropped},
        **changes,
    },
    st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=3),
    st.sets(st.sampled_from(FIELDS), max_size=2),
)
postcodes = st.from_regex(r"[A-Z]{1,2}[0-9]{1,2} ?[0-9][A-Z]{2}", fullmatch=True)


async def stored(engine):
    async with engine.connect() as conn:
        return [
            await conn.scalar(select(func.count()).select_from(t))
            for t in (enquiry_table, dispatch_table, event_table)
        ]


def consistent(counts, accepted):
    enquiries, dispatches, events = counts
    return enquiries == accepted and events >= enquiries and dispatches >= enquiries


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=nearly_valid | json_values)
async def test_any_body_gets_an_answer_and_nothing_half_stored(client, engine, body):
    before = await stored(engine)
    response = await client.post("/v1/enquiries", json=body)
    # 415 when there is no body at all (no content type).
    assert response.status_code in (201, 400, 413, 415, 422), response.text
    if response.status_code != 201:
        assert response.headers["content-type"] == "application/problem+json"
        assert await stored(engine) == before
    else:
        assert consistent(await stored(engine), before[0] + 1)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(postcode=postcodes)
async def test_any_postcode_is_routed_or_refused_clearly(client, postcode):
    response = await client.post(
        "/v1/enquiries", json=enquiry_body(location={"postcode": postcode})
    )
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        assert response.json()["type"] in ("/problems/out-of-area", "/problems/validation")


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.text(max_size=40))
async def test_any_reference_text_is_answered(client, text):
    response = await client.get(f"/v1/enquiries/{quote(text, safe='') or 'x'}")
    assert response.status_code in (307, 404, 422), response.text  # 307: a trailing slash
    if response.status_code != 307:
        assert response.headers["content-type"] == "application/problem+json"


async def test_non_finite_numbers_are_refused(client, engine):
    for literal in (b"1e999", b"NaN", b"-Infinity"):
        body = (
            b'{"service_code": "pothole", "description": "x", "channel": "web", '
            b'"location": {"postcode": "OX4 1AA"}, '
            b'"attributes": {"road_or_pavement": "road", "depth_cm": ' + literal + b"}}"
        )
        response = await client.post(
            "/v1/enquiries", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
    assert await stored(engine) == [0, 0, 0]
