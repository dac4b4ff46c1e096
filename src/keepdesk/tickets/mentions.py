"""@mentions of agents in internal notes: finding them in a note's text, recording one row per
agent who can see the ticket, and the mentioned agent's list of them.

`@dave` names the agent whose address starts `dave@`; `@"Dave Support"` names one by full name.
Agents who cannot see the ticket are not told: a mention must not leak a ticket to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, false, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import Agent, AgentRole, TeamMembership
from keepdesk.errors import NotFound
from keepdesk.tickets.models import Mention, Message, Ticket
from keepdesk.tickets.queries import visible_to

# Not after a word character, `.` or `@`: `carol@customer.test` mentions nobody.
_MENTION = re.compile(r'(?<![\w.@])@(?:"([^"\n]{1,200})"|([A-Za-z0-9][A-Za-z0-9._%+-]{0,63}))')
MAX_LISTED = 200
_EXCERPT = 160


@dataclass(frozen=True)
class Named:
    """Who a note's text names: by full name (lower-cased) or by address local part."""

    names: frozenset[str]
    local_parts: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.names or self.local_parts)


def find_mentions(text: str) -> Named:
    names: set[str] = set()
    local_parts: set[str] = set()
    for match in _MENTION.finditer(text):
        quoted, bare = match.groups()
        if quoted is not None:
            name = " ".join(quoted.split()).lower()
            if name:
                names.add(name)
        else:
            # A sentence's full stop is not part of the name: "ask @dave."
            local_parts.add(bare.rstrip(".").lower())
    return Named(frozenset(names), frozenset(local_parts))


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _named(named: Named) -> ColumnElement[bool]:
    clauses: list[ColumnElement[bool]] = []
    if named.names:
        clauses.append(func.lower(Agent.name).in_(sorted(named.names)))
    # Addresses are stored lower-cased.
    clauses += [
        Agent.email.like(f"{_like_escape(local)}@%", escape="\\")
        for local in sorted(named.local_parts)
    ]
    return or_(*clauses) if clauses else false()


async def record_mentions(
    session: AsyncSession, *, ticket: Ticket, message: Message, now: datetime
) -> list[Mention]:
    """One `Mention` per active agent the note names who can see the ticket, its author
    excepted."""
    named = find_mentions(message.body_text)
    if not named:
        return []
    agents = (
        await session.scalars(
            select(Agent).where(Agent.is_active.is_(True), _named(named)).order_by(Agent.id)
        )
    ).all()
    agents = [a for a in agents if a.id != message.author_agent_id]
    if not agents:
        return []
    in_team: set[int] = set()
    if ticket.team_id is not None:
        in_team = set(
            (
                await session.scalars(
                    select(TeamMembership.agent_id).where(
                        TeamMembership.team_id == ticket.team_id,
                        TeamMembership.agent_id.in_([a.id for a in agents]),
                    )
                )
            ).all()
        )
    # The same rule as queries.visible_to, for agents other than the actor.
    seeing = [
        a
        for a in agents
        if a.role == AgentRole.admin or a.id in in_team or a.id == ticket.assignee_id
    ]
    mentions = [
        Mention(agent_id=a.id, message_id=message.id, ticket_id=ticket.id, created_at=now)
        for a in seeing
    ]
    session.add_all(mentions)
    await session.flush()
    return mentions


# --- the mentioned agent's side -----------------------------------------------------------------


@dataclass(frozen=True)
class MentionItem:
    id: int
    ticket_number: int
    ticket_subject: str
    author_name: str
    excerpt: str
    at: datetime
    read_at: datetime | None

    @property
    def is_unread(self) -> bool:
        return self.read_at is None


def _mine(actor: Actor) -> list[ColumnElement[bool]]:
    # Only tickets the agent still sees: a ticket moved to another team drops out of the list.
    return [Mention.agent_id == actor.agent_id, visible_to(actor)]


async def list_mentions(
    session: AsyncSession, *, actor: Actor, limit: int = MAX_LISTED
) -> list[MentionItem]:
    """The agent's mentions, unread first, newest first within each."""
    rows = (
        await session.execute(
            select(
                Mention.id,
                Ticket.number,
                Ticket.subject,
                Agent.name,
                Agent.email,
                Message.body_text,
                Mention.created_at,
                Mention.read_at,
            )
            .join(Ticket, Ticket.id == Mention.ticket_id)
            .join(Message, Message.id == Mention.message_id)
            .outerjoin(Agent, Agent.id == Message.author_agent_id)
            .where(*_mine(actor))
            .order_by(Mention.read_at.is_not(None), Mention.id.desc())
            .limit(limit)
        )
    ).all()
    return [
        MentionItem(
            id=row[0],
            ticket_number=row[1],
            ticket_subject=row[2],
            author_name=row[3] or row[4] or "someone",
            excerpt=" ".join(row[5].split())[:_EXCERPT],
            at=row[6],
            read_at=row[7],
        )
        for row in rows
    ]


async def count_unread(session: AsyncSession, *, actor: Actor) -> int:
    count = await session.scalar(
        select(func.count(Mention.id))
        .join(Ticket, Ticket.id == Mention.ticket_id)
        .where(*_mine(actor), Mention.read_at.is_(None))
    )
    return int(count or 0)


async def open_mention(
    session: AsyncSession, *, actor: Actor, mention_id: int, now: datetime
) -> int:
    """Mark the mention read; returns its ticket's number. Someone else's mention, or one on a
    ticket out of the agent's sight, is not found."""
    number = await session.scalar(
        select(Ticket.number)
        .join(Mention, Mention.ticket_id == Ticket.id)
        .where(Mention.id == mention_id, *_mine(actor))
    )
    if number is None:
        raise NotFound(f"no mention {mention_id}", code="not_found")
    await session.execute(
        update(Mention)
        .where(Mention.id == mention_id, Mention.read_at.is_(None))
        .values(read_at=now)
    )
    return int(number)
