"""Who is calling: the API key in `Authorization: Bearer`, and the scope a route needs.

Routes say what they need with `Depends(require(Scope.x, ...))` (any one of the scopes will do;
`admin` always does). The catalogue, health and the problem pages need no key; the inbound
routes are authenticated by the organisation's own signature or api_key instead. Every call
that comes through here is counted against a rate limit (app.api.ratelimit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.alerts.sender import UNSUBSCRIBE_PATH
from app.api.ratelimit import limit_address, limit_caller, limit_inbound
from app.api.request_log import bind_client
from app.clients.service import Caller, Scope, authenticate
from app.core.errors import Forbidden, NoValidKey
from app.web.pages import PAGE_PREFIXES

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key from `iap clients create`, sent as `Authorization: Bearer iap_…`.",
)


async def optional_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> Caller | None:
    """The client whose key came with the request; None when none came; 401 when it is bad.

    The call counts against the client's rate limit, or its address's without a valid key
    (so guessing keys is limited too): 429 when it is over.
    """
    if credentials is None:
        await limit_address(request)
        if request.headers.get("authorization"):
            raise NoValidKey("Send the API key as `Authorization: Bearer <key>`.")
        return None
    return await _known_caller(request, credentials.credentials, "API key")


async def _known_caller(request: Request, key: str, named: str) -> Caller:
    """The client of a key, counted against its rate limit; 401 (after counting the address)
    when no client has it."""
    state = request.app.state.iap
    caller = await authenticate(
        state.engine, key, cache_seconds=state.settings.api.key_cache_seconds
    )
    if caller is None:
        await limit_address(request)
        raise NoValidKey(f"That {named} is not known, or it has been revoked.")
    bind_client(caller.name)
    await limit_caller(request, caller)
    return caller


async def api_key_caller(request: Request, api_key: str | None, *scopes: Scope) -> Caller:
    """Open311's way (app/routers/open311.py): the key as the `api_key` field of the form or
    query, else as `Authorization: Bearer`; authenticated, counted and scoped as every key is.
    The caller, if it holds one of `scopes`; 401 without a valid key, 403 without the scope
    (which Open311's errors answer as 403 alike)."""
    if not api_key:
        credentials = await bearer(request)
        api_key = credentials.credentials if credentials else None
    if not api_key:
        await limit_address(request)
        raise NoValidKey("This needs an api_key: an API key from `iap clients create`.")
    return check_scope(await _known_caller(request, api_key, "api_key"), scopes)


def check_scope(caller: Caller | None, scopes: tuple[Scope, ...]) -> Caller:
    """The caller, if it holds one of the scopes: 401 without a key, 403 without the scope."""
    if caller is None:
        raise NoValidKey("This needs an API key: send `Authorization: Bearer <key>`.")
    if not any(caller.allows(scope) for scope in scopes):
        needs = " ".join(s.value for s in scopes)
        named = ", ".join(s.value for s in scopes) or Scope.admin.value
        which = "one of the scopes: " if len(scopes) > 1 else "the scope "
        raise Forbidden(f"This needs an API key with {which}{named}.", needs=needs)
    return caller


def require(*scopes: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the calling client, which must hold one of `scopes` (or admin)."""

    async def dependency(
        caller: Annotated[Caller | None, Security(optional_caller)],
    ) -> Caller:
        return check_scope(caller, scopes)

    dependency.scopes = scopes  # type: ignore[attr-defined]  # read by app.api.openapi
    return dependency


async def admit(request: Request) -> None:
    """Before a body is refused (malformed, too large, not JSON): the caller is authenticated and
    counted as its route would, so anonymous bodies cannot be refused without limit. Every
    route that takes a body needs a key, but those whose proof is elsewhere: the inbound ones
    (their body's signature or api_key), the citizen's (their enquiry's token) and the signed
    links (unsubscribe), the kiosk's (its sealed device cookie): those are counted per address,
    as every call without a key is."""
    if request.url.path.startswith("/v1/inbound/"):
        await limit_inbound(request)
        return
    if request.url.path.startswith("/open311/"):
        # Open311 sends its api_key in the form (app.routers.open311 checks it once read):
        # a refused body is counted per address, as every call without a key is.
        await limit_address(request)
        return
    if "token" in request.query_params and not request.headers.get("authorization"):
        # The citizen speaks by their enquiry's token (app.routers.conversation): counted per
        # address, as every call without a key is; the token is checked by the route.
        await limit_address(request)
        return
    # The link's signature is the proof; the pages check their own (the tracking page's token,
    # the console's session, the kiosk's key): a key there changes nothing.
    if request.url.path == UNSUBSCRIBE_PATH or request.url.path.startswith(PAGE_PREFIXES):
        await limit_address(request)
        return
    caller = await optional_caller(request, await bearer(request))
    if caller is None:
        raise NoValidKey("This needs an API key: send `Authorization: Bearer <key>`.")
