"""Any unsubscribe link, however mangled, is answered (403, 404 or 422 as problem+json, never a
500) on either database, and stops nothing unless it is the enquiry's own."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from app.core.models import enquiry_table
from tests import strategies as fuzz
from tests.alerts.conftest import EMAIL_CITIZEN, enquiry_id, missed_bin
from tests.api.test_fuzz import assert_answered

e = enquiry_table.c
ids = st.one_of(st.uuids().map(str), fuzz.odd_text, st.sampled_from(["MINE", ""]))
signatures = st.one_of(fuzz.odd_text, st.text(max_size=80), st.sampled_from(["MINE"]))


def _escaped(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@given(enquiry=ids, signature=signatures, post=st.booleans(), body=st.binary(max_size=64))
async def test_any_unsubscribe_link_is_answered(
    client, anonymous, app, enquiry, signature, post, body
):
    created = (await client.post("/v1/enquiries", json=missed_bin(EMAIL_CITIZEN))).json()
    ours = await enquiry_id(app, created["reference"])
    if enquiry == "MINE":
        enquiry = str(ours)
    if signature == "MINE":
        signature = app.state.iap.sealer.unsubscribe_signature(ours)
    path = f"/v1/alerts/unsubscribe?enquiry={_escaped(enquiry)}&signature={_escaped(signature)}"
    if post:
        headers = {"content-type": "application/x-www-form-urlencoded"}
        response = await anonymous.post(path, content=body, headers=headers)
    else:
        response = await anonymous.get(path)
    assert_answered(response)
    genuine = enquiry == str(ours) and signature == app.state.iap.sealer.unsubscribe_signature(ours)
    assert (response.status_code == 200) == genuine
    async with app.state.iap.engine.connect() as conn:
        stopped = await conn.scalar(select(e.alerts_stopped_at).where(e.id == ours))
    assert (stopped is not None) == (genuine and post)
