"""Reading tickets: the access function, the queue list with its filters, threads and history.

`get_visible_ticket` is the only way to load a ticket for an agent: a ticket the agent may not
see is "not found", exactly like one that does not exist.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, func, or_, select, true, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import Contact
from keepdesk.errors import InvalidInput, NotFound
from keepdesk.pagination import Page, decode_cursor, encode_cursor
from keepdesk.tickets import rows
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
from keepdesk.tickets.rows import TicketRow
from keepdesk.web.schema import MAX_ID

# Lists and counts are built on the tables' columns, not the mapped classes: a statement of
# plain columns skips the ORM's compile and load steps, and what comes back is rows.
_tickets = Ticket.__table__.c
_ticket_tags = TicketTag.__table__.c
_tags = Tag.__table__.c
_contacts = Contact.__table__.c


def visible_to(actor: Actor) -> ColumnElement[bool]:
    """Admins see every ticket; an agent sees its teams' tickets and those assigned to it."""
    if actor.is_admin:
        return true()
    return or_(_tickets.team_id.in_(sorted(actor.team_ids)), _tickets.assignee_id == actor.agent_id)


def _visible_in_lists(actor: Actor, f: TicketFilter, dialect: str) -> ColumnElement[bool] | None:
    """`visible_to` for lists and counts: left out where the filter implies it, and where it
    must filter rows, written so that it never picks the index.

    A team's queue or "mine" needs no visibility test, and without one a count is read from
    the index alone; with the OR, PostgreSQL visited a thousand table rows for each capped
    count of a queue page (48 ms at 100,000 tickets). An agent's teams cover much of the table,
    which SQLite, without statistics, does not know: it answered the indexed OR by collecting
    and sorting every visible ticket (1.9 s for the agent's default list at a million
    tickets). As `team_id + 0` the terms cannot use an index, and the sort order's index or the
    other filters drive the query (0.2 ms). PostgreSQL weighs the OR by its statistics."""
    if actor.is_admin or f.assignee == "me" or f.team_id in actor.team_ids:
        return None
    teams = sorted(actor.team_ids)
    if f.assignee == "none":
        return _tickets.team_id.in_(teams)  # an unassigned ticket is nobody's own
    if dialect != "sqlite":
        return visible_to(actor)
    return or_((_tickets.team_id + 0).in_(teams), (_tickets.assignee_id + 0) == actor.agent_id)


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


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


async def get_ticket_after_change(session: AsyncSession, *, number: int) -> Ticket:
    """The ticket as the actor's command just left it, to answer that command with.

    Not an access function: the command may have taken the ticket out of the actor's sight (a
    hand-over to another team, a ticket filed for another team), and the actor is still told how
    their own change came out. Call it only after a command has loaded the ticket."""
    query = _with_people(select(Ticket).where(Ticket.number == number))
    ticket: Ticket | None = (await session.scalars(query)).unique().one_or_none()
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

    def __post_init__(self) -> None:
        # A value asked twice (`status=open&status=open`) is the same filter: one statement
        # and one cached form for both, and a list read per status reads each once.
        for name in ("statuses", "priorities", "channels"):
            object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))


_DIGITS = re.compile(r"^[0-9]{1,10}$")


def _id_or_none(text: str) -> int | None:
    # ASCII digits only (str.isdigit also takes "²"), and no more than an id column holds.
    if not _DIGITS.match(text) or int(text) > MAX_ID:
        return None
    return int(text)


def _cursor_id(value: Any) -> int:
    # Cursors are opaque but come back from the client: check what they carry like any input.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise InvalidInput("cursor is not valid for this list", code="invalid_cursor")
    return value


def _cursor_time(value: Any) -> datetime:
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise InvalidInput("cursor is not valid for this list", code="invalid_cursor")
    return at


def _filter_clauses(actor: Actor, f: TicketFilter, *, dialect: str) -> list[ColumnElement[bool]]:
    visible = _visible_in_lists(actor, f, dialect)
    clauses: list[ColumnElement[bool]] = [] if visible is None else [visible]
    if f.statuses:
        clauses.append(_tickets.status.in_(f.statuses))
    if f.priorities:
        clauses.append(_tickets.priority.in_(f.priorities))
    if f.channels:
        clauses.append(_tickets.channel.in_(f.channels))
    if f.assignee == "me":
        clauses.append(_tickets.assignee_id == actor.agent_id)
    elif f.assignee == "none":
        clauses.append(_tickets.assignee_id.is_(None))
    elif f.assignee is not None:
        agent_id = _id_or_none(f.assignee)
        if agent_id is None:
            raise InvalidInput("assignee must be 'me', 'none' or an agent id", code="bad_filter")
        clauses.append(_tickets.assignee_id == agent_id)
    if f.team_id is not None:
        clauses.append(_tickets.team_id == f.team_id)
    if f.tag is not None:
        clauses.append(
            _tickets.id.in_(
                select(_ticket_tags.ticket_id)
                .join(Tag.__table__, _tags.id == _ticket_tags.tag_id)
                .where(_tags.name == f.tag.strip().lower())
            )
        )
    if f.requester is not None:
        if f.requester.isdigit():
            contact_id = _id_or_none(f.requester)
            if contact_id is None:
                raise InvalidInput("requester must be a contact id or an email", code="bad_filter")
            clauses.append(_tickets.requester_id == contact_id)
        else:
            clauses.append(
                _tickets.requester_id.in_(
                    select(_contacts.id).where(_contacts.email == f.requester.strip().lower())
                )
            )
    if f.updated_since is not None:
        clauses.append(_tickets.updated_at >= f.updated_since)
    return clauses


async def list_tickets(
    session: AsyncSession,
    *,
    actor: Actor,
    filters: TicketFilter,
    sort: TicketSort = TicketSort.updated_desc,
    cursor: str | None = None,
    limit: int = 25,
) -> Page[TicketRow]:
    """A page of the tickets the actor may see that match `filters`, as list rows."""
    after: tuple[datetime, int] | None = None
    if cursor:
        _, sort_name, at, after_id = decode_cursor(cursor, kind="tickets", size=4)
        if sort_name != sort.value:
            raise InvalidInput("cursor belongs to another sort order", code="invalid_cursor")
        after = (_cursor_time(at), _cursor_id(after_id))
    dialect = _dialect(session)
    if after is None and filters.updated_since is None:
        # The first page is asked again and again with the same filters: kept, built. (Not
        # with `updated_since`, which a polling client changes on every call.)
        statement = _first_page(actor, filters, sort, limit, dialect)
    else:
        statement = _page(actor, filters, sort, limit, dialect, after)
    tickets = await rows.load(session, statement)
    more = len(tickets) > limit
    tickets = tickets[:limit]
    next_cursor = None
    if more:
        last = tickets[-1]
        value = last.updated_at if "updated" in sort.value else last.created_at
        next_cursor = encode_cursor("tickets", sort.value, value.isoformat(), last.id)
    return Page(tickets, next_cursor)


def _page(
    actor: Actor,
    filters: TicketFilter,
    sort: TicketSort,
    limit: int,
    dialect: str,
    after: tuple[datetime, int] | None,
) -> rows.PageQuery:
    column = _tickets.updated_at if "updated" in sort.value else _tickets.created_at
    descending = sort.value.startswith("-")
    clauses = _filter_clauses(actor, filters, dialect=dialect)
    if after is not None:
        # A row value, not `at < x OR (at = x AND id < y)`: PostgreSQL makes an index range
        # only of this form; the OR filtered every row above the cursor (191 ms halfway down
        # 100,000 tickets, 0.2 ms as a row value). A plain tuple on the right keeps the
        # column types, so UTCDateTime still binds the time as SQLite stores it.
        key = tuple_(column, _tickets.id)
        clauses.append(key < after if descending else key > after)
    order = (column.desc(), _tickets.id.desc()) if descending else (column.asc(), _tickets.id.asc())
    # The page's ids come from the tickets table alone, and only those rows are joined to
    # their people: joined first, SQLite joined every match before sorting and cutting (282 ms
    # for the admin's 43,000 active tickets at a million, 0.4 ms this way). On PostgreSQL the
    # ids are a statement of their own (rows.PageQuery).
    page = select(_tickets.id).where(*clauses).order_by(*order).limit(limit + 1)
    statuses = _statuses_to_read_apart(filters, sort, dialect)
    if statuses:
        page = _newest_of_each_status(clauses, statuses, column, order, descending, limit + 1)
    return rows.page_query(page, order, dialect)


def _statuses_to_read_apart(
    filters: TicketFilter, sort: TicketSort, dialect: str
) -> tuple[TicketStatus, ...]:
    """The statuses to read one at a time, when a list by activity is faster that way; none
    when it is not.

    The indexes that start with the team or the assignee go on with the status, so none of
    them lists a team's or an agent's tickets of any status in order of activity: the
    database read all that matched and sorted them (114 ms for a team at a million tickets on
    SQLite). Read per status, each is a range of an index in order.

    On PostgreSQL the same goes for several statuses (an agent's active tickets: 5,900 index
    entries read and sorted for the first page, 1.1 ms, then 0.2 read per status). SQLite
    finds those quicker as they are (an agent's active tickets at a million: 0.7 ms of
    statements a page, 2.3 per status)."""
    if "updated" not in sort.value:
        return ()
    narrowed = filters.team_id is not None or filters.assignee is not None
    if not filters.statuses:
        return tuple(TicketStatus) if narrowed else ()
    several = dialect == "postgresql" and len(filters.statuses) > 1
    return filters.statuses if several else ()


def _newest_of_each_status(
    clauses: list[ColumnElement[bool]],
    statuses: tuple[TicketStatus, ...],
    column: Any,
    order: tuple[ColumnElement[Any], ...],
    descending: bool,
    count: int,
) -> Select[Any]:
    """The ids of the first `count` tickets in `order` (by `column`, then id), taken from the
    first `count` of each of `statuses` (a range of an index each), merged: 0.1 ms where one
    sort took 114."""
    # SQLite takes no ORDER BY or LIMIT inside a compound SELECT: each part is a subquery.
    parts = []
    for status in statuses:
        part = (
            select(_tickets.id, column.label("at"))
            .where(*clauses, _tickets.status == status)
            .order_by(*order)
            .limit(count)
            .subquery()
        )
        parts.append(select(part.c.id, part.c.at))
    merged = union_all(*parts).subquery()
    merged_order = (
        (merged.c.at.desc(), merged.c.id.desc())
        if descending
        else (merged.c.at.asc(), merged.c.id.asc())
    )
    return select(merged.c.id).order_by(*merged_order).limit(count)


@functools.lru_cache(maxsize=256)
def _first_page(
    actor: Actor, filters: TicketFilter, sort: TicketSort, limit: int, dialect: str
) -> rows.PageQuery:
    return _page(actor, filters, sort, limit, dialect, None)


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
        query = query.where(Message.id > _cursor_id(after))
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
        query = query.where(TicketEvent.id > _cursor_id(after))
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


async def count_tickets(
    session: AsyncSession, *, actor: Actor, filters: TicketFilter, cap: int = 1000
) -> int:
    """How many tickets match, counting no further than `cap + 1`: a queue shows "1000+"
    instead of counting a million rows on every page load."""
    return (await count_each(session, actor=actor, filters=[filters], cap=cap))[0]


async def count_each(
    session: AsyncSession, *, actor: Actor, filters: list[TicketFilter], cap: int = 1000
) -> list[int]:
    """`count_tickets` for several filters in one statement (a queue page counts its own list
    and each queue of the side list): one scalar subquery per filter, each capped, and each
    filter counted once (a queue's own list is one of the side list's)."""
    distinct = tuple(dict.fromkeys(filters))
    statement = _counts_statement(actor, distinct, cap, _dialect(session))
    row = (await session.execute(statement)).one()
    counted = {f: int(n or 0) for f, n in zip(distinct, row, strict=True)}
    return [counted[f] for f in filters]


@functools.lru_cache(maxsize=256)
def _counts_statement(
    actor: Actor, filters: tuple[TicketFilter, ...], cap: int, dialect: str
) -> Select[Any]:
    # Kept per agent and set of filters: a queue page asks the same five counts on every load,
    # and building them was a millisecond of Python (the statement memoizes its cache key).
    counts = [
        select(func.count())
        .select_from(
            select(_tickets.id)
            .where(*_filter_clauses(actor, f, dialect=dialect))
            .limit(cap + 1)
            .subquery()
        )
        .scalar_subquery()
        for f in filters
    ]
    return select(*counts)


async def list_requester_tickets(
    session: AsyncSession, *, actor: Actor, ticket: Ticket, limit: int = 10
) -> list[Row[int, str, TicketStatus]]:
    """The number, subject and status of the requester's other tickets the actor may see,
    newest first (the ticket page's panel): plain rows, not ten whole tickets."""
    query = (
        select(_tickets.number, _tickets.subject, _tickets.status)
        .where(
            _tickets.requester_id == ticket.requester_id,
            _tickets.id != ticket.id,
            visible_to(actor),
        )
        .order_by(_tickets.created_at.desc(), _tickets.id.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).all())
