"""Agents, teams and contacts: creating, changing and listing them, with the audit trail.

Services flush and never commit; whoever opened the session commits once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts.access import Actor, require_admin
from keepdesk.accounts.models import (
    Agent,
    AgentRole,
    ApiToken,
    Contact,
    Team,
    TeamMembership,
    WebSession,
)
from keepdesk.accounts.secrets import MIN_PASSWORD_LENGTH, hash_password
from keepdesk.audit import service as audit
from keepdesk.audit.service import AuditActor
from keepdesk.db import conflict_insert
from keepdesk.errors import Conflict, InvalidInput, NotFound
from keepdesk.pagination import Page, decode_cursor, encode_cursor

# Deliberately plain: a syntactically sane address, nothing that can smuggle a second one in.
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email) or ".." in email:
        raise InvalidInput(f"{value!r} is not a valid email address", code="invalid_email")
    return email


def _clean_name(value: str, *, what: str, max_length: int) -> str:
    name = " ".join(value.split())
    if not name:
        raise InvalidInput(f"{what} must not be empty")
    if len(name) > max_length:
        raise InvalidInput(f"{what} is longer than {max_length} characters")
    return name


def check_password_strength(password: str, *, email: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password must have at least {MIN_PASSWORD_LENGTH} characters", code="weak_password"
        )
    if password.strip().lower() == email.lower():
        raise InvalidInput("password must not be the email address", code="weak_password")


# --- agents -----------------------------------------------------------------------------------


async def create_agent(
    session: AsyncSession,
    *,
    by: AuditActor,
    email: str,
    name: str,
    role: AgentRole,
    now: datetime,
    password: str | None = None,
    team_ids: Iterable[int] = (),
) -> Agent:
    email = normalize_email(email)
    agent = Agent(
        email=email,
        name=_clean_name(name, what="name", max_length=200),
        role=role,
        is_active=True,
        created_at=now,
    )
    if password is not None:
        check_password_strength(password, email=email)
        agent.password_hash = hash_password(password)
        agent.password_changed_at = now
    if await session.scalar(select(Agent.id).where(Agent.email == email)) is not None:
        raise Conflict(f"an agent with the address {email} exists already", code="email_taken")
    session.add(agent)
    await session.flush()
    await _set_teams(session, agent, team_ids)
    await audit.record(
        session,
        actor=by,
        action="agent.created",
        object_type="agent",
        object_id=agent.id,
        at=now,
        data={"email": email, "role": role.value, "team_ids": sorted(set(team_ids))},
    )
    return agent


async def _set_teams(session: AsyncSession, agent: Agent, team_ids: Iterable[int]) -> None:
    wanted = set(team_ids)
    if wanted:
        found = set((await session.scalars(select(Team.id).where(Team.id.in_(wanted)))).all())
        if missing := wanted - found:
            raise InvalidInput(f"no team with id {sorted(missing)[0]}", code="unknown_team")
    await session.execute(delete(TeamMembership).where(TeamMembership.agent_id == agent.id))
    session.add_all(TeamMembership(team_id=t, agent_id=agent.id) for t in sorted(wanted))
    await session.flush()


async def get_agent(session: AsyncSession, agent_id: int) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"no agent with id {agent_id}")
    return agent


async def find_agent_by_email(session: AsyncSession, email: str) -> Agent | None:
    return await session.scalar(select(Agent).where(Agent.email == email.strip().lower()))


async def team_ids_of(session: AsyncSession, agent_ids: Iterable[int]) -> dict[int, list[int]]:
    ids = list(agent_ids)
    result: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        rows = await session.execute(
            select(TeamMembership.agent_id, TeamMembership.team_id)
            .where(TeamMembership.agent_id.in_(ids))
            .order_by(TeamMembership.team_id)
        )
        for agent_id, team_id in rows:
            result[agent_id].append(team_id)
    return result


async def list_agents(
    session: AsyncSession, *, cursor: str | None, limit: int, team_id: int | None = None
) -> Page[Agent]:
    query = select(Agent).order_by(Agent.id).limit(limit + 1)
    if cursor:
        (_, after) = decode_cursor(cursor, kind="agents", size=2)
        query = query.where(Agent.id > int(after))
    if team_id is not None:
        query = query.where(
            Agent.id.in_(select(TeamMembership.agent_id).where(TeamMembership.team_id == team_id))
        )
    agents = list((await session.scalars(query)).all())
    more = len(agents) > limit
    agents = agents[:limit]
    return Page(agents, encode_cursor("agents", agents[-1].id) if more else None)


@dataclass(frozen=True, slots=True)
class AgentName:
    """An agent as a picker shows it."""

    id: int
    name: str
    email: str
    is_admin: bool


async def active_agents(session: AsyncSession) -> list[AgentName]:
    """Every active agent, by id: the assignee pickers and filters of the pages."""
    rows = await session.execute(
        select(
            Agent.__table__.c.id,
            Agent.__table__.c.name,
            Agent.__table__.c.email,
            Agent.__table__.c.role,
        )
        .where(Agent.__table__.c.is_active.is_(True))
        .order_by(Agent.__table__.c.id)
    )
    return [AgentName(i, name, email, role == AgentRole.admin) for i, name, email, role in rows]


async def update_agent(
    session: AsyncSession,
    *,
    actor: Actor,
    agent_id: int,
    now: datetime,
    name: str | None = None,
    role: AgentRole | None = None,
    is_active: bool | None = None,
    team_ids: Iterable[int] | None = None,
) -> Agent:
    require_admin(actor)
    if role is not None or is_active is False:
        await _lock_admins(session)
    agent = await get_agent(session, agent_id)
    changes: dict[str, list[object]] = {}
    if name is not None and name != agent.name:
        changes["name"] = [agent.name, name]
        agent.name = _clean_name(name, what="name", max_length=200)
    if role is not None and role != agent.role:
        if agent.id == actor.agent_id:
            raise InvalidInput("you cannot change your own role", code="own_role")
        changes["role"] = [agent.role.value, role.value]
        agent.role = role
    if is_active is not None and is_active != agent.is_active:
        if agent.id == actor.agent_id:
            raise InvalidInput("you cannot deactivate yourself", code="own_account")
        changes["is_active"] = [agent.is_active, is_active]
        agent.is_active = is_active
        if not is_active:
            await revoke_all_credentials(session, agent_id=agent.id, now=now)
    if team_ids is not None:
        before = (await team_ids_of(session, [agent.id]))[agent.id]
        if sorted(set(team_ids)) != before:
            changes["team_ids"] = [before, sorted(set(team_ids))]
            await _set_teams(session, agent, team_ids)
    if role is not None or is_active is False:
        await _keep_an_admin(session)
    await session.flush()
    if changes:
        await audit.record(
            session,
            actor=actor.audit,
            action="agent.updated",
            object_type="agent",
            object_id=agent.id,
            at=now,
            data=changes,
        )
    return agent


async def _lock_admins(session: AsyncSession) -> None:
    # Two admins demoting each other at once would each still count the other and both pass
    # `_keep_an_admin`. Locking the admin rows (in id order, so no deadlock) before any change
    # makes the second wait and count again. SQLite needs nothing: BEGIN IMMEDIATE serialises.
    await session.execute(
        select(Agent.id)
        .where(Agent.role == AgentRole.admin, Agent.is_active.is_(True))
        .order_by(Agent.id)
        .with_for_update()
    )


async def _keep_an_admin(session: AsyncSession) -> None:
    admins = await session.scalar(
        select(func.count())
        .select_from(Agent)
        .where(Agent.role == AgentRole.admin, Agent.is_active.is_(True))
    )
    if not admins:
        raise Conflict("keepdesk must keep at least one active administrator", code="last_admin")


async def set_password(
    session: AsyncSession,
    *,
    by: AuditActor,
    agent_id: int,
    password: str,
    now: datetime,
    keep_session_id: int | None = None,
) -> None:
    """Set a new password; every other browser session of the agent ends."""
    agent = await get_agent(session, agent_id)
    check_password_strength(password, email=agent.email)
    agent.password_hash = hash_password(password)
    agent.password_changed_at = now
    revoke = update(WebSession).where(
        WebSession.agent_id == agent.id, WebSession.revoked_at.is_(None)
    )
    if keep_session_id is not None:
        revoke = revoke.where(WebSession.id != keep_session_id)
    await session.execute(revoke.values(revoked_at=now))
    await audit.record(
        session,
        actor=by,
        action="agent.password_set",
        object_type="agent",
        object_id=agent.id,
        at=now,
    )


async def revoke_all_credentials(session: AsyncSession, *, agent_id: int, now: datetime) -> None:
    await session.execute(
        update(WebSession)
        .where(WebSession.agent_id == agent_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.execute(
        update(ApiToken)
        .where(ApiToken.agent_id == agent_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def count_admins(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Agent)
            .where(Agent.role == AgentRole.admin, Agent.is_active.is_(True))
        )
        or 0
    )


# --- teams ------------------------------------------------------------------------------------


async def create_team(
    session: AsyncSession, *, actor: Actor | None, name: str, now: datetime
) -> Team:
    if actor is not None:
        require_admin(actor)
    name = _clean_name(name, what="team name", max_length=100)
    if await session.scalar(select(Team.id).where(func.lower(Team.name) == name.lower())):
        raise Conflict(f"a team named {name!r} exists already", code="team_exists")
    team = Team(name=name, created_at=now)
    session.add(team)
    await session.flush()
    await audit.record(
        session,
        actor=actor.audit if actor else audit.COMMAND_LINE,
        action="team.created",
        object_type="team",
        object_id=team.id,
        at=now,
        data={"name": name},
    )
    return team


async def check_team(session: AsyncSession, team_id: int) -> Team:
    """A team named in a request's body: unknown is a bad value (422), not a missing page."""
    team = await session.get(Team, team_id)
    if team is None:
        raise InvalidInput(f"no team with id {team_id}", code="unknown_team")
    return team


async def get_team(session: AsyncSession, team_id: int) -> Team:
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound(f"no team with id {team_id}")
    return team


async def find_team_by_name(session: AsyncSession, name: str) -> Team | None:
    return await session.scalar(select(Team).where(func.lower(Team.name) == name.strip().lower()))


async def list_teams(session: AsyncSession) -> list[Team]:
    # Teams are few (tens); one page holds them all.
    return list((await session.scalars(select(Team).order_by(Team.name))).all())


async def member_ids(session: AsyncSession, team_ids: Iterable[int]) -> dict[int, list[int]]:
    ids = list(team_ids)
    result: dict[int, list[int]] = {i: [] for i in ids}
    if ids:
        rows = await session.execute(
            select(TeamMembership.team_id, TeamMembership.agent_id)
            .where(TeamMembership.team_id.in_(ids))
            .order_by(TeamMembership.agent_id)
        )
        for team_id, agent_id in rows:
            result[team_id].append(agent_id)
    return result


async def rename_team(
    session: AsyncSession, *, actor: Actor, team_id: int, name: str, now: datetime
) -> Team:
    require_admin(actor)
    team = await get_team(session, team_id)
    name = _clean_name(name, what="team name", max_length=100)
    clash = await session.scalar(
        select(Team.id).where(func.lower(Team.name) == name.lower(), Team.id != team_id)
    )
    if clash:
        raise Conflict(f"a team named {name!r} exists already", code="team_exists")
    if name != team.name:
        await audit.record(
            session,
            actor=actor.audit,
            action="team.renamed",
            object_type="team",
            object_id=team.id,
            at=now,
            data={"name": [team.name, name]},
        )
        team.name = name
        await session.flush()
    return team


async def add_member(
    session: AsyncSession, *, actor: Actor, team_id: int, agent_id: int, now: datetime
) -> None:
    require_admin(actor)
    await get_team(session, team_id)
    await get_agent(session, agent_id)
    exists = await session.get(TeamMembership, (team_id, agent_id))
    if exists is None:
        session.add(TeamMembership(team_id=team_id, agent_id=agent_id))
        await session.flush()
        await audit.record(
            session,
            actor=actor.audit,
            action="team.member_added",
            object_type="team",
            object_id=team_id,
            at=now,
            data={"agent_id": agent_id},
        )


async def remove_member(
    session: AsyncSession, *, actor: Actor, team_id: int, agent_id: int, now: datetime
) -> None:
    require_admin(actor)
    await get_team(session, team_id)
    membership = await session.get(TeamMembership, (team_id, agent_id))
    if membership is None:
        raise NotFound(f"agent {agent_id} is not a member of team {team_id}")
    await session.delete(membership)
    await session.flush()
    await audit.record(
        session,
        actor=actor.audit,
        action="team.member_removed",
        object_type="team",
        object_id=team_id,
        at=now,
        data={"agent_id": agent_id},
    )


# --- contacts ---------------------------------------------------------------------------------


async def create_contact(
    session: AsyncSession,
    *,
    email: str,
    name: str = "",
    organisation: str | None = None,
    now: datetime,
) -> Contact:
    email = normalize_email(email)
    if await find_contact_by_email(session, email) is not None:
        raise Conflict(f"a contact with the address {email} exists already", code="email_taken")
    contact = Contact(
        email=email,
        name=" ".join(name.split())[:200],
        organisation=" ".join(organisation.split())[:200] or None if organisation else None,
        created_at=now,
    )
    session.add(contact)
    await session.flush()
    return contact


async def find_contact_by_email(session: AsyncSession, email: str) -> Contact | None:
    return await session.scalar(select(Contact).where(Contact.email == email.strip().lower()))


async def contacts_by_email(session: AsyncSession, emails: Iterable[str]) -> dict[str, Contact]:
    """The contacts with these addresses (normalised; an invalid one finds nothing), by
    address, in one look-up."""
    wanted = set()
    for email in emails:
        try:
            wanted.add(normalize_email(email))
        except InvalidInput:
            continue
    if not wanted:
        return {}
    found = await session.scalars(select(Contact).where(Contact.email.in_(wanted)))
    return {c.email: c for c in found}


async def find_or_create_contact(
    session: AsyncSession,
    *,
    email: str,
    name: str = "",
    now: datetime,
    known: dict[str, Contact] | None = None,
) -> Contact:
    """The contact with this address, created on first sight; an existing name is kept.

    `known` is what `contacts_by_email` found for a batch of addresses this one is among: the
    look-up is skipped, and a contact created here is added to it."""
    email = normalize_email(email)
    if known is None:
        contact = await find_contact_by_email(session, email)
    else:
        contact = known.get(email)
    if contact is not None:
        if not contact.name and name:
            contact.name = " ".join(name.split())[:200]
        return contact
    contact = await _create_contact_once(session, email=email, name=name, now=now)
    if known is not None:
        known[email] = contact
    return contact


async def _create_contact_once(
    session: AsyncSession, *, email: str, name: str, now: datetime
) -> Contact:
    # One statement, no savepoint: a contact another transaction created between our look-up
    # and this insert is a conflict that inserts nothing, and the look-up after finds it.
    created: Contact | None = await session.scalar(
        conflict_insert(session, Contact)
        .values(email=email, name=" ".join(name.split())[:200], created_at=now)
        .on_conflict_do_nothing()
        .returning(Contact)
    )
    if created is not None:
        return created
    found = await find_contact_by_email(session, email)
    if found is None:
        raise Conflict(f"the contact {email} could not be created; try again", code="conflict")
    return found


async def get_contact(session: AsyncSession, contact_id: int) -> Contact:
    contact = await session.get(Contact, contact_id)
    if contact is None:
        raise NotFound(f"no contact with id {contact_id}")
    return contact


async def update_contact(
    session: AsyncSession,
    *,
    contact_id: int,
    name: str | None = None,
    organisation: str | None = None,
    email: str | None = None,
) -> Contact:
    contact = await get_contact(session, contact_id)
    if name is not None:
        contact.name = " ".join(name.split())[:200]
    if organisation is not None:
        contact.organisation = " ".join(organisation.split())[:200] or None
    if email is not None:
        new = normalize_email(email)
        if new != contact.email:
            if await find_contact_by_email(session, new) is not None:
                raise Conflict(
                    f"a contact with the address {new} exists already", code="email_taken"
                )
            contact.email = new
    await session.flush()
    return contact


async def list_contacts(
    session: AsyncSession, *, cursor: str | None, limit: int, query: str | None = None
) -> Page[Contact]:
    stmt = select(Contact).order_by(Contact.id).limit(limit + 1)
    if cursor:
        (_, after) = decode_cursor(cursor, kind="contacts", size=2)
        stmt = stmt.where(Contact.id > int(after))
    if query:
        needle = query.strip().lower()
        escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(
            or_(
                Contact.email.startswith(needle, autoescape=True),
                func.lower(Contact.name).like(f"%{escaped}%", escape="\\"),
            )
        )
    contacts = list((await session.scalars(stmt)).all())
    more = len(contacts) > limit
    contacts = contacts[:limit]
    return Page(contacts, encode_cursor("contacts", contacts[-1].id) if more else None)
