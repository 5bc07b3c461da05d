"""Signing in to the console and out of it: email and password, then a code if the person has a
second factor; the council's single sign-on where one is configured (app/routers/console/sso.py).

Before anyone is signed in, the sign-in form's CSRF field is bound to a random cookie of its
own (so another site cannot sign a browser in to an account of its choosing); once signed in,
every form's field is bound to the session. Each step makes a new session token: a session
cannot be fixed in advance by planting a cookie.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.api.deps import State
from app.api.ratelimit import limit_address
from app.api.state import AppState
from app.clients.oidc import configured
from app.clients.service import hash_secret
from app.clients.sessions import Outcome, SignedIn, SignIn
from app.routers.console import session as console
from app.web import pages

router = APIRouter(prefix=console.CONSOLE_PATH, include_in_schema=False)
SIGN_IN_PURPOSE = "sign-in"
MAX_FIELD = 500

REFUSED = "Enter a correct email address and password"
REFUSED_CODE = "Enter the correct security code"
LOCKED = (
    "There have been too many failed attempts to sign in with this email address. "
    "Wait {minutes} minutes and try again, or ask a supervisor."
)
NO_EMAIL = "Enter your email address"
NO_PASSWORD = "Enter your password"  # noqa: S105 (what the page says, not a password)
NO_CODE = "Enter your security code"
NOTICES = {
    "signed_out": "You have signed out.",
    "timed_out": "You were signed out because the console was not used for a while.",
}
Next = Annotated[str | None, Query(max_length=MAX_FIELD)]


def _pre_cookie(state: AppState) -> str:
    return "__Host-iap-console-pre" if console.secure(state) else "iap-console-pre"


def _pre_binding(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@router.get("/sign-in", dependencies=[Depends(limit_address)])
async def sign_in_page(
    request: Request,
    state: State,
    next: Next = None,
    timed_out: Annotated[str | None, Query(max_length=10)] = None,
    signed_out: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    """The sign-in form; someone already signed in goes straight on (a timed-out screen's
    refresh ends the session it came from)."""
    token = request.cookies.get(console.cookie_name(state))
    if timed_out is not None and token:
        await console.sessions(state).sign_out(hash_secret(token))
    elif await console.current(request, state) is not None:
        return RedirectResponse(console.safe_next(next), status_code=303, headers=pages.HEADERS)
    notice = NOTICES["timed_out"] if timed_out is not None else None
    if signed_out is not None:
        notice = NOTICES["signed_out"]
    return sign_in_form(request, state, next, notice=notice)


@router.post("/sign-in", dependencies=[Depends(limit_address)])
async def sign_in(request: Request, state: State, next: Next = None) -> Response:
    async with request.form(max_files=0, max_fields=8) as form:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    pre = request.cookies.get(_pre_cookie(state), "")
    if not pre or not _field_matches(state, _pre_binding(pre), fields.get(console.CSRF_FIELD)):
        return _refused_form(request, state)
    email = fields.get("email", "").strip()[:MAX_FIELD]
    password = fields.get("password", "")[:MAX_FIELD]
    errors = [
        (at, message)
        for at, message, given in (("email", NO_EMAIL, email), ("password", NO_PASSWORD, password))
        if not given
    ]
    if errors:
        return sign_in_form(request, state, next, errors=errors, email=email, status=422)
    result = await console.sessions(state).sign_in(email, password)
    if result.outcome is Outcome.second_factor_due:
        return _opened(state, result, f"{console.SIGN_IN_PATH}/code?next={_quoted(next)}")
    if result.outcome is Outcome.signed_in:
        return _opened(state, result, console.safe_next(next))
    message, status = _refusal(state, result, REFUSED)
    return sign_in_form(
        request, state, next, errors=[("email", message)], email=email, status=status
    )


@router.get("/sign-in/code", dependencies=[Depends(limit_address)])
async def code_page(request: Request, state: State, next: Next = None) -> Response:
    pending = await _pending(request, state)
    if pending is None:
        return console.sign_in_redirect(console.safe_next(next))
    return _code_form(request, state, pending.csrf_binding, next)


@router.post("/sign-in/code", dependencies=[Depends(limit_address)])
async def code(request: Request, state: State, next: Next = None) -> Response:
    pending = await _pending(request, state)
    if pending is None:
        return console.sign_in_redirect(console.safe_next(next))
    async with request.form(max_files=0, max_fields=8) as form:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not _field_matches(state, pending.csrf_binding, fields.get(console.CSRF_FIELD)):
        return _refused_form(request, state)
    given = fields.get("code", "").strip()[:20]
    if not given:
        return _code_form(request, state, pending.csrf_binding, next, [("code", NO_CODE)], 422)
    result = await console.sessions(state).second_factor(pending, given)
    if result.outcome is Outcome.signed_in:
        return _opened(state, result, console.safe_next(next))
    message, status = _refusal(state, result, REFUSED_CODE)
    return _code_form(request, state, pending.csrf_binding, next, [("code", message)], status)


@router.get("/still-there")
async def still_there(request: Request, state: State, next: Next = None) -> Response:
    """Where a page left alone goes before the session times out: more time (back to the page,
    which counts as use) or, if nobody answers, signed out."""
    person = await console.current(request, state)
    if person is None:
        return console.sign_in_redirect(console.safe_next(next))
    response = console.render(
        request,
        state,
        person,
        "console/still_there.html",
        {"back": console.safe_next(next), "minutes": console.WARNING_SECONDS // 60},
        refresh=False,
    )
    response.headers["Refresh"] = f"{console.WARNING_SECONDS};url={console.TIMED_OUT_PATH}"
    return response


@router.post("/sign-out")
async def sign_out(request: Request, state: State) -> Response:
    """Ends the session (its form carries the session's CSRF field); the cookie goes too."""
    person = await console.current(request, state)
    if person is not None:
        async with request.form(max_files=0, max_fields=4) as form:
            if not console.form_is_ours(state, person, form):
                return _refused_form(request, state)
        await console.sessions(state).sign_out(person.token_hash)
    response = RedirectResponse(
        f"{console.SIGN_IN_PATH}?signed_out=1", status_code=303, headers=pages.HEADERS
    )
    console.clear_session_cookie(response, state)
    return response


async def _pending(request: Request, state: AppState) -> SignedIn | None:
    """The half-open session of someone who gave their password and owes a code."""
    found = await console.sessions(state).find(request.cookies.get(console.cookie_name(state)))
    return found if found is not None and found.second_factor_due else None


def _opened(state: AppState, result: SignIn, to: str) -> Response:
    """The new session's cookie (a fresh token), the sign-in form's own cookie gone."""
    assert result.token is not None
    response = RedirectResponse(to, status_code=303, headers=pages.HEADERS)
    console.set_session_cookie(response, state, result.token)
    response.delete_cookie(_pre_cookie(state), path="/", secure=console.secure(state))
    return response


def _refusal(state: AppState, result: SignIn, refused: str) -> tuple[str, int]:
    if result.outcome is Outcome.locked:
        minutes = f"{state.settings.console.lockout_minutes:g}"
        return LOCKED.format(minutes=minutes), 429
    return refused, 401


def sign_in_form(
    request: Request,
    state: AppState,
    next: str | None,
    *,
    errors: list[tuple[str, str]] | None = None,
    email: str = "",
    notice: str | None = None,
    status: int = 200,
) -> Response:
    """The sign-in page (single sign-on's refusals are shown on it too, app/routers/console/
    sso.py), with the form's own CSRF cookie."""
    pre = request.cookies.get(_pre_cookie(state)) or secrets.token_urlsafe(32)
    response = console.render(
        request,
        state,
        None,
        "console/sign_in.html",
        {
            "errors": errors or [],
            "email": email,
            "next": console.safe_next(next),
            "notice": notice,
            "form_csrf": state.sealer.form_tokens(_pre_binding(pre), SIGN_IN_PURPOSE)[0],
            "sso_name": state.settings.console.oidc_name
            if configured(state.settings.console)
            else None,
        },
        status=status,
    )
    response.set_cookie(
        _pre_cookie(state),
        pre,
        httponly=True,
        secure=console.secure(state),
        samesite="strict",
        path="/",
        max_age=3600,
    )
    return response


def _code_form(
    request: Request,
    state: AppState,
    binding: bytes,
    next: str | None,
    errors: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> Response:
    return console.render(
        request,
        state,
        None,
        "console/code.html",
        {
            "errors": errors or [],
            "next": console.safe_next(next),
            "form_csrf": state.sealer.form_tokens(binding, SIGN_IN_PURPOSE)[0],
        },
        status=status,
    )


def _refused_form(request: Request, state: AppState) -> Response:
    """A form that did not come from this gateway's page (no CSRF field, or a wrong one)."""
    return console.render(
        request,
        state,
        None,
        "console/message.html",
        {
            "title": "The form could not be used",
            "message": "It was out of date or did not come from this console. Nothing was "
            "changed. Go back, reload the page and try again.",
            "back": console.SIGN_IN_PATH,
        },
        status=400,
    )


def _field_matches(state: AppState, binding: bytes, given: str | None) -> bool:
    return pages.form_field_matches(state.sealer, binding, SIGN_IN_PURPOSE, given)


def _quoted(next: str | None) -> str:
    return quote(console.safe_next(next), safe="")
