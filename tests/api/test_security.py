"""API keys and scopes on every route, own enquiries against all, a client's fixed channel, and
the citizen's access token: masked details, and no way to tell a wrong token from no enquiry."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import select, update

from app.cli import load_development_key
from app.clients import service as clients_service
from app.clients.service import (
    DEVELOPMENT_CLIENT,
    Scope,
    authenticate,
    create_client,
    revoke_client,
    split_key,
)
from app.core.models import api_client_table, enquiry_table, utcnow
from app.core.reference import display, new_reference
from app.core.settings import Environment
from app.intake import reading as enquiries_service
from app.intake.reading import masked_citizen
from app.main import create_app
from tests.conftest import bearer, enquiry_body, make_key, make_settings

ROOT = Path(__file__).resolve().parents[2]
READERS = (Scope.enquiries_read, Scope.enquiries_read_all)
PUBLIC = "public"  # no key needed
OWN_AUTH = "own"  # the organisation's signature or api_key, not an API key
SIGNED = "signed"  # a link we signed is the proof (a file's URL, an unsubscribe link)
TOKEN = "token"  # the citizen's page: their access token is the proof, a key changes nothing
CONSOLE = "console"  # a console page: a staff session is the proof; anyone else is sent to sign in
KIOSK = "kiosk"  # the kiosk's pages: the device's sealed cookie is the proof, a key changes nothing
OPEN311 = "open311"  # Open311's api_key (form, query or Bearer), refused in Open311's shape

# Every route of the app and who may call it. A route missing here fails the first test, so a
# new route cannot be added without deciding this.
POLICY: dict[tuple[str, str], str | tuple[Scope, ...]] = {
    ("POST", "/v1/enquiries"): (Scope.enquiries_submit,),
    ("GET", "/v1/enquiries"): READERS,
    ("GET", "/v1/enquiries/{reference}"): READERS,
    ("POST", "/v1/enquiries/{reference}/parts/{organisation_id}/updates"): (Scope.parts_update,),
    ("GET", "/v1/parts"): (Scope.parts_update,),
    ("GET", "/v1/organisations"): (Scope.enquiries_read_all,),
    ("POST", "/v1/privacy/subject-access"): (Scope.privacy,),
    ("POST", "/v1/privacy/erasure"): (Scope.privacy,),
    ("GET", "/v1/audit"): (Scope.admin,),
    ("POST", "/v1/webhooks"): (Scope.webhooks_manage,),
    ("GET", "/v1/webhooks"): (Scope.webhooks_manage,),
    ("GET", "/v1/webhooks/{subscription_id}"): (Scope.webhooks_manage,),
    ("DELETE", "/v1/webhooks/{subscription_id}"): (Scope.webhooks_manage,),
    ("GET", "/v1/triage"): (Scope.triage,),
    ("POST", "/v1/triage/{reference}/claim"): (Scope.triage,),
    ("DELETE", "/v1/triage/{reference}/claim"): (Scope.triage,),
    ("POST", "/v1/enquiries/{reference}/hand-on"): (Scope.triage,),
    ("POST", "/v1/enquiries/{reference}/relocate"): (Scope.triage,),
    ("POST", "/v1/enquiries/{reference}/close"): (Scope.triage,),
    ("POST", "/v1/webhooks/{subscription_id}/enable"): (Scope.webhooks_manage,),
    ("PATCH", "/v1/webhooks/{subscription_id}"): (Scope.webhooks_manage,),
    ("POST", "/v1/webhooks/{subscription_id}/rotate-secret"): (Scope.webhooks_manage,),
    ("POST", "/v1/webhooks/{subscription_id}/test"): (Scope.webhooks_manage,),
    ("GET", "/v1/webhooks/{subscription_id}/deliveries"): (Scope.webhooks_manage,),
    ("GET", "/v1/webhooks/{subscription_id}/deliveries/{delivery_id}"): (Scope.webhooks_manage,),
    ("POST", "/v1/webhooks/{subscription_id}/deliveries/{delivery_id}/resend"): (
        Scope.webhooks_manage,
    ),
    ("POST", "/v1/webhooks/{subscription_id}/recover"): (Scope.webhooks_manage,),
    ("GET", "/v1/dispatches"): (Scope.deliveries_manage,),
    ("POST", "/v1/dispatches/redrive"): (Scope.deliveries_manage,),
    ("POST", "/v1/dispatches/{dispatch_id}/redrive"): (Scope.deliveries_manage,),
    ("POST", "/v1/dispatches/{dispatch_id}/close"): (Scope.deliveries_manage,),
    ("GET", "/v1/webhook-deliveries"): (Scope.webhooks_manage, Scope.deliveries_manage),
    ("POST", "/v1/webhook-deliveries/{delivery_id}/redrive"): (
        Scope.webhooks_manage,
        Scope.deliveries_manage,
    ),
    ("GET", "/v1/stuck"): (Scope.deliveries_manage,),
    ("GET", "/v1/services"): PUBLIC,
    ("GET", "/v1/services/{code}"): PUBLIC,
    ("POST", "/v1/inbound/{organisation}"): OWN_AUTH,
    ("POST", "/v1/inbound/{organisation}/servicerequestupdates"): OWN_AUTH,
    # The conversation: the citizen by their token (no key), the submitting client, staff.
    ("POST", "/v1/enquiries/{reference}/information"): (
        Scope.enquiries_submit,
        Scope.enquiries_read_all,
    ),
    ("POST", "/v1/enquiries/{reference}/withdraw"): (
        Scope.enquiries_submit,
        Scope.enquiries_read_all,
    ),
    ("POST", "/v1/enquiries/{reference}/reopen"): (
        Scope.enquiries_submit,
        Scope.enquiries_read_all,
    ),
    ("POST", "/v1/enquiries/{reference}/notes"): (Scope.enquiries_read_all,),
    ("GET", "/v1/enquiries/{reference}/attachments/{attachment_id}"): READERS,
    # A back-office fetching a file, a citizen unsubscribing: the signed link is the proof.
    ("GET", "/v1/attachments/{attachment_id}"): SIGNED,
    ("GET", "/v1/alerts/unsubscribe"): SIGNED,
    ("POST", "/v1/alerts/unsubscribe"): SIGNED,
    # The citizen's tracking page (app/routers/track.py): the token in its link.
    ("GET", "/track/{reference}"): TOKEN,
    ("POST", "/track/{reference}/information"): TOKEN,
    ("POST", "/track/{reference}/withdraw"): TOKEN,
    ("POST", "/track/{reference}/reopen"): TOKEN,
    # The console (app/routers/console): its sign-in pages are open; the rest need a session.
    ("GET", "/console/sign-in"): PUBLIC,
    ("POST", "/console/sign-in"): PUBLIC,
    ("GET", "/console/sign-in/code"): PUBLIC,
    ("POST", "/console/sign-in/code"): PUBLIC,
    ("POST", "/console/sign-out"): PUBLIC,
    ("GET", "/console/sign-in/sso"): PUBLIC,
    ("GET", "/console/sign-in/sso/callback"): PUBLIC,
    ("GET", "/console/"): CONSOLE,
    ("GET", "/console/enquiries/{reference}"): CONSOLE,
    ("GET", "/console/enquiries/{reference}/attachments/{attachment_id}"): CONSOLE,
    ("POST", "/console/enquiries/{reference}/information"): CONSOLE,
    ("POST", "/console/enquiries/{reference}/notes"): CONSOLE,
    ("POST", "/console/enquiries/{reference}/withdraw"): CONSOLE,
    ("POST", "/console/enquiries/{reference}/reopen"): CONSOLE,
    ("POST", "/console/enquiries/{reference}/hand-on"): CONSOLE,
    ("GET", "/console/still-there"): CONSOLE,
    ("GET", "/console/calls/new"): CONSOLE,
    ("POST", "/console/calls/new"): CONSOLE,
    ("GET", "/console/calls/preview"): CONSOLE,
    ("GET", "/console/calls/sent/{reference}"): CONSOLE,
    ("GET", "/console/history"): CONSOLE,
    ("POST", "/console/history"): CONSOLE,
    # The work queues (app/routers/console/triage.py, dead_letters.py, stuck.py, queue.py).
    ("GET", "/console/triage"): CONSOLE,
    ("POST", "/console/triage/{reference}/claim"): CONSOLE,
    ("POST", "/console/triage/{reference}/release"): CONSOLE,
    ("POST", "/console/triage/{reference}/hand-on"): CONSOLE,
    ("POST", "/console/triage/{reference}/close"): CONSOLE,
    ("GET", "/console/dead-letters"): CONSOLE,
    ("POST", "/console/dead-letters/redrive"): CONSOLE,
    ("POST", "/console/dead-letters/redrive-ticked"): CONSOLE,
    ("POST", "/console/dead-letters/{dispatch_id}/redrive"): CONSOLE,
    ("POST", "/console/dead-letters/{dispatch_id}/close"): CONSOLE,
    ("GET", "/console/stuck"): CONSOLE,
    ("GET", "/console/queue"): CONSOLE,
    ("POST", "/console/queue/{reference}/update"): CONSOLE,
    # The kiosk (app/routers/kiosk.py): set up with a kiosk key, then its device cookie.
    ("GET", "/kiosk/setup"): PUBLIC,
    ("POST", "/kiosk/setup"): PUBLIC,
    ("GET", "/kiosk/"): KIOSK,
    ("GET", "/kiosk/question/{step}"): KIOSK,
    ("POST", "/kiosk/question/{step}"): KIOSK,
    ("POST", "/kiosk/submit"): KIOSK,
    ("GET", "/kiosk/receipt"): KIOSK,
    ("GET", "/kiosk/still-there"): KIOSK,
    # The Open311 front door (app/routers/open311.py): its scopes in OPEN311_SCOPES.
    ("GET", "/open311/v2/discovery.{fmt}"): PUBLIC,
    ("GET", "/open311/v2/services.{fmt}"): PUBLIC,
    ("GET", "/open311/v2/services/{code}.{fmt}"): PUBLIC,
    ("POST", "/open311/v2/requests.{fmt}"): OPEN311,
    ("GET", "/open311/v2/requests.{fmt}"): OPEN311,
    ("GET", "/open311/v2/requests/{request_id}.{fmt}"): OPEN311,
    ("GET", "/open311/v2/tokens/{token}.{fmt}"): OPEN311,
    ("GET", "/open311/v2/servicerequestupdates.{fmt}"): OPEN311,
    ("POST", "/open311/v2/servicerequestupdates.{fmt}"): OPEN311,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/problems/{slug}"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
}
OPEN311_SCOPES: dict[tuple[str, str], tuple[Scope, ...]] = {
    ("POST", "/open311/v2/requests.{fmt}"): (Scope.enquiries_submit,),
    ("GET", "/open311/v2/requests.{fmt}"): READERS,
    ("GET", "/open311/v2/requests/{request_id}.{fmt}"): READERS,
    ("GET", "/open311/v2/tokens/{token}.{fmt}"): (*READERS, Scope.enquiries_submit),
    ("GET", "/open311/v2/servicerequestupdates.{fmt}"): READERS,
    ("POST", "/open311/v2/servicerequestupdates.{fmt}"): (
        Scope.enquiries_submit,
        Scope.enquiries_read_all,
    ),
}
PATH_VALUES = {
    "code": "pothole",
    "fmt": "json",
    "request_id": "K7Q-M4X-PB6",
    "token": "00000000-0000-4000-8000-000000000000",
    "slug": "validation",
    "subscription_id": "00000000-0000-4000-8000-000000000000",
    "organisation_id": "oxfordshire-county",
    "dispatch_id": "00000000-0000-4000-8000-000000000000",
    "delivery_id": "00000000-0000-4000-8000-000000000000",
    "attachment_id": "00000000-0000-4000-8000-000000000000",
    "step": "topic",
}
BODIES = {
    "/v1/enquiries": enquiry_body(),
    "/v1/privacy/subject-access": {"email": "nobody@example.org"},
    "/v1/privacy/erasure": {"email": "nobody@example.org"},
    "/v1/webhooks": {"url": "https://127.0.0.1:9/events", "events": ["*"]},
    "/v1/webhooks/{subscription_id}/recover": {"since": "2026-01-01T00:00Z"},
    "/v1/enquiries/{reference}/hand-on": {"organisations": ["oxford-city"], "reason": "Oxford"},
    "/v1/enquiries/{reference}/relocate": {"location": {"postcode": "OX1 1AA"}},
    "/v1/enquiries/{reference}/close": {"outcome": "first_contact", "note": "Advice given"},
    "/v1/enquiries/{reference}/parts/{organisation_id}/updates": {"status": "acknowledged"},
    "/v1/dispatches/redrive": {"organisation": "oxfordshire-county", "since": "2026-01-01T00:00Z"},
    "/v1/dispatches/{dispatch_id}/close": {"note": "seen to by phone"},
    "/v1/enquiries/{reference}/information": {"text": "It is by the bus stop"},
    "/v1/enquiries/{reference}/withdraw": {"reason": "Fixed already"},
    "/v1/enquiries/{reference}/reopen": {"reason": "Not fixed after all"},
    "/v1/enquiries/{reference}/notes": {"text": "Caller rang twice"},
}
# The county pushes signed webhooks; Oxford City pushes Open311 updates with an api_key.
PUSHER = {"/v1/inbound/{organisation}": "oxfordshire-county"}


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route, included routers' routes too (as OpenAPI finds them)."""
    app = create_app(make_settings("sqlite+aiosqlite:///unused.db", "http://127.0.0.1:8090"))
    return {
        (method, str(route.path))
        for route in iter_route_contexts(app.routes)
        for method in route.methods or ()
        if method != "HEAD"
    }


def test_every_route_has_a_policy():
    assert app_routes() == set(POLICY)


async def call(http: Any, method: str, path: str, reference: str, key: str | None = None) -> Any:
    url = path.format(
        reference=reference, organisation=PUSHER.get(path, "oxford-city"), **PATH_VALUES
    )
    headers = bearer(key) if key else {}
    body = BODIES.get(path, {})
    if method == "POST" and path.startswith("/open311/"):  # Open311 posts forms
        form = {"service_code": "pothole", "address_string": "High Street"}
        return await http.post(url, data=form, headers=headers)
    if method == "POST":
        return await http.post(url, json=body, headers=headers)
    if method == "DELETE":
        return await http.delete(url, headers=headers)
    return await http.get(url, headers=headers)


@pytest.mark.parametrize(("method", "path"), sorted(POLICY))
async def test_each_route_answers_by_key_and_scope(method, path, client, anonymous, engine):
    reference = (await client.post("/v1/enquiries", json=enquiry_body())).json()["reference"]
    policy = POLICY[(method, path)]
    answer = await call(anonymous, method, path, reference)
    if policy == PUBLIC:
        assert answer.status_code not in (401, 403), answer.text
        return
    if policy == SIGNED:
        # Without the link's signature, refused (or its missing parts named); a key, even an
        # administrator's, is no signature and changes nothing.
        assert answer.status_code in (403, 422), answer.text
        admin = await make_key(engine, Scope.admin)
        with_key = await call(anonymous, method, path, reference, admin)
        assert (with_key.status_code, with_key.json()["type"]) == (
            answer.status_code,
            answer.json()["type"],
        )
        return
    if policy == TOKEN:
        # Without the token, the one page for any wrong link; a key, even an administrator's,
        # is no token and changes nothing.
        assert answer.status_code == 404, answer.text
        admin = await make_key(engine, Scope.admin)
        with_key = await call(anonymous, method, path, reference, admin)
        assert (with_key.status_code, with_key.text) == (404, answer.text)
        return
    if policy == CONSOLE:
        # Without a session, to the sign-in page (nothing done); a key is no session.
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"].startswith("/console/sign-in?next=")
        admin = await make_key(engine, Scope.admin)
        with_key = await call(anonymous, method, path, reference, admin)
        assert (with_key.status_code, with_key.headers["location"]) == (
            303,
            answer.headers["location"],
        )
        return
    if policy == KIOSK:
        # Without a device cookie, the one "not set up" page; a key, even an administrator's,
        # is no kiosk and changes nothing.
        assert answer.status_code == 403, answer.text
        assert "This kiosk is not set up" in answer.text
        admin = await make_key(engine, Scope.admin)
        with_key = await call(anonymous, method, path, reference, admin)
        assert (with_key.status_code, with_key.text) == (403, answer.text)
        return
    if policy == OPEN311:
        await _answers_by_api_key(anonymous, engine, method, path, reference, answer)
        return
    if policy == OWN_AUTH:
        admin = await make_key(engine, Scope.admin)
        signed_by_nobody = await call(anonymous, method, path, reference, admin)
        assert signed_by_nobody.status_code == 401  # an API key is no signature
        assert "WWW-Authenticate" not in signed_by_nobody.headers
        return
    assert isinstance(policy, tuple)
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    unknown = await call(anonymous, method, path, reference, "iap_000000000000_nope")
    assert unknown.status_code == 401
    others = [s for s in Scope if s not in policy and s is not Scope.admin]
    wrong = await call(anonymous, method, path, reference, await make_key(engine, *others))
    assert wrong.status_code == 403, wrong.text
    assert wrong.json()["type"] == "/problems/forbidden"
    assert "insufficient_scope" in wrong.headers["WWW-Authenticate"]
    named = ", ".join(s.value for s in policy) or "admin"
    which = "one of the scopes: " if len(policy) > 1 else "the scope "
    assert wrong.json()["detail"] == f"This needs an API key with {which}{named}."
    for scope in (*policy, Scope.admin):
        right = await call(anonymous, method, path, reference, await make_key(engine, scope))
        assert right.status_code not in (401, 403), (scope, right.text)


async def _answers_by_api_key(
    anonymous: Any, engine: Any, method: str, path: str, reference: str, answer: Any
) -> None:
    """Open311 says 403 for a missing or bad api_key and for one without the scope, as its
    own errors array; a key with the scope gets through."""
    scopes = OPEN311_SCOPES[(method, path)]
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()[0]["code"] == 403
    unknown = await call(anonymous, method, path, reference, "iap_000000000000_nope")
    assert unknown.status_code == 403
    others = [s for s in Scope if s not in scopes and s is not Scope.admin]
    wrong = await call(anonymous, method, path, reference, await make_key(engine, *others))
    assert wrong.status_code == 403, wrong.text
    named = ", ".join(s.value for s in scopes)
    which = "one of the scopes: " if len(scopes) > 1 else "the scope "
    assert wrong.json()[0]["description"] == f"This needs an API key with {which}{named}."
    for scope in (*scopes, Scope.admin):
        right = await call(anonymous, method, path, reference, await make_key(engine, scope))
        assert right.status_code not in (401, 403), (scope, right.text)


async def test_a_header_that_is_not_a_bearer_key_is_401(anonymous):
    answer = await anonymous.get("/v1/enquiries", headers={"Authorization": "Basic dXNlcjpw"})
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"


async def test_read_scope_sees_only_its_own_enquiries_and_read_all_sees_every_one(
    anonymous, engine
):
    kiosk = await make_key(engine, Scope.enquiries_submit, Scope.enquiries_read)
    partner = await make_key(engine, Scope.enquiries_submit, Scope.enquiries_read)
    agent = await make_key(engine, Scope.enquiries_read_all)
    mine = await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=bearer(kiosk))
    theirs = await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=bearer(partner))
    mine_ref, theirs_ref = mine.json()["reference"], theirs.json()["reference"]

    assert (await anonymous.get(f"/v1/enquiries/{mine_ref}", headers=bearer(kiosk))).is_success
    hidden = await anonymous.get(f"/v1/enquiries/{theirs_ref}", headers=bearer(kiosk))
    assert hidden.status_code == 404  # as if it did not exist
    listed = (await anonymous.get("/v1/enquiries", headers=bearer(kiosk))).json()["items"]
    assert [e["reference"] for e in listed] == [mine_ref]

    for reference in (mine_ref, theirs_ref):
        seen = await anonymous.get(f"/v1/enquiries/{reference}", headers=bearer(agent))
        assert seen.status_code == 200
        assert seen.json()["citizen"] is None or "*" not in str(seen.json()["citizen"])
    everything = (await anonymous.get("/v1/enquiries", headers=bearer(agent))).json()["items"]
    assert {e["reference"] for e in everything} == {mine_ref, theirs_ref}
    refused = await anonymous.post("/v1/enquiries", json=enquiry_body(), headers=bearer(agent))
    assert refused.status_code == 403


async def test_a_client_bound_to_a_channel_may_submit_on_that_channel_only(anonymous, engine):
    kiosk = bearer(await make_key(engine, Scope.enquiries_submit, channel="kiosk"))
    claimed = await anonymous.post(
        "/v1/enquiries", json=enquiry_body(channel="phone"), headers=kiosk
    )
    assert claimed.status_code == 422
    assert claimed.json()["errors"] == [
        {"detail": "must be 'kiosk' for this API key", "pointer": "#/channel"}
    ]
    honest = await anonymous.post(
        "/v1/enquiries", json=enquiry_body(channel="kiosk"), headers=kiosk
    )
    assert honest.status_code == 201


CITIZEN = {
    "name": "Ann Example",
    "email": "ann.example@example.org",
    "phone": "01295 000123",
    "preferred_contact": "email",
    "accessibility_needs": "Large print letters",
}


async def submitted_with_citizen(client: Any) -> dict[str, Any]:
    body = enquiry_body(
        citizen=CITIZEN, location={"postcode": "OX4 1AA", "address": "1 High Street"}
    )
    created = await client.post("/v1/enquiries", json=body)
    assert created.status_code == 201
    return created.json()


async def test_the_citizen_reads_their_enquiry_with_the_token_and_no_key(client, anonymous):
    created = await submitted_with_citizen(client)
    reference, token = created["reference"], created["access_token"]
    seen = await anonymous.get(f"/v1/enquiries/{reference}", params={"token": token})
    assert seen.status_code == 200
    assert seen.json()["reference"] == reference
    assert seen.json()["citizen"] == {
        "name": "A*** E******",
        "email": "a***@example.org",
        "phone": "********123",
        "preferred_contact": "email",
    }
    assert seen.json()["location"] == {"postcode": "OX4 1AA", "address": "***"}
    staff = (await client.get(f"/v1/enquiries/{reference}")).json()
    assert staff["citizen"]["email"] == CITIZEN["email"]  # staff with read-all see it whole


async def test_the_token_is_stored_only_as_a_hash(client, engine):
    created = await submitted_with_citizen(client)
    async with engine.connect() as conn:
        stored = await conn.scalar(select(enquiry_table.c.access_token_hash))
    assert stored == hashlib.sha256(created["access_token"].encode()).hexdigest()


async def test_a_wrong_token_is_answered_exactly_like_an_unknown_reference(
    client, anonymous, monkeypatch
):
    created = await submitted_with_citizen(client)
    other = await submitted_with_citizen(client)
    comparisons: list[int] = []
    real = hmac.compare_digest

    def counted(a: Any, b: Any) -> bool:
        comparisons.append(1)
        return real(a, b)

    monkeypatch.setattr(enquiries_service.hmac, "compare_digest", counted)
    unknown = display(new_reference())
    answers = {}
    for label, reference, token in (
        ("wrong token", created["reference"], "not-the-token"),
        ("another's token", created["reference"], other["access_token"]),
        ("no such enquiry", unknown, created["access_token"]),
    ):
        comparisons.clear()
        answer = await anonymous.get(f"/v1/enquiries/{reference}", params={"token": token})
        assert comparisons == [1], label  # a look-up, then one constant-time comparison
        body = answer.json()
        detail = body["detail"].replace(reference, "REF")
        answers[label] = (answer.status_code, body["type"], body["title"], detail)
    assert len(set(answers.values())) == 1, answers
    assert answers["wrong token"][0] == 404
    # It says the two do not match, never that the reference does not exist.
    assert answers["wrong token"][3] == "The reference REF and this token do not match."


def test_masking_keeps_enough_to_recognise_and_no_more():
    assert masked_citizen(
        {"name": "Jo  Bo-Li", "email": "x@y.org", "phone": "+44 7700 900123"}
    ) == {
        "name": "J*** B****",
        "email": "x***@y.org",
        "phone": "*********123",
    }
    assert masked_citizen(None) is None


def iap(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IAP_ENV": "test", "IAP_DATABASE_URL": database_url}
    command = [sys.executable, "-c", "from app.cli import main; main()", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True)


async def test_clients_create_list_and_revoke(database_url, anonymous):
    made = iap(
        "clients", "create", "kiosk-banbury", "--scope", "enquiries:submit",
        "--scope", "enquiries:read", "--channel", "kiosk", database_url=database_url,
    )  # fmt: skip
    key = made.stdout.strip().splitlines()[-1]
    assert key.startswith("iap_")
    submitted = await anonymous.post(
        "/v1/enquiries", json=enquiry_body(channel="kiosk"), headers=bearer(key)
    )
    assert submitted.status_code == 201

    listed = iap("clients", "list", database_url=database_url).stdout
    assert "kiosk-banbury" in listed
    assert "enquiries:read,enquiries:submit" in listed
    assert key.split("_", 2)[2] not in listed  # the secret is never shown again
    assert key[:16] in listed  # the key id tells keys apart

    iap("clients", "revoke", "kiosk-banbury", database_url=database_url)
    after = await anonymous.post(
        "/v1/enquiries", json=enquiry_body(channel="kiosk"), headers=bearer(key)
    )
    assert after.status_code == 401
    assert "revoked" in iap("clients", "list", database_url=database_url).stdout


def test_a_taken_name_an_odd_name_and_an_unknown_scope_are_refused(database_url):
    iap("clients", "create", "desk", "--scope", "admin", database_url=database_url)
    for args, says in (
        (["desk", "--scope", "admin"], "already exists"),
        (["desk two", "--scope", "admin"], "letters, digits"),
        (["desk-2", "--scope", "everything"], "is not one of"),
    ):
        with pytest.raises(subprocess.CalledProcessError) as refused:
            iap("clients", "create", *args, database_url=database_url)
        assert says in refused.value.stderr, refused.value.stderr
    with pytest.raises(subprocess.CalledProcessError) as unknown:
        iap("clients", "revoke", "nobody", database_url=database_url)
    assert "No client" in unknown.value.stderr


async def test_the_development_key_is_kept_and_made_again_when_it_stops_working(
    database_url, engine, tmp_path
):
    settings = make_settings(
        database_url,
        "http://127.0.0.1:8090",
        env=Environment.development,
        dev_key_file=tmp_path / "dev-key",
    )
    first = await load_development_key(settings)
    assert (tmp_path / "dev-key").read_text().strip() == first
    assert await load_development_key(settings) == first  # the same across restarts
    caller = await authenticate(engine, first)
    assert caller is not None
    assert caller.name == DEVELOPMENT_CLIENT
    assert caller.allows(Scope.privacy)

    await revoke_client(engine, DEVELOPMENT_CLIENT)
    second = await load_development_key(settings)
    assert second != first
    assert await authenticate(engine, first) is None
    assert await authenticate(engine, second) is not None


async def test_a_checked_key_is_trusted_for_a_few_seconds_unless_revoked_here(engine):
    _, key = await create_client(engine, name="cached", scopes=[Scope.enquiries_submit])
    assert await authenticate(engine, key, cache_seconds=60) is not None
    # Revoked by another process: this one keeps trusting what it read, for cache_seconds.
    async with engine.begin() as conn:
        await conn.execute(update(api_client_table).values(revoked_at=utcnow()))
    assert await authenticate(engine, key, cache_seconds=60) is not None
    assert await authenticate(engine, key) is None  # read afresh: revoked
    # Revoked in this process: at once, cache or not.
    _, other = await create_client(engine, name="cached-2", scopes=[Scope.enquiries_submit])
    assert await authenticate(engine, other, cache_seconds=60) is not None
    await revoke_client(engine, "cached-2")
    assert await authenticate(engine, other, cache_seconds=60) is None


async def test_requests_that_find_a_key_uncached_together_share_one_read(engine, monkeypatch):
    # Under load every request in flight missed together when the entry ran out, and each
    # took a database connection: opening them held the event loop for a third of a second.
    key = await make_key(engine, Scope.enquiries_submit)
    reads: list[int] = []
    real_reading = clients_service.reading

    def counted_reading(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return real_reading(*args, **kwargs)

    monkeypatch.setattr(clients_service, "reading", counted_reading)
    callers = await asyncio.gather(
        *(authenticate(engine, key, cache_seconds=60) for _ in range(20))
    )
    assert all(caller is not None for caller in callers)
    assert len(reads) == 1
    # Without the cache, each reads for itself.
    await asyncio.gather(*(authenticate(engine, key) for _ in range(3)))
    assert len(reads) == 4


async def test_an_unknown_key_id_takes_the_same_steps_as_a_known_one_with_a_wrong_secret(
    engine, monkeypatch
):
    # Timing told them apart: a known id was served from the cache, an unknown one read the
    # database every time. Now each is read once, then both cost a cache hit and one hash.
    key = await make_key(engine, Scope.enquiries_submit)
    known_id, _ = split_key(key) or ("", "")
    reads: list[int] = []
    comparisons: list[int] = []
    real_reading, real_compare = clients_service.reading, clients_service.hmac.compare_digest

    def counted_reading(*args: Any, **kwargs: Any) -> Any:
        reads.append(1)
        return real_reading(*args, **kwargs)

    def counted_compare(a: Any, b: Any) -> bool:
        comparisons.append(1)
        return real_compare(a, b)

    monkeypatch.setattr(clients_service, "reading", counted_reading)
    monkeypatch.setattr(clients_service.hmac, "compare_digest", counted_compare)
    steps = {}
    for label, key_id in (("known id", known_id), ("unknown id", "0123456789ab")):
        guess = f"iap_{key_id}_not-the-secret"
        taken = []
        for _ in range(3):
            reads.clear()
            comparisons.clear()
            assert await authenticate(engine, guess, cache_seconds=60) is None
            taken.append((len(reads), len(comparisons)))
        steps[label] = taken
    assert steps["known id"] == steps["unknown id"] == [(1, 1), (0, 1), (0, 1)], steps


async def test_a_client_made_after_its_key_id_was_asked_for_is_found(engine, monkeypatch):
    # Ids are random, so nobody asks for one before it exists; if it happens, the cached miss
    # must not hide the new client.
    key = "iap_abcdefabcdef_" + "s" * 43
    monkeypatch.setattr(clients_service, "_new_key", lambda: ("abcdefabcdef", "s" * 43, key))
    assert await authenticate(engine, key, cache_seconds=60) is None
    made, _ = await create_client(engine, name="later", scopes=[Scope.enquiries_submit])
    found = await authenticate(engine, key, cache_seconds=60)
    assert found is not None
    assert found.id == made.id
