"""HTTP for the catalogue: the services one can ask about and the organisations that act."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.adapters.base import Adapter
from app.api.auth import optional_caller
from app.api.deps import Adapters, Catalogue, Engine, StaffReader
from app.api.ratelimit import RATE_LIMITED_RESPONSE
from app.catalogue.catalogue import Organisation, Service
from app.catalogue.schemas import (
    AttributeOut,
    CircuitOut,
    OrganisationOut,
    ServiceOut,
    StatusUpdatesOut,
)
from app.core.errors import NotFound
from app.delivery import circuits
from app.delivery.dispatcher import unverified_repeats
from app.updates.poller import PollStatus, poll_states

# Public, but counted: per client when a key comes with the call, else per address.
router = APIRouter(
    prefix="/v1",
    tags=["catalogue"],
    dependencies=[Depends(optional_caller)],
    responses={429: RATE_LIMITED_RESPONSE},
)


# A key is optional here (FastAPI lists ApiKey; `{}` adds "or none"): with one, the call
# counts against its client's rate limit, not its address's.
_KEY_OPTIONAL: dict[str, Any] = {"security": [{}]}


@router.get(
    "/services",
    response_model=list[ServiceOut],
    summary="List services",
    openapi_extra=_KEY_OPTIONAL,
)
async def list_services(catalogue: Catalogue) -> list[ServiceOut]:
    """Every service, with who handles it and the questions (attributes) it asks."""
    return [_service(s) for s in catalogue.services.values()]


@router.get(
    "/services/{code}",
    response_model=ServiceOut,
    summary="Read one service",
    openapi_extra=_KEY_OPTIONAL,
)
async def read_service(code: str, catalogue: Catalogue) -> ServiceOut:
    """One service's definition, as an Open311 service definition would give it."""
    service = catalogue.services.get(code)
    if service is None:
        raise NotFound(f"There is no service '{code}'.")
    return _service(service)


@router.get(
    "/organisations",
    response_model=list[OrganisationOut],
    summary="List organisations",
)
async def list_organisations(
    engine: Engine,
    catalogue: Catalogue,
    adapters: Adapters,
    caller: StaffReader,
) -> list[OrganisationOut]:
    """Every organisation enquiries can be sent to, the areas it covers, how it is reached, and
    whether deliveries to it are flowing (its circuit breaker). Needs `enquiries:read-all`:
    back-office outages and their errors are for staff, not the public; one organisation's
    staff or key is shown its own organisation only."""
    known = await circuits.states(engine)
    polled = await poll_states(engine)
    blind = [o for o, a in adapters.items() if not a.recognises_repeats()]
    repeats = await unverified_repeats(engine, blind) if blind else {}
    return [
        _organisation(
            o,
            known.get(o.id, _CLOSED),
            adapters.get(o.id),
            polled.get(o.id),
        ).model_copy(update={"unverified_repeats": repeats.get(o.id, 0) if o.id in blind else None})
        for o in catalogue.organisations.values()
        if caller.may_act_for(o.id)
    ]


def _service(service: Service) -> ServiceOut:
    return ServiceOut(
        code=service.code,
        name=service.name,
        group=service.group,
        description=service.description,
        lgsl=service.lgsl,
        tiers=[t.value for t in service.tiers],
        needs_location=service.needs_location,
        attributes=[
            AttributeOut(
                code=a.code,
                description=a.description,
                datatype=a.datatype,
                required=a.required,
                values=[v.model_dump() for v in a.values],
            )
            for a in service.attributes
        ],
    )


_CLOSED = circuits.CircuitState(state="closed", failures=0, open_until=None, last_error=None)


def _organisation(
    organisation: Organisation,
    circuit: circuits.CircuitState,
    adapter: Adapter | None,
    polled: PollStatus | None,
) -> OrganisationOut:
    inbound = organisation.inbound
    pushed_by = "webhook" if inbound.webhook_secret else "open311" if inbound.api_key else None
    return OrganisationOut(
        id=organisation.id,
        name=organisation.name,
        kind=organisation.kind.value,
        areas=list(organisation.areas),
        adapter=organisation.adapter.type,
        shares=list(organisation.shares),
        max_concurrent=adapter.config.max_concurrent if adapter else 1,
        circuit=CircuitOut(**circuit.__dict__),
        status_updates=StatusUpdatesOut(
            pushed_by=pushed_by,
            poll_seconds=adapter.config.poll_seconds if adapter else None,
            next_poll_at=polled.next_poll_at if polled else None,
            last_poll_error=polled.last_error if polled else None,
        ),
    )
