"""What an agent does to their own account from the browser, and the first administrator.

The first-admin setup works only while no administrator exists; once one does, the page and
its form are gone (not found), so nobody can take over a running instance through it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import Agent, AgentRole
from keepdesk.accounts.secrets import verify_password
from keepdesk.audit.service import AuditActor
from keepdesk.errors import InvalidInput, NotFound

# Any constant works; it only has to differ from the other advisory locks (audit: 7201001).
_SETUP_LOCK = 7201002
SETUP = AuditActor(agent_id=None, label="first-admin setup")


async def needs_first_admin(session: AsyncSession) -> bool:
    return await accounts.count_admins(session) == 0


async def create_first_admin(
    session: AsyncSession, *, email: str, name: str, password: str, now: datetime
) -> Agent:
    if session.get_bind().dialect.name == "postgresql":
        # Two setup forms sent at once must not make two admins; SQLite's BEGIN IMMEDIATE
        # already lets one writer in at a time.
        await session.execute(text(f"SELECT pg_advisory_xact_lock({_SETUP_LOCK})"))
    if not await needs_first_admin(session):
        raise NotFound("keepdesk has an administrator already; sign in instead", code="setup_done")
    return await accounts.create_agent(
        session,
        by=SETUP,
        email=email,
        name=name,
        role=AgentRole.admin,
        password=password,
        now=now,
    )


async def change_own_password(
    session: AsyncSession,
    *,
    actor: Actor,
    current_password: str,
    new_password: str,
    keep_session_id: int,
    now: datetime,
) -> None:
    """A new password for the signed-in agent; their other browser sessions end."""
    agent = await accounts.get_agent(session, actor.agent_id)
    if not verify_password(agent.password_hash, current_password):
        raise InvalidInput("the current password is not right", code="wrong_password")
    if new_password == current_password:
        raise InvalidInput("the new password is the same as the current one", code="same_password")
    await accounts.set_password(
        session,
        by=actor.audit,
        agent_id=actor.agent_id,
        password=new_password,
        now=now,
        keep_session_id=keep_session_id,
    )
