"""Reading tickets: the access function, the queue list with its filters, threads and history.

`get_visible_ticket` is the only way to load a ticket for an agent: a ticket the agent may not
see is "not found", exactly like one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import Contact
from keepdesk.errors import InvalidInput, NotFound
from keepdesk.pagination import Page, decode_cursor, encode_cursor
from keepdesk.tickets.models import (
    Attachment,
    Channel,
    Message,
    Priority,
    Tag,
    Ticket,
    TicketEvent,
    TicketStatus,
    TicketTag,
)


def visible_to(actor: Actor) -> ColumnElement[bool]:
    """Admins see every ticket; an agent sees its teams' tickets and those assigned to it."""
    if actor.is_admin:
        return true()
    return or_(Ticket.team_id.in_(sorted(actor.team_ids)), Ticket.assignee_id == actor.agent_id)


def _with_people(query: Select[Any]) -> Select[Any]:
    return query.options(
        joinedload(Ticket.requester),
        joinedload(Ticket.team),
        joinedload(Ticket.assignee),
        joinedload(Ticket.follow_up_of).load_only(Ticket.number),
        selectinload(Ticket.tags),
    )


async def find_visible_ticket(session: AsyncSession, *, actor: Actor, number: int) -> Ticket | None:
    query = _with_people(select(Ticket).where(Ticket.number == number, visible_to(actor)))
    return (await session.scalars(query)).unique().one_or_none()


async def get_visible_ticket(session: AsyncSession, *, actor: Actor, number: int) -> Ticket:
    ticket = await find_visible_ticket(session, actor=actor, number=number)
    if ticket is None:
        raise NotFound(f"no ticket #{number}")
    return ticket


class TicketSort(StrEnum):
    updated_desc = "-updated_at"
    updated_asc = "updated_at"
    created_desc = "-created_at"
    created_asc = "created_at"


@dataclass(frozen=True)
class TicketFilter:
    statuses: tuple[TicketStatus, ...] = ()
    priorities: tuple[Priority, ...] = ()
    channels: tuple[Channel, ...] = ()
    # "me", "none", or an agent id
    assignee: str | None = None
    team_id: int | None = None
    tag: str | None = None
    requester: str | None = None
    updated_since: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _filter_clauses(actor: Actor, f: TicketFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [visible_to(actor)]
    if f.statuses:
        clauses.append(Ticket.status.in_(f.statuses))
    if f.priorities:
        clauses.append(Ticket.priority.in_(f.priorities))
    if f.channels:
        clauses.append(Ticket.channel.in_(f.channels))
    if f.assignee == "me":
        clauses.append(Ticket.assignee_id == actor.agent_id)
    elif f.assignee == "none":
        clauses.append(Ticket.assignee_id.is_(None))
    elif f.assignee is not None:
        if not f.assignee.isdigit() or len(f.assignee) > 10:
            raise InvalidInput("assignee must be 'me', 'none' or an agent id", code="bad_filter")
        clauses.append(Ticket.assignee_id == int(f.assignee))
    if f.team_id is not None:
        clauses.append(Ticket.team_id == f.team_id)
    if f.tag is not None:
        clauses.append(
            Ticket.id.in_(
                select(TicketTag.ticket_id)
                .join(Tag, Tag.id == TicketTag.tag_id)
                .where(Tag.name == f.tag.strip().lower())
            )
        )
    if f.requester is not None:
        if f.requester.isdigit() and len(f.requester) <= 10:
            clauses.append(Ticket.requester_id == int(f.requester))
        else:
            clauses.append(
                Ticket.requester_id.in_(
                    select(Contact.id).where(Contact.email == f.requester.strip().lower())
                )
            )
    if f.updated_since is not None:
        clauses.append(Ticket.updated_at >= f.updated_since)
    return clauses


async def list_tickets(
    session: AsyncSession,
    *,
    actor: Actor,
    filters: TicketFilter,
    sort: TicketSort = TicketSort.updated_desc,
    cursor: str | None = None,
    limit: int = 25,
) -> Page[Ticket]:
    column = Ticket.updated_at if "updated" in sort.value else Ticket.created_at
    descending = sort.value.startswith("-")
    clauses = _filter_clauses(actor, filters)
    if cursor:
        _, sort_name, at, after_id = decode_cursor(cursor, kind="tickets", size=4)
        if sort_name != sort.value or not isinstance(after_id, int):
            raise InvalidInput("cursor belongs to another sort order", code="invalid_cursor")
        try:
            at_value = datetime.fromisoformat(str(at))
        except ValueError:
            raise InvalidInput("cursor is not valid for this list", code="invalid_cursor") from None
        if descending:
            clauses.append(or_(column < at_value, and_(column == at_value, Ticket.id < after_id)))
        else:
            clauses.append(or_(column > at_value, and_(column == at_value, Ticket.id > after_id)))
    order = (column.desc(), Ticket.id.desc()) if descending else (column.asc(), Ticket.id.asc())
    query = _with_people(select(Ticket).where(*clauses).order_by(*order).limit(limit + 1))
    tickets = list((await session.scalars(query)).unique().all())
    more = len(tickets) > limit
    tickets = tickets[:limit]
    next_cursor = None
    if more:
        last = tickets[-1]
        value = last.updated_at if column is Ticket.updated_at else last.created_at
        next_cursor = encode_cursor("tickets", sort.value, value.isoformat(), last.id)
    return Page(tickets, next_cursor)


async def list_messages(
    session: AsyncSession, *, ticket: Ticket, cursor: str | None, limit: int
) -> Page[Message]:
    query = (
        select(Message)
        .where(Message.ticket_id == ticket.id)
        .options(
            joinedload(Message.author_agent),
            joinedload(Message.author_contact),
            selectinload(Message.attachments),
        )
        .order_by(Message.id)
        .limit(limit + 1)
    )
    if cursor:
        _, after = decode_cursor(cursor, kind="messages", size=2)
        query = query.where(Message.id > int(after))
    messages = list((await session.scalars(query)).unique().all())
    more = len(messages) > limit
    messages = messages[:limit]
    return Page(messages, encode_cursor("messages", messages[-1].id) if more else None)


async def get_message(session: AsyncSession, *, ticket: Ticket, message_id: int) -> Message:
    message = await session.scalar(
        select(Message)
        .where(Message.id == message_id, Message.ticket_id == ticket.id)
        .options(
            joinedload(Message.author_agent),
            joinedload(Message.author_contact),
            selectinload(Message.attachments),
        )
    )
    if message is None:
        raise NotFound(f"no message {message_id} on ticket #{ticket.number}")
    return message


async def list_events(
    session: AsyncSession, *, ticket: Ticket, cursor: str | None, limit: int
) -> Page[TicketEvent]:
    query = (
        select(TicketEvent)
        .where(TicketEvent.ticket_id == ticket.id)
        .options(joinedload(TicketEvent.actor_agent), joinedload(TicketEvent.actor_contact))
        .order_by(TicketEvent.id)
        .limit(limit + 1)
    )
    if cursor:
        _, after = decode_cursor(cursor, kind="events", size=2)
        query = query.where(TicketEvent.id > int(after))
    events = list((await session.scalars(query)).unique().all())
    more = len(events) > limit
    events = events[:limit]
    return Page(events, encode_cursor("events", events[-1].id) if more else None)


async def get_attachment(
    session: AsyncSession, *, ticket: Ticket, attachment_id: int
) -> Attachment:
    attachment = await session.scalar(
        select(Attachment).where(Attachment.id == attachment_id, Attachment.ticket_id == ticket.id)
    )
    if attachment is None:
        raise NotFound(f"no attachment {attachment_id} on ticket #{ticket.number}")
    return attachment


async def list_tags(session: AsyncSession, *, prefix: str | None, limit: int) -> list[Tag]:
    query = select(Tag).order_by(Tag.name).limit(limit)
    if prefix:
        query = query.where(Tag.name.startswith(prefix.strip().lower(), autoescape=True))
    return list((await session.scalars(query)).all())
