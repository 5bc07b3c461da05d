"""Every route and every dependency runs on the event loop: FastAPI sends a plain `def` to a
thread pool, and each such hand-over takes the interpreter lock from the requests in flight
(measured in bench/: it cost the intake a tenth of its speed)."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts


def _sync_calls(dependant: Dependant) -> set[str]:
    found: set[str] = set()
    for sub in dependant.dependencies:
        call: Any = sub.call
        function = call if inspect.isroutine(call) else type(call).__call__
        if not inspect.iscoroutinefunction(function):
            found.add(getattr(call, "__qualname__", repr(call)))
        found |= _sync_calls(sub)
    return found


def test_no_route_or_dependency_runs_in_a_thread(app):
    routes = [
        route  # as served: an included router's dependencies are in its routes' dependant
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
    ]
    assert len(routes) > 100
    sync_endpoints = [r.path for r in routes if not inspect.iscoroutinefunction(r.endpoint)]
    sync_dependencies = set().union(*(_sync_calls(r.dependant) for r in routes))
    assert (sync_endpoints, sync_dependencies) == ([], set())
