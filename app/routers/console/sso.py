"""Signing in to the console with the council's single sign-on (OpenID Connect), where one is
configured (IAP_CONSOLE__OIDC_*, docs/console.md).

GET /console/sign-in/sso sends the browser to the provider, with this sign-in's state, nonce
and PKCE verifier sealed in a short-lived HttpOnly cookie of its own. The provider sends it back
to /console/sign-in/sso/callback: the state must match the cookie's, the code is exchanged and
the ID token checked (app/clients/oidc.py), and Sessions.single_sign_on finds the person (by
subject, or the first time by the provider's verified email). A new session's cookie is set
(a fresh token: nothing planted before counts); any refusal shows the sign-in page with what
went wrong, and no session.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Annotated

import httpx
import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.api.deps import State
from app.api.ratelimit import limit_address
from app.api.state import AppState
from app.clients.oidc import Attempt, OpenIDProvider, SingleSignOnFailed, configured
from app.clients.service import hash_secret
from app.clients.sessions import Outcome
from app.core.crypto import SealedDataUnreadable
from app.core.outbound import outbound_client
from app.routers.console import session as console
from app.routers.console.sign_in import MAX_FIELD, sign_in_form
from app.web import pages
from app.web.i18n import N_

log = structlog.get_logger()
router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)
SSO_PATH = f"{console.SIGN_IN_PATH}/sso"
CALLBACK_PATH = f"{SSO_PATH}/callback"
ATTEMPT_SECONDS = 600  # the provider's sign-in page is filled in within ten minutes
SSO_FIELD = "sso"  # the "Sign in with …" button, which the error summary links to

CANCELLED = N_(
    "Single sign-on was cancelled or refused. Try again, or sign in with your email "
    "address and password."
)
OUT_OF_DATE = N_("The single sign-on was out of date or did not start here. Try again.")
UNCHECKED = N_("Your single sign-on could not be checked. Try again, or ask a supervisor.")
NO_ACCOUNT = N_("There is no console account for the account you signed in with. Ask a supervisor.")
UNAVAILABLE = N_(
    "Single sign-on is not available at the moment. Try again later, or sign in with your "
    "email address and password."
)
# The errors an authorization endpoint answers with (RFC 6749 4.1.2.1, OpenID Connect 3.1.2.6).
PROVIDER_ERRORS = frozenset(
    {
        "access_denied",
        "invalid_request",
        "unauthorized_client",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
    }
)
Param = Annotated[str | None, Query(max_length=2048)]


@dataclass(frozen=True)
class Pending:
    """A sign-in on its way through the provider, as its cookie holds it."""

    attempt: Attempt
    next: str


def _attempt_cookie(state: AppState) -> str:
    return "__Host-iap-console-sso" if console.secure(state) else "iap-console-sso"


def _provider(state: AppState, http: httpx.AsyncClient) -> OpenIDProvider:
    return OpenIDProvider(
        state.settings.console,
        http=http,
        redirect_uri=state.settings.public_url.rstrip("/") + CALLBACK_PATH,
    )


@router.get("/sign-in/sso", dependencies=[Depends(limit_address)])
async def start(
    request: Request, state: State, next: Annotated[str | None, Query(max_length=MAX_FIELD)] = None
) -> Response:
    """To the provider's sign-in, this attempt's secrets sealed in the browser's cookie."""
    if not configured(state.settings.console):
        return _not_set_up(request, state)
    if await console.current(request, state) is not None:
        return RedirectResponse(console.safe_next(next), status_code=303, headers=pages.HEADERS)
    attempt = Attempt.new()
    try:
        async with outbound_client(state.settings, state.outbound) as http:
            url = await _provider(state, http).authorization_url(attempt)
    except SingleSignOnFailed as exc:
        log.warning("console.sso.unavailable", reason=exc.reason)
        return _refused(request, state, next, UNAVAILABLE, 502)
    response = RedirectResponse(url, status_code=303, headers=pages.HEADERS)
    sealed = state.sealer.seal(
        {
            "state": attempt.state,
            "nonce": attempt.nonce,
            "verifier": attempt.verifier,
            "next": console.safe_next(next),
            "at": time.time(),
        }
    )
    # Lax: the provider's redirect back is a top-level GET from its site, which Lax lets through.
    response.set_cookie(
        _attempt_cookie(state),
        str(sealed),
        httponly=True,
        secure=console.secure(state),
        samesite="lax",
        path="/",
        max_age=ATTEMPT_SECONDS,
    )
    return response


@router.get("/sign-in/sso/callback", dependencies=[Depends(limit_address)])
async def callback(
    request: Request,
    state: State,
    code: Param = None,
    error: Param = None,
    returned_state: Annotated[str | None, Query(alias="state", max_length=2048)] = None,
) -> Response:
    """Back from the provider: the state checked, the code exchanged, the ID token checked,
    the person found, a new session opened."""
    if not configured(state.settings.console):
        return _not_set_up(request, state)
    pending = _pending(request, state)
    next = pending.next if pending else None
    if error is not None:
        said = error if error in PROVIDER_ERRORS else "other"  # never what a link made up
        log.info("console.sso.refused", reason="provider-error", error=said)
        return _refused(request, state, next, CANCELLED, 403)
    if (
        pending is None
        or not returned_state
        or not code
        or not secrets.compare_digest(returned_state.encode(), pending.attempt.state.encode())
    ):
        log.info("console.sso.refused", reason="state")
        return _refused(request, state, next, OUT_OF_DATE, 400)
    try:
        async with outbound_client(state.settings, state.outbound) as http:
            identity = await _provider(state, http).identity(code=code, attempt=pending.attempt)
    except SingleSignOnFailed as exc:
        log.warning("console.sso.refused", reason=exc.reason)
        if exc.unreachable:
            return _refused(request, state, next, UNAVAILABLE, 502)
        return _refused(request, state, next, UNCHECKED, 401)
    sessions = console.sessions(state)
    result = await sessions.single_sign_on(identity.subject, identity.verified_email)
    if result.outcome is not Outcome.signed_in or result.token is None:
        log.info("console.sso.refused", reason="no-account", verified=identity.email_verified)
        return _refused(request, state, next, NO_ACCOUNT, 403)
    planted = request.cookies.get(console.cookie_name(state))
    if planted:  # whatever session this browser had ends: the new one is the only one
        await sessions.sign_out(hash_secret(planted))
    response = RedirectResponse(console.safe_next(next), status_code=303, headers=pages.HEADERS)
    console.set_session_cookie(response, state, result.token)
    _forget(response, state)
    return response


def _pending(request: Request, state: AppState) -> Pending | None:
    """The attempt this browser's cookie holds, if it is this gateway's and still fresh."""
    sealed = request.cookies.get(_attempt_cookie(state))
    if not sealed or len(sealed) > 4096:
        return None
    try:
        opened = state.sealer.open(sealed) or {}
    except SealedDataUnreadable:
        return None
    at = opened.get("at")
    fields = [opened.get(k) for k in ("state", "nonce", "verifier", "next")]
    if not isinstance(at, float | int) or not all(isinstance(f, str) for f in fields):
        return None
    if not 0 <= time.time() - at <= ATTEMPT_SECONDS:
        return None
    attempt = Attempt(state=str(fields[0]), nonce=str(fields[1]), verifier=str(fields[2]))
    return Pending(attempt, console.safe_next(str(fields[3])))


def _refused(
    request: Request, state: AppState, next: str | None, message: str, status: int
) -> Response:
    """The sign-in page, saying what went wrong; the attempt's cookie is gone (it is used)."""
    response = sign_in_form(request, state, next, errors=[(SSO_FIELD, message)], status=status)
    _forget(response, state)
    return response


def _forget(response: Response, state: AppState) -> None:
    response.delete_cookie(
        _attempt_cookie(state), path="/", secure=console.secure(state), httponly=True
    )


def _not_set_up(request: Request, state: AppState) -> Response:
    return console.render(
        request,
        state,
        None,
        "console/message.html",
        {
            "title": "Single sign-on is not set up",
            "message": "This console has no single sign-on. Sign in with your email address "
            "and password.",
            "back": console.SIGN_IN_PATH,
        },
        status=404,
    )
