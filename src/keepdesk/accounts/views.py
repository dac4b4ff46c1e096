"""Account pages: sign in and out, the agent's sessions and password, the first-admin setup."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from keepdesk.accounts import auth, self_service
from keepdesk.accounts.browser import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    PageBrowser,
    PresessionChecked,
    PresessionDep,
    set_cookie,
)
from keepdesk.accounts.dependencies import RuntimeDep, Session
from keepdesk.errors import InvalidInput, NotFound, RateLimited, Unauthenticated
from keepdesk.runtime import Runtime
from keepdesk.web import nav
from keepdesk.web.pages import PagesDep, is_htmx
from keepdesk.web.redirects import safe_next
from keepdesk.web.schema import IdPath

TEMPLATES = Path(__file__).parent / "templates"

router = APIRouter(include_in_schema=False)

FormText = Annotated[str, Form(max_length=1000)]
Password = Annotated[str, Form(max_length=1000)]


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def _signed_in_already(request: Request, session: Session, runtime: Runtime) -> bool:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return False
    try:
        await auth.authenticate_session(
            session,
            raw,
            now=runtime.clock.now(),
            idle_minutes=runtime.settings.auth_session_idle_minutes,
            max_days=runtime.settings.auth_session_max_days,
        )
    except Unauthenticated:
        return False
    return True  # only a look: the session's last use is not recorded


async def _open_session(
    request: Request, session: Session, runtime: Runtime, *, email: str, password: str
) -> str:
    settings = runtime.settings
    _, raw = await auth.sign_in(
        session,
        email=email,
        password=password,
        # The peer's address, never X-Forwarded-For: no header is trusted (AC-23).
        ip_address=request.client.host if request.client else "unknown",
        user_agent=request.headers.get("user-agent", "")[:300],
        now=runtime.clock.now(),
        idle_minutes=settings.auth_session_idle_minutes,
        max_days=settings.auth_session_max_days,
        max_failures_per_account=settings.auth_max_failures_per_account,
        max_failures_per_ip=settings.auth_max_failures_per_ip,
        throttle_minutes=settings.auth_throttle_minutes,
    )
    return raw


def _signed_in_response(runtime: Runtime, raw: str, url: str) -> Response:
    response = _see_other(url)
    set_cookie(response, runtime, SESSION_COOKIE, raw)
    response.delete_cookie(PRESESSION_COOKIE, path="/")
    return response


@router.get("/sign-in")
async def sign_in_page(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    presession: PresessionDep,
    next: str | None = None,
) -> Response:
    target = safe_next(next, default=nav.HOME)
    if await _signed_in_already(request, session, runtime):
        return _see_other(target)
    if await self_service.needs_first_admin(session):
        return _see_other("/setup")
    response = pages.render(
        request, "accounts/sign_in.html", {"next": target, "email": "", "problem": None}
    )
    return presession.keep(response, runtime)


@router.post("/sign-in")
async def sign_in(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    _csrf: PresessionChecked,
    email: FormText,
    password: Password,
    next: FormText = "",
) -> Response:
    target = safe_next(next, default=nav.HOME)
    try:
        raw = await _open_session(request, session, runtime, email=email, password=password)
    except (Unauthenticated, RateLimited) as exc:
        # Committed: a failure must count towards the throttle.
        await session.commit()
        status, headers = 401, None
        if isinstance(exc, RateLimited):
            status, headers = 429, {"Retry-After": str(exc.retry_after)}
        context = {"next": target, "email": email[:320], "problem": exc.message}
        return pages.render(
            request, "accounts/sign_in.html", context, status_code=status, headers=headers
        )
    await session.commit()
    return _signed_in_response(runtime, raw, target)


@router.post("/sign-out")
async def sign_out(browser: PageBrowser, session: Session, runtime: RuntimeDep) -> Response:
    await auth.revoke_session(
        session, actor=browser.actor, session_id=browser.session_id, now=runtime.clock.now()
    )
    await session.commit()
    response = _see_other(nav.SIGN_IN)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _account_page(
    request: Request,
    session: Session,
    runtime: Runtime,
    pages: PagesDep,
    browser: PageBrowser,
    *,
    fragment: str | None = None,
    notice: str | None = None,
    problem: str | None = None,
    status_code: int = 200,
) -> Response:
    now = runtime.clock.now()
    sessions = await auth.list_sessions(session, agent_id=browser.actor.agent_id, now=now)
    context = {
        "sessions": sessions,
        "current_session_id": browser.session_id,
        "now": now,
        "notice": notice,
        "problem": problem,
    }
    return pages.render(
        request, "accounts/account.html", context, fragment=fragment, status_code=status_code
    )


@router.get("/account")
async def account_page(
    request: Request, session: Session, runtime: RuntimeDep, pages: PagesDep, browser: PageBrowser
) -> Response:
    return await _account_page(request, session, runtime, pages, browser)


@router.post("/account/sessions/{session_id}/revoke")
async def revoke_session(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    session_id: IdPath,
) -> Response:
    if session_id == browser.session_id:
        raise InvalidInput("this is the browser you are using: sign out instead")
    await auth.revoke_session(
        session, actor=browser.actor, session_id=session_id, now=runtime.clock.now()
    )
    await session.commit()
    if not is_htmx(request):
        return _see_other("/account")
    return await _account_page(request, session, runtime, pages, browser, fragment="sessions")


@router.post("/account/password")
async def change_password(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    current_password: Password,
    new_password: Password,
    repeat_password: Password,
) -> Response:
    try:
        if new_password != repeat_password:
            raise InvalidInput("the new password and its repetition differ")
        await self_service.change_own_password(
            session,
            actor=browser.actor,
            current_password=current_password,
            new_password=new_password,
            keep_session_id=browser.session_id,
            now=runtime.clock.now(),
        )
    except InvalidInput as exc:
        return await _account_page(
            request, session, runtime, pages, browser, problem=exc.message, status_code=422
        )
    await session.commit()
    return await _account_page(
        request,
        session,
        runtime,
        pages,
        browser,
        notice="Your password is changed. Your other browsers are signed out.",
    )


@router.get("/setup")
async def setup_page(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    presession: PresessionDep,
) -> Response:
    if not await self_service.needs_first_admin(session):
        raise NotFound("keepdesk has an administrator already; sign in instead", code="setup_done")
    response = pages.render(
        request, "accounts/setup.html", {"email": "", "name": "", "problem": None}
    )
    return presession.keep(response, runtime)


@router.post("/setup")
async def setup(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    _csrf: PresessionChecked,
    email: FormText,
    name: FormText,
    password: Password,
    repeat_password: Password,
) -> Response:
    try:
        if password != repeat_password:
            raise InvalidInput("the password and its repetition differ")
        await self_service.create_first_admin(
            session, email=email, name=name, password=password, now=runtime.clock.now()
        )
    except InvalidInput as exc:
        context = {"email": email[:320], "name": name[:200], "problem": exc.message}
        return pages.render(request, "accounts/setup.html", context, status_code=422)
    raw = await _open_session(request, session, runtime, email=email, password=password)
    await session.commit()
    return _signed_in_response(runtime, raw, nav.HOME)


# --- the agent's own API tokens ---------------------------------------------------------------


async def _tokens_page(
    request: Request,
    session: Session,
    runtime: Runtime,
    pages: PagesDep,
    browser: PageBrowser,
    *,
    new_token: str | None = None,
    problem: str | None = None,
    status_code: int = 200,
) -> Response:
    tokens = await auth.list_api_tokens(session, agent_id=browser.actor.agent_id)
    context = {
        "tokens": tokens,
        "now": runtime.clock.now(),
        "new_token": new_token,
        "problem": problem,
    }
    return pages.render(
        request, "accounts/tokens.html", context, fragment="tokens", status_code=status_code
    )


@router.get("/tokens")
async def tokens_page(
    request: Request, session: Session, runtime: RuntimeDep, pages: PagesDep, browser: PageBrowser
) -> Response:
    return await _tokens_page(request, session, runtime, pages, browser)


@router.post("/tokens")
async def create_token(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    name: FormText,
) -> Response:
    try:
        _, raw = await auth.create_api_token(
            session,
            by=browser.actor.audit,
            agent_id=browser.actor.agent_id,
            name=name,
            now=runtime.clock.now(),
        )
    except InvalidInput as exc:
        return await _tokens_page(
            request, session, runtime, pages, browser, problem=exc.message, status_code=422
        )
    await session.commit()
    # Shown in this answer only: the database keeps its hash, never the token.
    return await _tokens_page(request, session, runtime, pages, browser, new_token=raw)


@router.post("/tokens/{token_id}/revoke")
async def revoke_token(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: PageBrowser,
    token_id: IdPath,
) -> Response:
    # This page holds the agent's own tokens only, admins' included; others' are not found.
    own = await auth.list_api_tokens(session, agent_id=browser.actor.agent_id)
    if token_id not in {token.id for token in own}:
        raise NotFound(f"no token with id {token_id}")
    await auth.revoke_api_token(
        session, actor=browser.actor, token_id=token_id, now=runtime.clock.now()
    )
    await session.commit()
    return await _tokens_page(request, session, runtime, pages, browser)
