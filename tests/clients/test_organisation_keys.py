"""Organisation keys: an API client that belongs to one partner organisation. Its scopes are
for that organisation's parts only, as a partner's staff's are: every other organisation's
enquiry, part, delivery and subscription is out of its reach (404 or filtered out), and what
it may do for its own organisation it does with the one key."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.api.deps import current_time
from app.clients.service import ORGANISATION_WITHHELD, Scope, authenticate, create_client
from app.core.errors import ValidationFailed
from app.core.models import status_update_table, utcnow, webhook_delivery_table
from app.core.vocabulary import ReceivedVia
from tests.api.test_security import OPEN311, OPEN311_SCOPES, POLICY
from tests.attachments.helpers import add_message, enquiry_id_of
from tests.attachments.images import image_bytes
from tests.conftest import bearer, enquiry_body, make_key, make_person
from tests.partners.test_webhooks import (
    Receiver,
    deliver_all,
    hook_url,
    receiver,
    receiver_server,
    verified,
)
from tests.privacy.test_privacy import ADA, SHARED

POLICE = "thames-valley-police"
CITY = "oxford-city"
COUNTY = "oxfordshire-county"
# Everything an organisation's key may be given.
ORGANISATION_SCOPES = sorted(set(Scope) - ORGANISATION_WITHHELD)
IAP = [sys.executable, "-c", "from app.cli import main; main()"]


def pothole() -> dict[str, Any]:
    """The county's alone."""
    return enquiry_body(citizen=ADA, consent=SHARED)


def crime() -> dict[str, Any]:
    """The police's alone (by email)."""
    return enquiry_body(
        service_code="non-emergency-crime",
        description="Bike stolen from the rack outside the library",
        attributes={},
        citizen=ADA,
        consent=SHARED,
    )


def asb() -> dict[str, Any]:
    """The city council's and the police's."""
    return enquiry_body(
        service_code="anti-social-behaviour",
        description="Fireworks thrown at the bus shelter every night",
        location={"postcode": "OX1 1BX"},
        attributes={"ongoing": "yes"},
        citizen=ADA,
        consent=SHARED,
    )


async def organisation_key(app: FastAPI, organisation: str = POLICE, *scopes: Scope) -> str:
    state = app.state.iap
    _, key = await create_client(
        state.engine,
        name=f"{organisation}-{uuid.uuid4().hex[:6]}",
        scopes=list(scopes or ORGANISATION_SCOPES),
        organisation_id=organisation,
        catalogue=state.catalogue,
    )
    return key


__all__ = ["receiver", "receiver_server"]  # fixtures, shared with the feed's tests


@dataclass
class World:
    """The police's key beside other organisations' enquiries, parts and subscriptions."""

    police: dict[str, str]
    pothole: str  # the county's alone
    crime: str  # the police's alone
    shared: str  # the city's and the police's
    pothole_id: uuid.UUID
    county_dispatch: str
    city_subscription: str  # an operator's, for the city's events
    other_subscription: str  # another client's
    city_delivery: str
    attachment: str  # a photo on the pothole
    foreign: tuple[str, ...]  # what must never show: the other organisations and the pothole


@pytest.fixture
async def world(
    app: FastAPI, client: httpx.AsyncClient, anonymous: httpx.AsyncClient, receiver: Receiver
) -> World:
    city = await client.post(
        "/v1/webhooks",
        json={"url": hook_url(receiver, "city"), "events": ["*"], "organisation_id": CITY},
    )
    assert city.status_code == 201, city.text
    other_key = await make_key(app.state.iap.engine, Scope.webhooks_manage)
    other = await anonymous.post(
        "/v1/webhooks",
        json={"url": hook_url(receiver, "other"), "events": ["*"]},
        headers=bearer(other_key),
    )
    assert other.status_code == 201, other.text
    references = []
    for body in (pothole(), crime(), asb()):
        created = await client.post("/v1/enquiries", json=body)
        assert created.status_code == 201, created.text
        references.append(created.json()["reference"])
    await deliver_all(app)
    [photo] = await add_message(app, references[0], image_bytes("PNG"))
    dispatches = (await client.get("/v1/dispatches", params={"state": "delivered"})).json()
    [county_dispatch] = [d for d in dispatches["items"] if d["organisation_id"] == COUNTY]
    async with app.state.iap.engine.connect() as conn:
        city_delivery = await conn.scalar(
            select(webhook_delivery_table.c.id).where(
                webhook_delivery_table.c.subscription_id == uuid.UUID(city.json()["id"])
            )
        )
    assert city_delivery is not None
    catalogue = app.state.iap.catalogue
    return World(
        police=bearer(await organisation_key(app)),
        pothole=references[0],
        crime=references[1],
        shared=references[2],
        pothole_id=await enquiry_id_of(app, references[0]),
        county_dispatch=county_dispatch["id"],
        city_subscription=city.json()["id"],
        other_subscription=other.json()["id"],
        city_delivery=str(city_delivery),
        attachment=str(photo["id"]),
        foreign=(
            references[0],
            COUNTY,
            CITY,
            catalogue.organisations[COUNTY].name,
            catalogue.organisations[CITY].name,
        ),
    )


Call = Callable[[httpx.AsyncClient, World], Awaitable[httpx.Response]]
NOT_FOUND = 404
HIDDEN = 200  # answered, with nothing of the other organisations in it


def _get(path: str, **params: str) -> Call:
    async def call(http: httpx.AsyncClient, w: World) -> httpx.Response:
        values = {k: v.format(**vars(w)) for k, v in params.items()}
        return await http.get(path.format(**vars(w)), params=values, headers=w.police)

    return call


def _send(method: str, path: str, body: dict[str, Any] | None = None) -> Call:
    async def call(http: httpx.AsyncClient, w: World) -> httpx.Response:
        return await http.request(
            method, path.format(**vars(w)), json=body and _filled(body, w), headers=w.police
        )

    return call


def _filled(body: dict[str, Any], w: World) -> dict[str, Any]:
    return {k: v.format(**vars(w)) if isinstance(v, str) else v for k, v in body.items()}


def _open311(method: str, path: str, **fields: str) -> Call:
    """Open311 takes the key as api_key (the police's, from its Authorization header)."""

    async def call(http: httpx.AsyncClient, w: World) -> httpx.Response:
        key = w.police["Authorization"].removeprefix("Bearer ")
        values = {"api_key": key, **{k: v.format(**vars(w)) for k, v in fields.items()}}
        url = path.format(**vars(w))
        if method == "GET":
            return await http.get(url, params=values)
        return await http.post(url, data=values)

    return call


# Every route an organisation key can reach with its scopes, called at what belongs to
# another organisation (the county's pothole, the city's subscription and part, another
# client's subscription), and what it must answer. test_the_table_names_every_route_a_key_reaches
# fails when a route is added without a line here.
ROUTES: list[tuple[tuple[str, str], str, Call, int]] = [
    (("GET", "/v1/enquiries"), "list", _get("/v1/enquiries"), HIDDEN),
    (
        ("GET", "/v1/enquiries"),
        "list naming the county",
        _get("/v1/enquiries", organisation_id=COUNTY),
        HIDDEN,
    ),
    (
        ("GET", "/v1/enquiries"),
        "caller history",
        _get("/v1/enquiries", email=ADA["email"]),
        HIDDEN,
    ),
    (("GET", "/v1/enquiries/{reference}"), "county's", _get("/v1/enquiries/{pothole}"), NOT_FOUND),
    (
        ("GET", "/v1/enquiries/{reference}"),
        "shared: own part only",
        _get("/v1/enquiries/{shared}"),
        HIDDEN,
    ),
    (
        ("GET", "/v1/enquiries/{reference}/attachments/{attachment_id}"),
        "county's photo",
        _get("/v1/enquiries/{pothole}/attachments/{attachment}"),
        NOT_FOUND,
    ),
    (
        ("POST", "/v1/enquiries/{reference}/parts/{organisation_id}/updates"),
        "county's part",
        _send("POST", f"/v1/enquiries/{{pothole}}/parts/{COUNTY}/updates", {"status": "closed"}),
        NOT_FOUND,
    ),
    (
        ("POST", "/v1/enquiries/{reference}/parts/{organisation_id}/updates"),
        "city's part of a shared enquiry",
        _send("POST", f"/v1/enquiries/{{shared}}/parts/{CITY}/updates", {"status": "closed"}),
        NOT_FOUND,
    ),
    (
        ("POST", "/v1/enquiries/{reference}/parts/{organisation_id}/updates"),
        "own organisation on the county's enquiry",
        _send("POST", f"/v1/enquiries/{{pothole}}/parts/{POLICE}/updates", {"status": "closed"}),
        NOT_FOUND,
    ),
    (("GET", "/v1/parts"), "naming the county", _get("/v1/parts", organisation_id=COUNTY), HIDDEN),
    (("GET", "/v1/parts"), "own queue", _get("/v1/parts"), HIDDEN),
    (("GET", "/v1/organisations"), "own circuit only", _get("/v1/organisations"), HIDDEN),
    (
        ("POST", "/v1/enquiries/{reference}/information"),
        "county's",
        _send("POST", "/v1/enquiries/{pothole}/information", {"text": "more"}),
        NOT_FOUND,
    ),
    (
        ("POST", "/v1/enquiries/{reference}/withdraw"),
        "county's",
        _send("POST", "/v1/enquiries/{pothole}/withdraw", {"reason": "x"}),
        NOT_FOUND,
    ),
    (
        ("POST", "/v1/enquiries/{reference}/reopen"),
        "county's",
        _send("POST", "/v1/enquiries/{pothole}/reopen", {"reason": "x"}),
        NOT_FOUND,
    ),
    (
        ("POST", "/v1/enquiries/{reference}/notes"),
        "county's",
        _send("POST", "/v1/enquiries/{pothole}/notes", {"text": "x"}),
        NOT_FOUND,
    ),
    (
        ("POST", "/v1/webhooks"),
        "naming the city",
        _send(
            "POST",
            "/v1/webhooks",
            {"url": "https://127.0.0.1/x", "events": ["*"], "organisation_id": CITY},
        ),
        403,
    ),
    (("GET", "/v1/webhooks"), "list", _get("/v1/webhooks"), HIDDEN),
    *[
        (
            ("GET", "/v1/webhooks/{subscription_id}"),
            whose,
            _get(f"/v1/webhooks/{{{whose}}}"),
            NOT_FOUND,
        )
        for whose in ("city_subscription", "other_subscription")
    ],
    *[
        ((method, f"/v1/webhooks/{{subscription_id}}{tail}"), whose, call, NOT_FOUND)
        for whose in ("city_subscription", "other_subscription")
        for method, tail, call in (
            ("DELETE", "", _send("DELETE", f"/v1/webhooks/{{{whose}}}")),
            ("PATCH", "", _send("PATCH", f"/v1/webhooks/{{{whose}}}", {"events": ["*"]})),
            ("POST", "/enable", _send("POST", f"/v1/webhooks/{{{whose}}}/enable")),
            ("POST", "/rotate-secret", _send("POST", f"/v1/webhooks/{{{whose}}}/rotate-secret")),
            ("POST", "/test", _send("POST", f"/v1/webhooks/{{{whose}}}/test")),
            ("GET", "/deliveries", _get(f"/v1/webhooks/{{{whose}}}/deliveries")),
            (
                "GET",
                "/deliveries/{delivery_id}",
                _get(f"/v1/webhooks/{{{whose}}}/deliveries/{{city_delivery}}"),
            ),
            (
                "POST",
                "/deliveries/{delivery_id}/resend",
                _send("POST", f"/v1/webhooks/{{{whose}}}/deliveries/{{city_delivery}}/resend"),
            ),
            (
                "POST",
                "/recover",
                _send(
                    "POST",
                    f"/v1/webhooks/{{{whose}}}/recover",
                    {"since": "2026-01-01T00:00:00Z"},
                ),
            ),
        )
    ],
    (("GET", "/v1/dispatches"), "delivered", _get("/v1/dispatches", state="delivered"), HIDDEN),
    (
        ("GET", "/v1/dispatches"),
        "naming the county",
        _get("/v1/dispatches", state="delivered", organisation_id=COUNTY),
        HIDDEN,
    ),
    (
        ("POST", "/v1/dispatches/redrive"),
        "the county's",
        _send("POST", "/v1/dispatches/redrive", {"organisation": COUNTY}),
        422,
    ),
    (
        ("POST", "/v1/dispatches/{dispatch_id}/redrive"),
        "the county's",
        _send("POST", "/v1/dispatches/{county_dispatch}/redrive"),
        NOT_FOUND,
    ),
    (
        ("POST", "/v1/dispatches/{dispatch_id}/close"),
        "the county's",
        _send("POST", "/v1/dispatches/{county_dispatch}/close", {"note": "x"}),
        NOT_FOUND,
    ),
    (
        ("GET", "/v1/webhook-deliveries"),
        "delivered",
        _get("/v1/webhook-deliveries", state="delivered"),
        HIDDEN,
    ),
    (
        ("GET", "/v1/webhook-deliveries"),
        "naming the city's subscription",
        _get("/v1/webhook-deliveries", state="delivered", subscription_id="{city_subscription}"),
        HIDDEN,
    ),
    (
        ("POST", "/v1/webhook-deliveries/{delivery_id}/redrive"),
        "the city's",
        _send("POST", "/v1/webhook-deliveries/{city_delivery}/redrive"),
        NOT_FOUND,
    ),
    (("GET", "/v1/stuck"), "a year on", _get("/v1/stuck"), HIDDEN),
    (
        ("GET", "/open311/v2/requests.{fmt}"),
        "list",
        _open311("GET", "/open311/v2/requests.json"),
        HIDDEN,
    ),
    (
        ("GET", "/open311/v2/requests/{request_id}.{fmt}"),
        "county's",
        _open311("GET", "/open311/v2/requests/{pothole}.json"),
        NOT_FOUND,
    ),
    (
        ("GET", "/open311/v2/requests/{request_id}.{fmt}"),
        "shared: own agency only",
        _open311("GET", "/open311/v2/requests/{shared}.json"),
        HIDDEN,
    ),
    (
        ("GET", "/open311/v2/tokens/{token}.{fmt}"),
        "county's",
        _open311("GET", "/open311/v2/tokens/{pothole_id}.json"),
        NOT_FOUND,
    ),
    (
        ("GET", "/open311/v2/servicerequestupdates.{fmt}"),
        "list",
        _open311("GET", "/open311/v2/servicerequestupdates.json"),
        HIDDEN,
    ),
    (
        ("POST", "/open311/v2/servicerequestupdates.{fmt}"),
        "county's",
        _open311(
            "POST",
            "/open311/v2/servicerequestupdates.json",
            service_request_id="{pothole}",
            description="more",
        ),
        NOT_FOUND,
    ),
]


def _reachable() -> set[tuple[str, str]]:
    """Every route whose scopes an organisation key can hold."""
    held = set(ORGANISATION_SCOPES)
    routes = set()
    for route, needs in {**POLICY, **OPEN311_SCOPES}.items():
        if needs == OPEN311 or isinstance(needs, str):
            continue
        if set(needs) & held:
            routes.add(route)
    return routes


def test_the_table_names_every_route_a_key_reaches() -> None:
    assert {route for route, *_ in ROUTES} == _reachable()


@pytest.mark.parametrize(
    ("route", "case", "call", "expected"),
    ROUTES,
    ids=[f"{route[0]} {route[1]} ({case})" for route, case, _, _ in ROUTES],
)
async def test_another_organisations_data_is_out_of_an_organisation_keys_reach(
    app: FastAPI,
    anonymous: httpx.AsyncClient,
    world: World,
    route: tuple[str, str],
    case: str,
    call: Call,
    expected: int,
) -> None:
    app.dependency_overrides[current_time] = lambda: utcnow() + timedelta(days=365)
    try:
        answer = await call(anonymous, world)
    finally:
        app.dependency_overrides.clear()
    assert answer.status_code == expected, answer.text
    if expected == HIDDEN:
        for foreign in world.foreign:
            assert foreign not in answer.text, (foreign, answer.text)


async def test_naming_another_organisations_part_does_not_move_it(
    app: FastAPI, anonymous: httpx.AsyncClient, client: httpx.AsyncClient, world: World
) -> None:
    before = (await client.get(f"/v1/enquiries/{world.pothole}")).json()
    for route, _, call, _ in ROUTES:
        if route[0] != "GET":
            await call(anonymous, world)
    after = (await client.get(f"/v1/enquiries/{world.pothole}")).json()
    assert after["status"] == before["status"]
    assert after["destinations"] == before["destinations"]
    assert len((await client.get("/v1/webhooks")).json()["items"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/enquiries", enquiry_body()),
        ("GET", "/v1/triage", None),
        ("POST", "/v1/privacy/subject-access", {"email": ADA["email"]}),
        ("GET", "/v1/audit", None),
    ],
)
async def test_an_organisation_key_never_holds_the_contact_centres_desks(
    app: FastAPI, anonymous: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    # Given every scope it may hold: those it may not (triage, privacy, ...) are not its.
    key = await organisation_key(app)
    answer = await anonymous.request(method, path, json=body, headers=bearer(key))
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


async def test_the_scopes_an_organisation_key_cannot_hold_are_refused_when_it_is_made(
    app: FastAPI,
) -> None:
    state = app.state.iap
    for organisation, scopes in (
        (POLICE, [Scope.triage]),
        (POLICE, [Scope.admin]),
        ("no-such-organisation", [Scope.parts_update]),
        (state.catalogue.triage.id, [Scope.parts_update]),
    ):
        with pytest.raises(ValidationFailed):
            await create_client(
                state.engine,
                name="refused",
                scopes=scopes,
                organisation_id=organisation,
                catalogue=state.catalogue,
            )
    key = await organisation_key(app, POLICE, Scope.parts_update)
    caller = await authenticate(state.engine, key)
    assert caller is not None
    assert caller.organisation_id == POLICE
    assert caller.may_act_for(POLICE)
    assert not caller.may_act_for(CITY)


async def test_an_organisation_key_reads_its_own_part_only(
    anonymous: httpx.AsyncClient, world: World
) -> None:
    shared = (await anonymous.get(f"/v1/enquiries/{world.shared}", headers=world.police)).json()
    assert [d["organisation_id"] for d in shared["destinations"]] == [POLICE]
    assert shared["citizen"]["email"] == ADA["email"]  # read-all: its part's citizen
    listed = (await anonymous.get("/v1/enquiries", headers=world.police)).json()["items"]
    assert {i["reference"] for i in listed} == {world.crime, world.shared}
    own = (await anonymous.get("/v1/parts", headers=world.police)).json()["items"]
    assert {(p["reference"], p["organisation_id"]) for p in own} == {
        (world.crime, POLICE),
        (world.shared, POLICE),
    }


async def test_an_organisation_key_pushes_its_status_update_onto_the_timeline(
    app: FastAPI, anonymous: httpx.AsyncClient, client: httpx.AsyncClient, world: World
) -> None:
    moved = await anonymous.post(
        f"/v1/enquiries/{world.crime}/parts/{POLICE}/updates",
        json={"status": "in_progress", "description": "An officer is looking into it"},
        headers=world.police,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["part"]["remote_status"] == "in_progress"
    seen = (await client.get(f"/v1/enquiries/{world.crime}")).json()
    assert seen["status"] == "in_progress"
    said = [e for e in seen["timeline"] if "An officer is looking into it" in (e["detail"] or "")]
    assert said
    assert said[-1]["organisation_id"] == POLICE
    async with app.state.iap.engine.connect() as conn:
        via = await conn.scalar(select(status_update_table.c.received_via))
    assert via == ReceivedVia.organisation_key


async def test_an_organisation_key_subscribes_to_its_own_events_and_hears_them(
    app: FastAPI, anonymous: httpx.AsyncClient, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    police = bearer(await organisation_key(app))
    made = await anonymous.post(
        "/v1/webhooks",
        json={"url": hook_url(receiver, "police"), "events": ["*"]},
        headers=police,
    )
    assert made.status_code == 201, made.text
    assert made.json()["organisation_id"] == POLICE  # its own, without naming it
    named = await anonymous.post(
        "/v1/webhooks",
        json={"url": hook_url(receiver, "named"), "events": ["*"], "organisation_id": POLICE},
        headers=police,
    )
    assert named.status_code == 201, named.text
    references = []
    for body in (pothole(), crime(), asb()):
        references.append((await client.post("/v1/enquiries", json=body)).json()["reference"])
    await deliver_all(app)
    bodies = [verified(m, made.json()["secret"]) for m in receiver.to("police")]
    assert {b["data"]["reference"] for b in bodies if "reference" in b["data"]} == {
        references[1],
        references[2],
    }
    assert COUNTY not in str(bodies)
    assert CITY not in str(bodies)
    assert ADA["email"] not in str(bodies)
    listed = (await anonymous.get("/v1/webhooks", headers=police)).json()["items"]
    assert {s["id"] for s in listed} == {made.json()["id"], named.json()["id"]}
    removed = await anonymous.delete(f"/v1/webhooks/{made.json()['id']}", headers=police)
    assert removed.status_code == 204


def iap(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {"IAP_ENV": "test", "IAP_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    return subprocess.run([*IAP, *args], capture_output=True, text=True, env=env, check=False)


async def test_iap_clients_create_makes_an_organisation_key_and_list_shows_it(
    app: FastAPI, settings: Any, anonymous: httpx.AsyncClient
) -> None:
    url = settings.database_url
    made = iap(
        "clients",
        "create",
        "police-rms",
        "--scope",
        "parts:update",
        "--organisation",
        POLICE,
        database_url=url,
    )
    assert made.returncode == 0, made.stderr
    assert f"for {POLICE} only" in made.stdout
    key = made.stdout.strip().splitlines()[-1]
    queue = await anonymous.get("/v1/parts", headers=bearer(key))
    assert queue.status_code == 200, queue.text
    [line] = [
        x for x in iap("clients", "list", database_url=url).stdout.splitlines() if "police-rms" in x
    ]
    assert f"\t{POLICE}\t" in line
    for organisation, scope in (
        ("no-such-organisation", "parts:update"),
        (app.state.iap.catalogue.triage.id, "parts:update"),
        (POLICE, "triage"),
    ):
        refused = iap(
            "clients",
            "create",
            "refused",
            "--scope",
            scope,
            "--organisation",
            organisation,
            database_url=url,
        )
        assert refused.returncode == 1, refused.stdout
        assert "refused" not in iap("clients", "list", database_url=url).stdout


async def test_a_partner_supervisors_subscription_is_their_organisations_as_a_keys_is(
    app: FastAPI, anonymous: httpx.AsyncClient, receiver: Receiver
) -> None:
    supervisor = bearer(await make_person(app, "supervisor", organisation=POLICE))
    made = await anonymous.post(
        "/v1/webhooks",
        json={"url": hook_url(receiver, "pc"), "events": ["*"]},
        headers=supervisor,
    )
    assert made.status_code == 201, made.text
    assert made.json()["organisation_id"] == POLICE
    other = await anonymous.post(
        "/v1/webhooks",
        json={"url": hook_url(receiver, "pc"), "events": ["*"], "organisation_id": CITY},
        headers=supervisor,
    )
    assert other.status_code == 403
    triage = await anonymous.get("/v1/triage", headers=supervisor)
    assert triage.status_code == 403
