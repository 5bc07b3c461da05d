"""The sandbox itself: which organisation gets which simulator, cases opened and moved on.

A case starts at the first word of its protocol's progression. With `step_seconds` set, it then
moves to the next word every `step_seconds` until the last (a case moved elsewhere by hand
stops there). Every move is an update with an id that never changes, kept on the case for
polling and, where the organisation pushes, sent to the gateway in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from app.catalogue.catalogue import Catalogue, Organisation
from app.sandbox import pushes
from app.sandbox.office import BackOffice, utc_now

# A simulator's own bookkeeping when one of its cases moves (e.g. a new FHIR version); it may
# give the update its protocol's id.
MoveHook = Callable[[dict[str, Any], dict[str, Any]], None]

# Each protocol's words, in the order a case usually moves through them.
PROGRESSIONS: Mapping[str, tuple[str, ...]] = {
    "open311": ("open", "in_progress", "action_scheduled", "fixed"),
    "rest-json": ("new", "assigned", "in_progress", "completed"),
    "fhir": ("active", "completed"),
}

# What a back-office officer would write for each move.
DESCRIPTIONS: Mapping[str, str] = {
    "in_progress": "An officer is looking into this.",
    "action_scheduled": "Work has been scheduled with our contractor.",
    "fixed": "The problem has been fixed. Thank you for reporting it.",
    "assigned": "Assigned to the customer service team.",
    "completed": "Your enquiry has been dealt with.",
}

# Seconds between attempts to push one update while the gateway is not answering.
DEFAULT_PUSH_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class Sandbox:
    """Configuration, the record (`office`) and the background work of the sandbox."""

    catalogue: Catalogue | None = None
    gateway_url: str | None = None
    step_seconds: float | None = None
    token_seconds: float = 300.0
    push_delays: Sequence[float] = DEFAULT_PUSH_DELAYS
    smtp_port: int | None = None
    office: BackOffice = field(default_factory=BackOffice)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # The last push of each case, so a case's updates reach the gateway in order.
    last_push: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    on_move: dict[str, MoveHook] = field(default_factory=dict)
    # Requests still being answered (a delayed one may make a case after its caller left).
    in_flight: int = 0

    def organisation(self, organisation_id: str, protocol: str) -> Organisation | None:
        """The organisation, if the catalogue binds it to this protocol."""
        if self.catalogue is None:
            return None
        found = self.catalogue.organisations.get(organisation_id)
        return found if found is not None and found.adapter.type == protocol else None

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run work in the background, kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel progressions and pushes still waiting."""
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.last_push.clear()

    async def reset(self) -> None:
        """Forget everything: cases, counts, behaviour, tokens, mail, pushes."""
        await self.stop()
        self.office.__init__()  # type: ignore[misc]

    def open_case(self, case: dict[str, Any]) -> dict[str, Any]:
        """File a new case (fields as in office.py) and start its progression if configured."""
        now = utc_now()
        case.setdefault("status", PROGRESSIONS.get(case["protocol"], ("received",))[0])
        case.update(updates=[], follow_ups=[], created_at=now, updated_at=now)
        self.office.add_case(case)
        if self.step_seconds and case["protocol"] in PROGRESSIONS:
            self.spawn(self._progress(case, self.step_seconds))
        return case

    async def _progress(self, case: dict[str, Any], step: float) -> None:
        words = PROGRESSIONS[case["protocol"]]
        while case["status"] in words[:-1]:
            await asyncio.sleep(step)
            if case["status"] not in words[:-1]:
                return  # moved by hand meanwhile
            following = words[words.index(case["status"]) + 1]
            self.move(case, following, DESCRIPTIONS.get(following, following))

    def move(self, case: dict[str, Any], status: str, description: str) -> dict[str, Any]:
        """Move a case to a new status now: one update, pushed if the organisation pushes."""
        now = utc_now()
        update = {
            "update_id": f"{case['id']}-{len(case['updates']) + 1}",
            "status": status,
            "description": description,
            "updated_at": now,
        }
        case.update(status=status, updated_at=now)
        hook = self.on_move.get(case["protocol"])
        if hook is not None:
            hook(case, update)
        case["updates"].append(update)
        pushes.schedule(self, case, update)
        return update


async def sandbox_of(request: Request) -> Sandbox:
    """The sandbox serving this request."""
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(sandbox_of)]
