"""Proving who you are: API tokens, browser sessions, and the sign-in throttle.

Throttling counts failures per account and per IP address in the database, so it holds across
processes and restarts. A throttled sign-in is refused before the password is checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Row,
    Select,
    Update,
    bindparam,
    delete,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import Agent, ApiToken, LoginThrottle, TeamMembership, WebSession
from keepdesk.accounts.secrets import (
    hash_password,
    new_token,
    password_needs_rehash,
    token_hash,
    verify_password,
)
from keepdesk.audit import service as audit
from keepdesk.audit.service import AuditActor
from keepdesk.errors import InvalidInput, NotFound, RateLimited, Unauthenticated

API_TOKEN_PREFIX = "kd_"  # noqa: S105 - a label, not a secret
SESSION_TOKEN_PREFIX = "kds_"  # noqa: S105 - a label, not a secret
# last_used_at is written at most this often, so reading the API does not mean writing the DB.
_TOKEN_TOUCH_INTERVAL = timedelta(minutes=5)
_SESSION_TOUCH_INTERVAL = timedelta(minutes=1)


async def _actor_for(session: AsyncSession, agent: Agent) -> Actor:
    team_ids = await session.scalars(
        select(TeamMembership.team_id).where(TeamMembership.agent_id == agent.id)
    )
    return _actor(agent, team_ids.all())


def _actor(agent: Agent, team_ids: Iterable[int | None]) -> Actor:
    return Actor(
        agent_id=agent.id,
        email=agent.email,
        name=agent.name,
        role=agent.role,
        team_ids=frozenset(t for t in team_ids if t is not None),
    )


async def actor_for_agent(session: AsyncSession, agent_id: int) -> Actor:
    agent = await session.get(Agent, agent_id)
    if agent is None or not agent.is_active:
        raise NotFound(f"no active agent with id {agent_id}")
    return await _actor_for(session, agent)


# --- API tokens -------------------------------------------------------------------------------


async def create_api_token(
    session: AsyncSession, *, by: AuditActor, agent_id: int, name: str, now: datetime
) -> tuple[ApiToken, str]:
    """A new token for the agent; the plain token is returned here and never again."""
    agent = await session.get(Agent, agent_id)
    if agent is None or not agent.is_active:
        raise NotFound(f"no active agent with id {agent_id}")
    name = " ".join(name.split())
    if not name or len(name) > 100:
        raise InvalidInput("token name must have 1 to 100 characters")
    raw = new_token(API_TOKEN_PREFIX)
    token = ApiToken(
        agent_id=agent_id,
        name=name,
        token_hash=token_hash(raw),
        prefix=raw[:10],
        created_at=now,
    )
    session.add(token)
    await session.flush()
    await audit.record(
        session,
        actor=by,
        action="token.created",
        object_type="api_token",
        object_id=token.id,
        at=now,
        data={"agent_id": agent_id, "name": name, "prefix": token.prefix},
    )
    return token, raw


@dataclass(frozen=True)
class CredentialCheck:
    """A credential that checked out: which one (`kind`, `id`), and the UPDATE that records
    this use (for a browser session, also sliding its idle timeout) when that is due, None
    otherwise. Where it is written is the request's business (`dependencies.record_use`)."""

    kind: str
    id: int
    touch: Update | None


async def authenticate_token(
    session: AsyncSession, raw: str, *, now: datetime
) -> tuple[Actor, CredentialCheck]:
    """The actor behind a token, and the token's check (its last use is recorded at most every
    few minutes, so reading the API does not mean writing the database)."""
    # Plain columns, not mapped objects: this runs before every API request.
    rows = (await session.execute(_TOKEN_ACTOR, {"hash": token_hash(raw)})).all()
    if not rows:
        raise Unauthenticated("the API token is not valid", code="invalid_token")
    token_id, last_used_at = rows[0][:2]
    actor, _ = _actor_of(rows, 2)
    touch = None
    if last_used_at is None or now - last_used_at > _TOKEN_TOUCH_INTERVAL:
        touch = update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
    return actor, CredentialCheck("api_token", token_id, touch)


_tokens = ApiToken.__table__.c
_agents = Agent.__table__.c
_memberships = TeamMembership.__table__.c


def _with_actor(credential: FromClause, *columns: ColumnElement[Any]) -> Select[Any]:
    """`columns` of a credential (an API token, a browser session), then its agent's id, email,
    name, role and whether it is active, then one team of the agent a row (one row with a null
    team for an agent in none): who is calling in one statement."""
    return select(
        *columns,
        _agents.id,
        _agents.email,
        _agents.name,
        _agents.role,
        _agents.is_active,
        _memberships.team_id,
    ).select_from(
        credential.join(Agent.__table__, _agents.id == credential.c.agent_id).outerjoin(
            TeamMembership.__table__, _memberships.agent_id == _agents.id
        )
    )


def _actor_of(rows: Sequence[Row[Any]], first: int) -> tuple[Actor, bool]:
    """The actor in the rows of a `_with_actor` statement whose agent columns start at `first`,
    and whether the agent is active."""
    agent_id, email, name, role, active = rows[0][first : first + 5]
    teams = frozenset(r[first + 5] for r in rows if r[first + 5] is not None)
    return Actor(agent_id=agent_id, email=email, name=name, role=role, team_ids=teams), active


# Built once, like the statements below: building one per request was a third of a token's
# check in Python.
_TOKEN_ACTOR = _with_actor(ApiToken.__table__, _tokens.id, _tokens.last_used_at).where(
    _tokens.token_hash == bindparam("hash"),
    _tokens.revoked_at.is_(None),
    _agents.is_active.is_(True),
)


async def list_api_tokens(session: AsyncSession, *, agent_id: int) -> list[ApiToken]:
    return list(
        (
            await session.scalars(
                select(ApiToken).where(ApiToken.agent_id == agent_id).order_by(ApiToken.id)
            )
        ).all()
    )


async def revoke_api_token(
    session: AsyncSession, *, actor: Actor, token_id: int, now: datetime
) -> ApiToken:
    token = await session.get(ApiToken, token_id)
    # Someone else's token is "not found" unless you are an admin.
    if token is None or (token.agent_id != actor.agent_id and not actor.is_admin):
        raise NotFound(f"no token with id {token_id}")
    if token.revoked_at is None:
        token.revoked_at = now
        await audit.record(
            session,
            actor=actor.audit,
            action="token.revoked",
            object_type="api_token",
            object_id=token.id,
            at=now,
            data={"agent_id": token.agent_id},
        )
    return token


# --- sign-in and browser sessions -------------------------------------------------------------


async def _throttle_rows(session: AsyncSession, keys: list[str]) -> dict[str, LoginThrottle]:
    rows = await session.scalars(select(LoginThrottle).where(LoginThrottle.key.in_(keys)))
    return {row.key: row for row in rows}


async def sign_in(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    ip_address: str,
    user_agent: str,
    now: datetime,
    idle_minutes: int,
    max_days: int,
    max_failures_per_account: int,
    max_failures_per_ip: int,
    throttle_minutes: int,
) -> tuple[WebSession, str]:
    """Check a password and open a session; known and unknown accounts fail the same way.

    The caller must commit even when this raises `Unauthenticated`, so the failure counts.
    """
    email = email.strip().lower()[:320]
    keys = {f"account:{email}": max_failures_per_account, f"ip:{ip_address}": max_failures_per_ip}
    rows = await _throttle_rows(session, list(keys))
    for row in rows.values():
        if row.locked_until is not None and row.locked_until > now:
            wait = int((row.locked_until - now).total_seconds()) + 1
            raise RateLimited(
                f"too many failed sign-ins; try again in {(wait + 59) // 60} minutes",
                retry_after=wait,
            )

    agent = await session.scalar(select(Agent).where(Agent.email == email))
    ok = verify_password(agent.password_hash if agent else None, password)
    if not ok or agent is None or not agent.is_active:
        window = timedelta(minutes=throttle_minutes)
        for key, limit in keys.items():
            counter = rows.get(key)
            if counter is None:
                counter = LoginThrottle(key=key, failures=0, window_started_at=now)
                session.add(counter)
            elif now - counter.window_started_at > window:
                counter.failures, counter.window_started_at, counter.locked_until = 0, now, None
            counter.failures += 1
            if counter.failures >= limit:
                counter.locked_until = now + window
        await audit.record(
            session,
            actor=audit.SYSTEM,
            action="auth.sign_in_failed",
            object_type="account",
            object_id=email,
            at=now,
            data={"ip": ip_address},
        )
        await session.flush()
        raise Unauthenticated("wrong email address or password", code="bad_credentials")

    account_row = rows.get(f"account:{email}")
    if account_row is not None:
        await session.delete(account_row)
    if agent.password_hash and password_needs_rehash(agent.password_hash):
        agent.password_hash = hash_password(password)
    raw = new_token(SESSION_TOKEN_PREFIX)
    web_session = WebSession(
        agent_id=agent.id,
        token_hash=token_hash(raw),
        created_at=now,
        last_seen_at=now,
        expires_at=min(now + timedelta(days=max_days), now + timedelta(minutes=idle_minutes)),
        ip_address=ip_address[:64],
        user_agent=user_agent[:300],
    )
    session.add(web_session)
    await session.flush()
    await audit.record(
        session,
        actor=AuditActor(agent.id, agent.email),
        action="auth.signed_in",
        object_type="web_session",
        object_id=web_session.id,
        at=now,
        data={"ip": ip_address},
    )
    return web_session, raw


_sessions = WebSession.__table__.c
_SESSION_ACTOR = _with_actor(
    WebSession.__table__,
    _sessions.id,
    _sessions.created_at,
    _sessions.last_seen_at,
    _sessions.expires_at,
).where(_sessions.token_hash == bindparam("hash"), _sessions.revoked_at.is_(None))


async def authenticate_session(
    session: AsyncSession,
    raw: str,
    *,
    now: datetime,
    idle_minutes: int,
    max_days: int,
) -> tuple[Actor, CredentialCheck]:
    # Plain columns, not mapped objects: this runs before every page.
    rows = (await session.execute(_SESSION_ACTOR, {"hash": token_hash(raw)})).all()
    if not rows:
        raise Unauthenticated("please sign in", code="no_session")
    session_id, created_at, last_seen_at, expires_at = rows[0][:4]
    actor, active = _actor_of(rows, 4)
    if not active or expires_at <= now:
        raise Unauthenticated("your session has ended; please sign in again", code="no_session")
    touch = None
    if now - last_seen_at > _SESSION_TOUCH_INTERVAL:
        touch = (
            update(WebSession)
            .where(WebSession.id == session_id)
            .values(
                last_seen_at=now,
                expires_at=min(
                    created_at + timedelta(days=max_days), now + timedelta(minutes=idle_minutes)
                ),
            )
        )
    return actor, CredentialCheck("web_session", session_id, touch)


async def list_sessions(session: AsyncSession, *, agent_id: int, now: datetime) -> list[WebSession]:
    return list(
        (
            await session.scalars(
                select(WebSession)
                .where(
                    WebSession.agent_id == agent_id,
                    WebSession.revoked_at.is_(None),
                    WebSession.expires_at > now,
                )
                .order_by(WebSession.last_seen_at.desc())
            )
        ).all()
    )


async def revoke_session(
    session: AsyncSession, *, actor: Actor, session_id: int, now: datetime
) -> None:
    web_session = await session.get(WebSession, session_id)
    if web_session is None or (web_session.agent_id != actor.agent_id and not actor.is_admin):
        raise NotFound(f"no session with id {session_id}")
    if web_session.revoked_at is None:
        web_session.revoked_at = now
        await audit.record(
            session,
            actor=actor.audit,
            action="auth.session_revoked",
            object_type="web_session",
            object_id=session_id,
            at=now,
        )


async def purge_ended_sessions(session: AsyncSession, *, now: datetime) -> None:
    """Forget sessions that ended over a day ago and throttle windows that have passed."""
    cutoff = now - timedelta(days=1)
    await session.execute(
        delete(WebSession).where(
            or_(WebSession.expires_at < cutoff, WebSession.revoked_at < cutoff)
        )
    )
    await session.execute(
        delete(LoginThrottle).where(
            LoginThrottle.window_started_at < cutoff,
            or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
        )
    )
