"""Administrators' pages for people: agents (role, active, teams) and teams (names, members).

Adapters only: every rule (the last administrator, no self-demotion, unique names) lives in
`accounts.service`, and its message is what the page shows.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.accounts.browser import AdminBrowser
from keepdesk.accounts.dependencies import RuntimeDep, Session
from keepdesk.accounts.models import AgentRole
from keepdesk.errors import Conflict, InvalidInput, KeepdeskError
from keepdesk.web.pages import PagesDep
from keepdesk.web.schema import IdPath, Text

router = APIRouter(include_in_schema=False)

# One page shows every agent: a helpdesk has tens, not thousands.
_MAX_AGENTS = 1000
FormText = Annotated[Text, Form(max_length=1000)]
TeamIds = Annotated[list[int], Form(max_length=200)]
_STATUS = {InvalidInput: 422, Conflict: 409}


def _status(exc: KeepdeskError) -> int:
    return next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 400)


async def _people(session: AsyncSession) -> dict[str, Any]:
    agents = (await accounts.list_agents(session, cursor=None, limit=_MAX_AGENTS)).items
    teams = await accounts.list_teams(session)
    return {
        "agents": agents,
        "teams": teams,
        "team_names": {t.id: t.name for t in teams},
        "agent_names": {a.id: a.name for a in agents},
        "teams_of": await accounts.team_ids_of(session, [a.id for a in agents]),
        "members_of": await accounts.member_ids(session, [t.id for t in teams]),
        "roles": list(AgentRole),
    }


async def _render(
    request: Request,
    session: AsyncSession,
    pages: PagesDep,
    template: str,
    *,
    notice: str | None = None,
    problem: KeepdeskError | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    context = {
        **await _people(session),
        "notice": notice,
        "problem": problem.message if problem else None,
        **(extra or {}),
    }
    block = "agents" if template.endswith("agents.html") else "teams"
    return pages.render(
        request,
        template,
        context,
        fragment=block,
        status_code=_status(problem) if problem else 200,
    )


# --- agents -----------------------------------------------------------------------------------


@router.get("/admin/agents")
async def agents_page(
    request: Request, session: Session, pages: PagesDep, _admin: AdminBrowser
) -> Response:
    return await _render(request, session, pages, "accounts/admin_agents.html")


@router.post("/admin/agents")
async def create_agent(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    name: FormText,
    email: FormText,
    role: Annotated[AgentRole, Form()] = AgentRole.agent,
    team_ids: TeamIds = [],  # noqa: B006 - FastAPI default
    password: FormText = "",
) -> Response:
    try:
        agent = await accounts.create_agent(
            session,
            by=browser.actor.audit,
            email=email,
            name=name,
            role=role,
            team_ids=team_ids,
            password=password or None,
            now=runtime.clock.now(),
        )
    except (InvalidInput, Conflict) as exc:
        await session.rollback()
        return await _render(request, session, pages, "accounts/admin_agents.html", problem=exc)
    await session.commit()
    notice = (
        f"{agent.name} <{agent.email}> can now sign in."
        if password
        else (
            f"{agent.name} <{agent.email}> is created; set a password with "
            f"'keepdesk user set-password' before they can sign in."
        )
    )
    return await _render(request, session, pages, "accounts/admin_agents.html", notice=notice)


@router.post("/admin/agents/{agent_id}")
async def update_agent(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    agent_id: IdPath,
    role: Annotated[AgentRole, Form()],
    is_active: Annotated[bool, Form()],
    team_ids: TeamIds = [],  # noqa: B006 - FastAPI default
) -> Response:
    try:
        agent = await accounts.update_agent(
            session,
            actor=browser.actor,
            agent_id=agent_id,
            now=runtime.clock.now(),
            role=role,
            is_active=is_active,
            team_ids=team_ids,
        )
    except (InvalidInput, Conflict) as exc:
        await session.rollback()
        return await _render(request, session, pages, "accounts/admin_agents.html", problem=exc)
    await session.commit()
    return await _render(
        request, session, pages, "accounts/admin_agents.html", notice=f"{agent.name} is saved."
    )


# --- teams ------------------------------------------------------------------------------------


@router.get("/admin/teams")
async def teams_page(
    request: Request, session: Session, pages: PagesDep, _admin: AdminBrowser
) -> Response:
    return await _render(request, session, pages, "accounts/admin_teams.html")


async def _team_change(
    request: Request, session: AsyncSession, pages: PagesDep, change: Any, notice: str
) -> Response:
    try:
        await change
    except (InvalidInput, Conflict) as exc:
        await session.rollback()
        return await _render(request, session, pages, "accounts/admin_teams.html", problem=exc)
    await session.commit()
    return await _render(request, session, pages, "accounts/admin_teams.html", notice=notice)


@router.post("/admin/teams")
async def create_team(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    name: FormText,
) -> Response:
    change = accounts.create_team(session, actor=browser.actor, name=name, now=runtime.clock.now())
    return await _team_change(request, session, pages, change, "The team is created.")


@router.post("/admin/teams/{team_id}/rename")
async def rename_team(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    team_id: IdPath,
    name: FormText,
) -> Response:
    change = accounts.rename_team(
        session, actor=browser.actor, team_id=team_id, name=name, now=runtime.clock.now()
    )
    return await _team_change(request, session, pages, change, "The team is renamed.")


@router.post("/admin/teams/{team_id}/members")
async def add_member(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    team_id: IdPath,
    agent_id: Annotated[int, Form(ge=1)],
) -> Response:
    change = accounts.add_member(
        session, actor=browser.actor, team_id=team_id, agent_id=agent_id, now=runtime.clock.now()
    )
    return await _team_change(request, session, pages, change, "The member is added.")


@router.post("/admin/teams/{team_id}/members/{agent_id}/remove")
async def remove_member(
    request: Request,
    session: Session,
    runtime: RuntimeDep,
    pages: PagesDep,
    browser: AdminBrowser,
    team_id: IdPath,
    agent_id: IdPath,
) -> Response:
    change = accounts.remove_member(
        session, actor=browser.actor, team_id=team_id, agent_id=agent_id, now=runtime.clock.now()
    )
    return await _team_change(request, session, pages, change, "The member is removed.")
