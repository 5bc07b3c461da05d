"""What every console page shares: the signed-in person (a dependency that sends anyone else to
the sign-in page), the scope a page needs, the CSRF field every form carries, and rendering in
the console's layout. The console is the staff's own pages at /console/ (docs/console.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from app.api.deps import State
from app.api.ratelimit import limit_caller
from app.api.request_log import bind_client
from app.api.state import AppState
from app.clients.service import Scope
from app.clients.sessions import Sessions, SignedIn
from app.core.settings import Environment
from app.web import pages

CONSOLE_PATH = "/console"
SIGN_IN_PATH = f"{CONSOLE_PATH}/sign-in"
STILL_THERE_PATH = f"{CONSOLE_PATH}/still-there"
TIMED_OUT_PATH = f"{SIGN_IN_PATH}?timed_out=1"
WARNING_SECONDS = 120  # how long the "are you still there?" page waits before signing out
ENGLISH = "en"  # the console is in English; its strings are marked for translation all the same
# Each form's purpose is bound with the session: a field from one form does not pass another's.
CSRF_FIELD = "csrf"


class SignInNeeded(Exception):
    """No live session: the browser is sent to sign in, and back here afterwards."""

    def __init__(self, back_to: str) -> None:
        self.back_to = back_to


class NotAllowed(Exception):
    """Signed in, but the person's role does not give what this page needs."""


def sessions(state: AppState) -> Sessions:
    return Sessions(state.engine, state.sealer, state.settings.console)


def cookie_name(state: AppState) -> str:
    """`__Host-` when Secure (the browser then keeps it to this host and path /, over HTTPS)."""
    return "__Host-iap-console" if secure(state) else "iap-console"


def secure(state: AppState) -> bool:
    chosen = state.settings.console.secure_cookie
    return chosen if chosen is not None else state.settings.env is Environment.production


def set_session_cookie(response: Response, state: AppState, token: str) -> None:
    """The session's cookie: HttpOnly (no script reads it), SameSite=Lax (no other site's form
    or script sends it; a link from an email to an enquiry page still opens signed in)."""
    response.set_cookie(
        cookie_name(state),
        token,
        httponly=True,
        secure=secure(state),
        samesite="lax",
        path="/",
        max_age=int(state.settings.console.session_hours * 3600),
    )


def clear_session_cookie(response: Response, state: AppState) -> None:
    response.delete_cookie(cookie_name(state), path="/", secure=secure(state), httponly=True)


async def current(request: Request, state: State) -> SignedIn | None:
    """The person signed in on this browser, or None (a half-done sign-in counts as none)."""
    found = await sessions(state).find(request.cookies.get(cookie_name(state)))
    if found is None or found.second_factor_due:
        return None
    bind_client(found.caller.name)  # logs name the person's client (staff-…), never the person
    await limit_caller(request, found.caller)
    return found


async def signed_in(request: Request, state: State) -> SignedIn:
    person = await current(request, state)
    if person is None:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInNeeded(back if request.method == "GET" else CONSOLE_PATH + "/")
    return person


Person = Annotated[SignedIn, Depends(signed_in)]


def needs(*scopes: Scope) -> Callable[..., Awaitable[SignedIn]]:
    """A dependency: the signed-in person, who must hold one of the scopes (403 page if not)."""

    async def dependency(person: Person) -> SignedIn:
        if not any(person.allows(scope) for scope in scopes):
            raise NotAllowed
        return person

    return dependency


def csrf_token(state: AppState, person: SignedIn, purpose: str = "console") -> str:
    return state.sealer.form_tokens(person.csrf_binding, purpose)[0]


def form_is_ours(
    state: AppState, person: SignedIn, form: FormData, purpose: str = "console"
) -> bool:
    """Whether the form carries this session's field for this purpose (CSRF)."""
    return pages.form_field_matches(
        state.sealer, person.csrf_binding, purpose, form.get(CSRF_FIELD)
    )


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console page of this gateway, never another site."""
    if (
        value
        and value.startswith(CONSOLE_PATH + "/")
        and not value.startswith("//")
        and "\\" not in value
        and len(value) <= 500
    ):
        return value
    return CONSOLE_PATH + "/"


def sign_in_redirect(back_to: str) -> Response:
    return RedirectResponse(
        f"{SIGN_IN_PATH}?next={quote(safe_next(back_to), safe='')}",
        status_code=303,
        headers=pages.HEADERS,
    )


def render(
    request: Request,
    state: AppState,
    person: SignedIn | None,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    scripted: bool = False,
    refresh: bool = True,
) -> Response:
    """A page in the console's layout: the person, the areas they may use, the sign-out form.
    A page left alone moves, shortly before the session would time out, to a warning that
    offers more time (WCAG 2.2.1) and then signs out, so nothing personal stays on an
    unattended screen. (A Refresh header, as browsers take the meta tag: no page of ours has
    a delayed meta refresh, which axe-core counts as a failure of 2.2.1 itself.)"""
    shared: dict[str, Any] = {
        "person": person,
        "csrf": csrf_token(state, person) if person else None,
        "areas": areas(person) if person else [],
        "here": request.url.path,
    }
    headers = {"Content-Security-Policy": pages.CSP_SCRIPTED} if scripted else {}
    if person is not None and refresh:
        idle = state.settings.console.idle_minutes * 60
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        warn_at = max(round(idle - WARNING_SECONDS), 1)
        headers["Refresh"] = f"{warn_at};url={STILL_THERE_PATH}?next={quote(back, safe='')}"
    return pages.render(
        request, template, ENGLISH, {**shared, **context}, status=status, headers=headers
    )


# The console's areas, in the header, for those whose scopes open them.
AREAS: list[tuple[str, str, tuple[Scope, ...]]] = [
    ("Take a call", f"{CONSOLE_PATH}/calls/new", (Scope.enquiries_submit,)),
    ("Caller history", f"{CONSOLE_PATH}/history", (Scope.enquiries_read_all,)),
    ("Triage", f"{CONSOLE_PATH}/triage", (Scope.triage,)),
    ("Our queue", f"{CONSOLE_PATH}/queue", (Scope.parts_update,)),
    ("Dead letters", f"{CONSOLE_PATH}/dead-letters", (Scope.deliveries_manage,)),
    ("Stuck work", f"{CONSOLE_PATH}/stuck", (Scope.deliveries_manage,)),
]


def areas(person: SignedIn) -> list[tuple[str, str]]:
    return [
        (label, url)
        for label, url, scopes in AREAS
        if any(person.allows(scope) for scope in scopes)
        and (url != f"{CONSOLE_PATH}/queue" or person.caller.organisation_id is not None)
    ]
