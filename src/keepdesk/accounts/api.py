"""REST routes for agents, teams, contacts and the caller's own API tokens: thin adapters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from keepdesk.accounts import auth
from keepdesk.accounts import service as accounts
from keepdesk.accounts.access import require_admin
from keepdesk.accounts.dependencies import ApiActor, RuntimeDep, Session
from keepdesk.accounts.models import Agent, Team
from keepdesk.accounts.schemas import (
    AgentCreate,
    AgentRead,
    AgentUpdate,
    ContactCreate,
    ContactRead,
    ContactUpdate,
    TeamCreate,
    TeamRead,
    TokenCreate,
    TokenCreated,
    TokenRead,
)
from keepdesk.web.schema import CursorQuery, IdPath, ListPage, error_responses

router = APIRouter(responses=error_responses(401, 422, 503))
Limit = Annotated[int | None, Query(ge=1, le=1000, description="Page size (default 25).")]


def _limit(runtime: RuntimeDep, limit: int | None) -> int:
    return min(limit or runtime.settings.api_page_size, runtime.settings.api_max_page_size)


def _agent_read(agent: Agent, team_ids: list[int]) -> AgentRead:
    return AgentRead(
        id=agent.id,
        email=agent.email,
        name=agent.name,
        role=agent.role,
        is_active=agent.is_active,
        team_ids=team_ids,
        created_at=agent.created_at,
    )


def _team_read(team: Team, member_ids: list[int]) -> TeamRead:
    return TeamRead(id=team.id, name=team.name, member_ids=member_ids, created_at=team.created_at)


# --- agents -----------------------------------------------------------------------------------


@router.get("/agents", tags=["agents"], summary="List agents")
async def list_agents(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    cursor: CursorQuery = None,
    limit: Limit = None,
    team_id: Annotated[int | None, Query(ge=1)] = None,
) -> ListPage[AgentRead]:
    page = await accounts.list_agents(
        session, cursor=cursor, limit=_limit(runtime, limit), team_id=team_id
    )
    teams = await accounts.team_ids_of(session, [a.id for a in page.items])
    return ListPage(
        items=[_agent_read(a, teams[a.id]) for a in page.items], next_cursor=page.next_cursor
    )


@router.get("/agents/me", tags=["agents"], summary="The agent this token belongs to")
async def get_me(session: Session, actor: ApiActor) -> AgentRead:
    agent = await accounts.get_agent(session, actor.agent_id)
    return _agent_read(agent, sorted(actor.team_ids))


@router.get("/agents/{agent_id}", tags=["agents"], responses=error_responses(404))
async def get_agent(session: Session, actor: ApiActor, agent_id: IdPath) -> AgentRead:
    agent = await accounts.get_agent(session, agent_id)
    return _agent_read(agent, (await accounts.team_ids_of(session, [agent.id]))[agent.id])


@router.post(
    "/agents",
    tags=["agents"],
    status_code=201,
    summary="Create an agent (admins)",
    responses=error_responses(403, 409),
)
async def create_agent(
    session: Session, actor: ApiActor, runtime: RuntimeDep, body: AgentCreate
) -> AgentRead:
    require_admin(actor)
    agent = await accounts.create_agent(
        session,
        by=actor.audit,
        email=body.email,
        name=body.name,
        role=body.role,
        password=body.password,
        team_ids=body.team_ids,
        now=runtime.clock.now(),
    )
    await session.commit()
    return _agent_read(agent, sorted(set(body.team_ids)))


@router.patch(
    "/agents/{agent_id}",
    tags=["agents"],
    summary="Change an agent (admins)",
    responses=error_responses(403, 404, 409),
)
async def update_agent(
    session: Session, actor: ApiActor, runtime: RuntimeDep, agent_id: IdPath, body: AgentUpdate
) -> AgentRead:
    agent = await accounts.update_agent(
        session,
        actor=actor,
        agent_id=agent_id,
        now=runtime.clock.now(),
        name=body.name,
        role=body.role,
        is_active=body.is_active,
        team_ids=body.team_ids,
    )
    teams = await accounts.team_ids_of(session, [agent.id])
    await session.commit()
    return _agent_read(agent, teams[agent.id])


# --- teams ------------------------------------------------------------------------------------


@router.get("/teams", tags=["teams"], summary="List all teams")
async def list_teams(session: Session, actor: ApiActor) -> ListPage[TeamRead]:
    teams = await accounts.list_teams(session)
    members = await accounts.member_ids(session, [t.id for t in teams])
    return ListPage(items=[_team_read(t, members[t.id]) for t in teams], next_cursor=None)


@router.get("/teams/{team_id}", tags=["teams"], responses=error_responses(404))
async def get_team(session: Session, actor: ApiActor, team_id: IdPath) -> TeamRead:
    team = await accounts.get_team(session, team_id)
    return _team_read(team, (await accounts.member_ids(session, [team.id]))[team.id])


@router.post(
    "/teams",
    tags=["teams"],
    status_code=201,
    summary="Create a team (admins)",
    responses=error_responses(403, 409),
)
async def create_team(
    session: Session, actor: ApiActor, runtime: RuntimeDep, body: TeamCreate
) -> TeamRead:
    team = await accounts.create_team(session, actor=actor, name=body.name, now=runtime.clock.now())
    await session.commit()
    return _team_read(team, [])


@router.patch(
    "/teams/{team_id}",
    tags=["teams"],
    summary="Rename a team (admins)",
    responses=error_responses(403, 404, 409),
)
async def rename_team(
    session: Session, actor: ApiActor, runtime: RuntimeDep, team_id: IdPath, body: TeamCreate
) -> TeamRead:
    team = await accounts.rename_team(
        session, actor=actor, team_id=team_id, name=body.name, now=runtime.clock.now()
    )
    members = await accounts.member_ids(session, [team.id])
    await session.commit()
    return _team_read(team, members[team.id])


@router.put(
    "/teams/{team_id}/members/{agent_id}",
    tags=["teams"],
    status_code=204,
    summary="Add an agent to a team (admins)",
    responses=error_responses(403, 404),
)
async def add_member(
    session: Session, actor: ApiActor, runtime: RuntimeDep, team_id: IdPath, agent_id: IdPath
) -> Response:
    await accounts.add_member(
        session, actor=actor, team_id=team_id, agent_id=agent_id, now=runtime.clock.now()
    )
    await session.commit()
    return Response(status_code=204)


@router.delete(
    "/teams/{team_id}/members/{agent_id}",
    tags=["teams"],
    status_code=204,
    summary="Remove an agent from a team (admins)",
    responses=error_responses(403, 404),
)
async def remove_member(
    session: Session, actor: ApiActor, runtime: RuntimeDep, team_id: IdPath, agent_id: IdPath
) -> Response:
    await accounts.remove_member(
        session, actor=actor, team_id=team_id, agent_id=agent_id, now=runtime.clock.now()
    )
    await session.commit()
    return Response(status_code=204)


# --- contacts ---------------------------------------------------------------------------------


def _contact_read(c: object) -> ContactRead:
    return ContactRead.model_validate(c, from_attributes=True)


@router.get("/contacts", tags=["contacts"], summary="List or search contacts")
async def list_contacts(
    session: Session,
    actor: ApiActor,
    runtime: RuntimeDep,
    cursor: CursorQuery = None,
    limit: Limit = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Email prefix or part of the name.")
    ] = None,
) -> ListPage[ContactRead]:
    page = await accounts.list_contacts(
        session, cursor=cursor, limit=_limit(runtime, limit), query=q
    )
    return ListPage(items=[_contact_read(c) for c in page.items], next_cursor=page.next_cursor)


@router.get("/contacts/{contact_id}", tags=["contacts"], responses=error_responses(404))
async def get_contact(session: Session, actor: ApiActor, contact_id: IdPath) -> ContactRead:
    return _contact_read(await accounts.get_contact(session, contact_id))


@router.post("/contacts", tags=["contacts"], status_code=201, responses=error_responses(409))
async def create_contact(
    session: Session, actor: ApiActor, runtime: RuntimeDep, body: ContactCreate
) -> ContactRead:
    contact = await accounts.create_contact(
        session,
        email=body.email,
        name=body.name,
        organisation=body.organisation,
        now=runtime.clock.now(),
    )
    await session.commit()
    return _contact_read(contact)


@router.patch("/contacts/{contact_id}", tags=["contacts"], responses=error_responses(404, 409))
async def update_contact(
    session: Session, actor: ApiActor, contact_id: IdPath, body: ContactUpdate
) -> ContactRead:
    contact = await accounts.update_contact(
        session,
        contact_id=contact_id,
        name=body.name,
        organisation=body.organisation,
        email=body.email,
    )
    await session.commit()
    return _contact_read(contact)


# --- API tokens -------------------------------------------------------------------------------


@router.get("/tokens", tags=["tokens"], summary="Your API tokens (never the tokens themselves)")
async def list_tokens(session: Session, actor: ApiActor) -> ListPage[TokenRead]:
    tokens = await auth.list_api_tokens(session, agent_id=actor.agent_id)
    return ListPage(
        items=[TokenRead.model_validate(t, from_attributes=True) for t in tokens], next_cursor=None
    )


@router.post(
    "/tokens",
    tags=["tokens"],
    status_code=201,
    summary="Create a token for yourself; it is shown once",
)
async def create_token(
    session: Session, actor: ApiActor, runtime: RuntimeDep, body: TokenCreate
) -> TokenCreated:
    token, raw = await auth.create_api_token(
        session, by=actor.audit, agent_id=actor.agent_id, name=body.name, now=runtime.clock.now()
    )
    await session.commit()
    return TokenCreated(
        id=token.id,
        name=token.name,
        prefix=token.prefix,
        created_at=token.created_at,
        last_used_at=None,
        revoked_at=None,
        token=raw,
    )


@router.delete(
    "/tokens/{token_id}",
    tags=["tokens"],
    status_code=204,
    summary="Revoke a token at once",
    responses=error_responses(404),
)
async def revoke_token(
    session: Session, actor: ApiActor, runtime: RuntimeDep, token_id: IdPath
) -> Response:
    await auth.revoke_api_token(session, actor=actor, token_id=token_id, now=runtime.clock.now())
    await session.commit()
    return Response(status_code=204)
