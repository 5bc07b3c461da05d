"""The dispatcher in-process against the real sandbox back-office on loopback."""

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from app.core.models import attempt_table, dispatch_table, enquiry_table, utcnow
from app.core.reference import parse
from app.delivery.dispatcher import Dispatcher
from app.sandbox import Behaviour
from tests.conftest import another_worker, enquiry_body


async def submit(client, **change):
    response = await client.post("/v1/enquiries", json=enquiry_body(**change))
    assert response.status_code == 201, response.text
    return response.json()["reference"]


async def read(client, ref):
    return (await client.get(f"/v1/enquiries/{ref}")).json()


async def deliver_all(app, rounds=10):
    """Run the dispatcher until nothing is due, letting retry delays pass between rounds."""
    dispatcher = app.state.runtime.dispatcher
    for _ in range(rounds):
        await dispatcher.run_until_idle()
        async with app.state.iap.engine.connect() as conn:
            waiting = await conn.scalar(
                select(dispatch_table.c.next_attempt_at)
                .where(dispatch_table.c.state == "pending")
                .order_by(dispatch_table.c.next_attempt_at)
                .limit(1)
            )
        if waiting is None:
            return
        await asyncio.sleep(max(0.0, (waiting - utcnow()).total_seconds()) + 0.01)


async def test_delivered_enquiry_shows_the_back_office_reference(client, app, back_office):
    ref = await submit(client)
    await deliver_all(app)
    enquiry = await read(client, ref)
    assert enquiry["status"] == "dispatched"
    [county] = enquiry["destinations"]
    assert county["state"] == "delivered"
    assert county["attempts"] == 1
    case_id = county["remote_reference"]
    assert back_office.cases["oxfordshire-county"][case_id]["reference"] == ref
    assert [e["type"] for e in enquiry["timeline"]] == [
        "enquiry.received",
        "dispatch.delivered",
        "enquiry.dispatched",
    ]


async def test_contact_details_go_only_with_consent(client, app, back_office):
    citizen = {"name": "Ann Example", "email": "ann@example.org", "language": "pl"}
    private = await submit(client, citizen=citizen)
    shared = await submit(client, citizen=citizen, consent={"share_contact_details": True})
    await deliver_all(app)
    cases = {c["reference"]: c for c in back_office.cases["oxfordshire-county"].values()}
    assert "citizen" not in cases[private]
    assert "ann@example.org" not in str(cases[private])
    assert cases[shared]["citizen"] == citizen
    assert cases[shared]["description"] == "A deep pothole by the bus stop"


async def test_an_organisation_gets_only_the_details_its_agreement_lists(client, app, back_office):
    dispatcher = app.state.runtime.dispatcher
    county = dispatcher.catalogue.organisations["oxfordshire-county"]
    dispatcher.catalogue = dispatcher.catalogue.model_copy(
        update={
            "organisations": {
                **dispatcher.catalogue.organisations,
                "oxfordshire-county": county.model_copy(update={"shares": ("name", "language")}),
            }
        }
    )
    citizen = {
        "name": "Ann Example",
        "email": "ann@example.org",
        "phone": "01865 000000",
        "language": "pl",
    }
    ref = await submit(client, citizen=citizen, consent={"share_contact_details": True})
    await deliver_all(app)
    [case] = [c for c in back_office.cases["oxfordshire-county"].values() if c["reference"] == ref]
    assert case["citizen"] == {"name": "Ann Example", "language": "pl"}


async def test_back_office_down_is_retried_then_dead_with_its_reason(client, app, back_office):
    back_office.behaviour["*"] = back_office.behaviour_for("x").model_copy(update={"down": True})
    dispatcher = app.state.runtime.dispatcher
    # Long enough that run_until_idle does not reach the retry on a slow database.
    dispatcher.settings = dispatcher.settings.model_copy(update={"retry_schedule": [0.5, 0.5]})
    ref = await submit(client)
    await dispatcher.run_until_idle()
    after_one = await read(client, ref)
    [county] = after_one["destinations"]
    assert (county["state"], county["attempts"]) == ("pending", 1)
    assert "HTTP 503" in county["last_error"]
    await deliver_all(app)
    enquiry = await read(client, ref)
    [county] = enquiry["destinations"]
    assert (county["state"], county["attempts"]) == ("dead", 3)
    assert "gave up after 3 attempts" in county["last_error"]
    assert enquiry["status"] == "failed"
    assert [e["type"] for e in enquiry["timeline"]] == [
        "enquiry.received",
        "dispatch.retry",
        "dispatch.retry",
        "dispatch.dead",
        "enquiry.failed",
    ]
    assert back_office.cases.get("oxfordshire-county", {}) == {}


async def test_retry_after_is_honoured(client, app, back_office):
    behaviour = back_office.behaviour_for("x").model_copy(
        update={"fail_rate": 1.0, "fail_status": 429, "retry_after_seconds": 120}
    )
    back_office.behaviour["*"] = behaviour
    ref = await submit(client)
    before = utcnow()
    await app.state.runtime.dispatcher.run_until_idle()
    [county] = (await read(client, ref))["destinations"]
    assert county["state"] == "pending"
    async with app.state.iap.engine.connect() as conn:
        due = await conn.scalar(select(dispatch_table.c.next_attempt_at))
    assert due >= before + timedelta(seconds=119)


async def test_client_error_is_permanent_at_once(client, app, back_office):
    back_office.behaviour["*"] = back_office.behaviour_for("x").model_copy(
        update={"fail_rate": 1.0, "fail_status": 400}
    )
    ref = await submit(client)
    await app.state.runtime.dispatcher.run_until_idle()
    [county] = (await read(client, ref))["destinations"]
    assert (county["state"], county["attempts"]) == ("dead", 1)
    assert "HTTP 400" in county["last_error"]


async def test_one_dead_destination_fails_the_enquiry_the_other_still_delivered(
    client, app, back_office
):
    back_office.behaviour["thames-valley-police"] = back_office.behaviour_for("x").model_copy(
        update={"fail_rate": 1.0, "fail_status": 404}
    )
    ref = await submit(
        client,
        service_code="anti-social-behaviour",
        attributes={},
        description="Shouting outside every night",
    )
    await deliver_all(app)
    enquiry = await read(client, ref)
    states = {d["organisation_id"]: d["state"] for d in enquiry["destinations"]}
    assert states == {"oxford-city": "delivered", "thames-valley-police": "dead"}
    assert enquiry["status"] == "failed"


async def test_unreachable_back_office_is_a_transport_error(client, app, settings):
    dead_port = settings.model_copy(update={"sandbox_url": "http://127.0.0.1:9"})
    from app.main import create_app

    other = create_app(dead_port, run_dispatcher=False)
    async with other.router.lifespan_context(other):
        ref = await submit(client)
        await other.state.runtime.dispatcher.run_until_idle()
    [county] = (await read(client, ref))["destinations"]
    assert county["state"] == "pending"
    assert "ConnectError" in county["last_error"]


async def test_running_dispatcher_delivers_new_work_at_once(client, app, back_office):
    dispatcher = app.state.runtime.dispatcher
    app.state.iap.intake.wake_dispatcher = dispatcher.wake
    dispatcher.settings = dispatcher.settings.model_copy(update={"poll_seconds": 30})
    task = asyncio.create_task(dispatcher.run())
    try:
        await asyncio.sleep(0.05)  # let it go idle on its 30 s poll
        ref = await submit(client)
        async with asyncio.timeout(2):
            while (await read(client, ref))["status"] != "dispatched":
                await asyncio.sleep(0.01)
    finally:
        await dispatcher.stop()
        await task


async def test_expired_lease_is_taken_over_and_the_lost_attempt_recorded(client, app, back_office):
    ref = await submit(client)
    state = app.state.iap
    crashed = another_worker(app, "crashed")
    [claim] = await crashed._claim(10)  # claimed, then the worker "dies"
    assert await app.state.runtime.dispatcher._claim(10) == []  # leased: nobody else may take it
    async with state.engine.begin() as conn:
        await conn.execute(update(dispatch_table).values(lease_until=utcnow()))
    await app.state.runtime.dispatcher.run_until_idle()
    [county] = (await read(client, ref))["destinations"]
    assert (county["state"], county["attempts"]) == ("delivered", 2)
    async with state.engine.connect() as conn:
        outcomes = (
            await conn.execute(
                select(attempt_table.c.number, attempt_table.c.outcome).order_by(
                    attempt_table.c.number
                )
            )
        ).all()
    assert [tuple(o) for o in outcomes] == [(1, "interrupted"), (2, "delivered")]
    # The dead worker's late answer does not overwrite the new owner's outcome.
    await crashed._deliver(claim)
    assert (await read(client, ref))["destinations"][0]["attempts"] == 2
    assert len(back_office.cases["oxfordshire-county"]) == 1


async def test_stopping_hands_back_unfinished_work(client, app, back_office):
    back_office.behaviour["*"] = back_office.behaviour_for("x").model_copy(
        update={"latency_ms": 1000}
    )
    dispatcher = app.state.runtime.dispatcher
    dispatcher.settings = dispatcher.settings.model_copy(update={"shutdown_grace_seconds": 0.1})
    ref = await submit(client)
    task = asyncio.create_task(dispatcher.run())
    async with asyncio.timeout(2):
        while (await read(client, ref))["destinations"][0]["state"] != "delivering":
            await asyncio.sleep(0.01)
    await dispatcher.stop()
    await task
    [county] = (await read(client, ref))["destinations"]
    # The call had started, so it counts: the next attempt looks the case up before posting.
    assert (county["state"], county["attempts"]) == ("pending", 1)
    assert county["last_error"] == "the worker stopped before the attempt finished"


async def test_circuit_opens_so_deliveries_wait_then_a_trial_closes_it(client, app, back_office):
    dispatcher = app.state.runtime.dispatcher
    dispatcher.settings = dispatcher.settings.model_copy(
        update={
            "circuit_failures": 2,
            # Long enough that the open phase below is checked inside it on a loaded machine
            # (at 0.5 s a slow CI run saw the cool-down end there and a trial spend an attempt).
            "circuit_cooldown_seconds": 2.0,
            "retry_schedule": [0.05, 0.05, 0.05, 0.05],
        }
    )
    back_office.behaviour["*"] = back_office.behaviour_for("x").model_copy(update={"down": True})
    refs = [await submit(client) for _ in range(3)]
    await dispatcher.run_until_idle()
    county = next(
        o for o in (await client.get("/v1/organisations")).json() if o["id"] == "oxfordshire-county"
    )
    assert county["circuit"]["state"] == "open"
    assert "HTTP 503" in county["circuit"]["last_error"]
    # While it is open, due retries are not even claimed: no attempts are spent.
    await asyncio.sleep(0.1)
    await dispatcher.run_until_idle()
    assert [(await read(client, r))["destinations"][0]["attempts"] for r in refs] == [1, 1, 1]
    assert back_office.cases.get("oxfordshire-county", {}) == {}

    back_office.behaviour.clear()  # the back-office returns
    await asyncio.sleep(2.0)  # the cool-down
    await deliver_all(app)
    for ref in refs:
        [destination] = (await read(client, ref))["destinations"]
        assert (destination["state"], destination["attempts"]) == ("delivered", 2)
    # One case each at the back-office (a slow request from an earlier test may land here too).
    ours = [c for c in back_office.cases["oxfordshire-county"].values() if c["reference"] in refs]
    assert len(ours) == 3
    county = next(
        o for o in (await client.get("/v1/organisations")).json() if o["id"] == "oxfordshire-county"
    )
    assert county["circuit"] == {
        "state": "closed",
        "failures": 0,
        "open_until": None,
        "last_error": None,
    }


async def test_a_refusal_does_not_count_against_the_circuit(client, app, back_office):
    dispatcher = app.state.runtime.dispatcher
    dispatcher.settings = dispatcher.settings.model_copy(update={"circuit_failures": 1})
    back_office.behaviour["*"] = back_office.behaviour_for("x").model_copy(
        update={"fail_rate": 1.0, "fail_status": 422}
    )
    await submit(client)
    await dispatcher.run_until_idle()
    county = next(
        o for o in (await client.get("/v1/organisations")).json() if o["id"] == "oxfordshire-county"
    )
    assert county["circuit"]["state"] == "closed"


async def test_an_organisation_never_gets_more_calls_at_once_than_its_cap(client, app, back_office):
    dispatcher = app.state.runtime.dispatcher
    county = dispatcher.adapters["oxfordshire-county"]
    county.config = county.config.model_copy(update={"max_concurrent": 2})
    back_office.behaviour["*"] = back_office.behaviour_for("x").model_copy(
        update={"latency_ms": 200}
    )
    refs = [await submit(client) for _ in range(6)]
    worker = asyncio.create_task(dispatcher.run())
    try:
        for _ in range(100):
            states = [(await read(client, r))["destinations"][0]["state"] for r in refs]
            if states == ["delivered"] * 6:
                break
            await asyncio.sleep(0.05)
    finally:
        await dispatcher.stop()
        await worker
    assert states == ["delivered"] * 6
    async with app.state.iap.engine.connect() as conn:
        spans = (
            await conn.execute(select(attempt_table.c.started_at, attempt_table.c.finished_at))
        ).all()
    # Every attempt succeeded first time: the cap made calls wait, it spent no attempts.
    assert len(spans) == 6
    overlap = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    assert overlap == 2


async def test_a_worker_paused_past_its_lease_makes_no_create_after_its_look_up(
    client, app, back_office
):
    """Worker A looks the case up, then stalls (a pause, a GC, a SIGSTOP) until its lease has
    run out and worker B has delivered: A must not post the case a second time."""
    back_office.behaviour["cherwell"] = Behaviour(plain=True)  # a repeat is a second case
    runtime = app.state.runtime.dispatcher
    settings = runtime.settings.model_copy(update={"lease_seconds": 0.5, "settle_seconds": 0})
    engine = app.state.iap.engine
    ref = await submit(
        client,
        service_code="missed-bin",
        location={"postcode": "OX16 5QA"},
        attributes={"bin_type": "food"},
    )
    async with engine.begin() as conn:  # an earlier attempt that may have reached the council
        await conn.execute(update(dispatch_table).values(attempts=1, claims=1))

    looked_up, resume = asyncio.Event(), asyncio.Event()

    async def stall_after_look_up(response):
        if response.request.method == "GET":
            looked_up.set()
            await resume.wait()

    district = runtime.adapters["cherwell"]
    async with httpx.AsyncClient(event_hooks={"response": [stall_after_look_up]}) as paused:
        stalled = type(district)(config=district.config, client=paused, timeout=district.timeout)
        a, b = (
            Dispatcher(
                engine=engine,
                catalogue=runtime.catalogue,
                adapters={**runtime.adapters, "cherwell": adapter},
                sealer=runtime.sealer,
                settings=settings,
                worker_id=name,
            )
            for name, adapter in (("a", stalled), ("b", district))
        )
        worker_a = asyncio.create_task(a.run_until_idle())
        async with asyncio.timeout(10):
            await looked_up.wait()
            while (await lease_until(engine)) > utcnow():
                await asyncio.sleep(0.02)
            await b.run_until_idle()
            assert [d["state"] for d in (await read(client, ref))["destinations"]] == ["delivered"]
            resume.set()
            await worker_a

    [case_id] = back_office.cases["cherwell"]
    assert back_office.posts["cherwell"] == 1
    [district_row] = (await read(client, ref))["destinations"]
    assert district_row["remote_reference"] == case_id
    async with engine.connect() as conn:
        attempts = (
            await conn.execute(
                select(
                    attempt_table.c.number, attempt_table.c.outcome, attempt_table.c.worker
                ).order_by(attempt_table.c.number)
            )
        ).all()
    assert [tuple(row) for row in attempts] == [
        (2, "interrupted", "unknown"),
        (3, "delivered", "b"),
    ]


async def lease_until(engine):
    async with engine.connect() as conn:
        return await conn.scalar(select(dispatch_table.c.lease_until))


async def test_a_dead_workers_expired_lease_frees_its_slot_under_the_cap(client, app, back_office):
    dispatcher = app.state.runtime.dispatcher
    county = dispatcher.adapters["oxfordshire-county"]
    county.config = county.config.model_copy(update={"max_concurrent": 1})
    first, second = await submit(client), await submit(client)
    held = await dispatch_id(app, first)
    async with app.state.iap.engine.begin() as conn:  # a worker died holding the first
        await conn.execute(
            update(dispatch_table)
            .where(dispatch_table.c.id == held)
            .values(
                state="delivering",
                lease_owner="dead",
                lease_until=utcnow() - timedelta(seconds=1),
                claims=1,
            )
        )
    await deliver_all(app)
    for ref in (first, second):
        [destination] = (await read(client, ref))["destinations"]
        assert destination["state"] == "delivered"
    assert len(back_office.cases["oxfordshire-county"]) == 2


async def dispatch_id(app, ref):
    async with app.state.iap.engine.connect() as conn:
        return await conn.scalar(
            select(dispatch_table.c.id)
            .join_from(dispatch_table, enquiry_table)
            .where(enquiry_table.c.reference == parse(ref))
        )


async def test_deliveries_a_council_cannot_tell_from_repeats_are_counted_for_a_person(
    client, app, back_office
):
    dispatcher = app.state.runtime.dispatcher
    cherwell = dispatcher.adapters["cherwell"]
    cherwell.config = cherwell.config.model_copy(update={"lookup": False})  # cannot be listed
    dispatcher.settings = dispatcher.settings.model_copy(
        update={"retry_schedule": [0.5], "settle_seconds": 0}
    )
    back_office.behaviour["cherwell"] = Behaviour(down=True)
    missed_bin = {"location": {"postcode": "OX16 5QA"}, "attributes": {"bin_type": "food"}}
    await submit(client, service_code="missed-bin", **missed_bin)
    await dispatcher.run_until_idle()
    back_office.behaviour.clear()
    await deliver_all(app)
    organisations = {o["id"]: o for o in (await client.get("/v1/organisations")).json()}
    assert organisations["cherwell"]["unverified_repeats"] == 1  # delivered at attempt 2
    assert organisations["oxford-city"]["unverified_repeats"] is None  # it looks repeats up
    assert organisations["oxfordshire-county"]["unverified_repeats"] is None
