"""Signed-in browsers: the session cookie, the agent behind a page request, and CSRF.

Every page route depends on `PageBrowser` (or, signed out, on `presession_token` and
`check_presession_csrf`). For a state-changing method the dependency itself demands the CSRF
token and a same-origin request, so no page route can forget them (AC-22). The REST API keeps
its bearer tokens (`dependencies.py`); a cookie never authenticates an API call.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import auth
from keepdesk.accounts.access import Actor, require_admin
from keepdesk.accounts.dependencies import RuntimeDep, Session, record_use
from keepdesk.accounts.models import Team
from keepdesk.errors import PermissionDenied, Unauthenticated
from keepdesk.runtime import Runtime
from keepdesk.web import csrf
from keepdesk.web.nav import navigation
from keepdesk.web.pages import is_htmx

SESSION_COOKIE = "keepdesk_session"
# A signed-out browser's random id, so the sign-in and setup forms carry a CSRF token too
# (a forged sign-in would put the victim into the attacker's account).
PRESESSION_COOKIE = "keepdesk_presession"
_MAX_COOKIE = 200


@dataclass(frozen=True, slots=True)
class TeamName:
    id: int
    name: str


@dataclass(frozen=True)
class Browser:
    """The agent at the keyboard, which of their sessions this is, and its CSRF token."""

    actor: Actor
    session_id: int
    csrf_token: str
    # What the request has read already and a page shows in several places (the teams: the
    # navigation, a queue's filter and bulk menus, the ticket panel).
    _read: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    async def teams(self, session: AsyncSession) -> list[TeamName]:
        """Every team, by name, read at most once per request."""
        if "teams" not in self._read:
            self._read["teams"] = await _all_teams(session)
        teams: list[TeamName] = self._read["teams"]
        return teams


def cookie_is_secure(runtime: Runtime) -> bool:
    return runtime.settings.server_base_url.startswith("https://")


def set_cookie(response: Response, runtime: Runtime, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="lax",
        secure=cookie_is_secure(runtime),
        path="/",
    )


def allowed_origins(request: Request, runtime: Runtime) -> set[str]:
    """The configured base URL's origin, and the one the browser used to reach us."""
    found = {
        csrf.origin_of(runtime.settings.server_base_url),
        csrf.origin_of(str(request.base_url)),
    }
    return {origin for origin in found if origin}


async def check_csrf(request: Request, runtime: Runtime, expected: str) -> None:
    reason = csrf.cross_origin_reason(
        request.headers, allowed_origins=allowed_origins(request, runtime)
    )
    if reason is not None:
        raise PermissionDenied(
            f"this change was not sent from a keepdesk page: {reason}", code="csrf_origin"
        )
    given = request.headers.get(csrf.HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(csrf.FIELD)
        given = value if isinstance(value, str) else None
    if not csrf.tokens_match(expected, given):
        raise PermissionDenied(
            "the form's security token is missing or out of date; reload the page and try again",
            code="csrf_failed",
        )


async def _all_teams(session: AsyncSession) -> list[TeamName]:
    # Teams are few (tens): all of them cost what the agent's own did.
    rows = await session.execute(select(Team.id, Team.name).order_by(Team.name))
    return [TeamName(team_id, name) for team_id, name in rows]


async def get_browser(request: Request, session: Session, runtime: RuntimeDep) -> Browser:
    raw = request.cookies.get(SESSION_COOKIE, "")
    if not raw or len(raw) > _MAX_COOKIE:
        raise Unauthenticated("please sign in", code="no_session")
    settings = runtime.settings
    actor, checked = await auth.authenticate_session(
        session,
        raw,
        now=runtime.clock.now(),
        idle_minutes=settings.auth_session_idle_minutes,
        max_days=settings.auth_session_max_days,
    )
    session_id = checked.id
    await record_use(request, session, checked)
    token = csrf.token_for(runtime.secret, raw)
    if request.method in csrf.UNSAFE_METHODS:
        await check_csrf(request, runtime, token)
    browser = Browser(actor=actor, session_id=session_id, csrf_token=token)
    page: dict[str, object] = {"me": actor, "csrf_token": token}
    if not is_htmx(request):
        mine = [(t.id, t.name) for t in await browser.teams(session) if t.id in actor.team_ids]
        page["nav"] = navigation(teams=mine, is_admin=actor.is_admin)
    request.state.page = page
    request.state.actor = actor
    return browser


PageBrowser = Annotated[Browser, Depends(get_browser)]


async def get_admin_browser(browser: PageBrowser) -> Browser:
    """An administrator's browser; anyone else gets the readable "not allowed" page."""
    require_admin(browser.actor)
    return browser


AdminBrowser = Annotated[Browser, Depends(get_admin_browser)]


# --- signed out: the sign-in and setup forms ---------------------------------------------------


@dataclass(frozen=True)
class Presession:
    """A signed-out browser's CSRF token; `new_cookie` is set when the cookie is to be sent."""

    token: str
    new_cookie: str | None

    def keep(self, response: Response, runtime: Runtime) -> Response:
        if self.new_cookie is not None:
            set_cookie(response, runtime, PRESESSION_COOKIE, self.new_cookie)
        return response


async def presession(request: Request, runtime: RuntimeDep) -> Presession:
    value = request.cookies.get(PRESESSION_COOKIE, "")
    new_cookie = None
    if not value or len(value) > _MAX_COOKIE:
        value = new_cookie = secrets.token_urlsafe(24)
    token = csrf.token_for(runtime.secret, value, purpose="presession")
    request.state.page = {"csrf_token": token}
    return Presession(token=token, new_cookie=new_cookie)


async def check_presession_csrf(request: Request, runtime: RuntimeDep) -> str:
    value = request.cookies.get(PRESESSION_COOKIE, "")
    if not value or len(value) > _MAX_COOKIE:
        raise PermissionDenied(
            "keepdesk needs cookies to sign you in; allow them for this site and reload the page",
            code="csrf_failed",
        )
    token = csrf.token_for(runtime.secret, value, purpose="presession")
    request.state.page = {"csrf_token": token}
    await check_csrf(request, runtime, token)
    return token


PresessionDep = Annotated[Presession, Depends(presession)]
PresessionChecked = Annotated[str, Depends(check_presession_csrf)]
