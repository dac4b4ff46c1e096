"""The conversation as the ticket page shows it: messages and folded history in order, what
the mail channel knows about each message, and a message's HTML as a document of its own.

Customer HTML is already sanitised when stored (`tickets.html`); the page still never puts it in
its own document: it is served on its own URL into an `<iframe sandbox>` under a CSP that allows
no script and no remote load, until the agent asks for that message's remote images (AC-17).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, FromClause, Row, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import Agent, Contact
from keepdesk.blobs import BlobStore
from keepdesk.outbox import service as outbox
from keepdesk.outbox.service import Delivery
from keepdesk.tickets.models import (
    Attachment,
    EventAction,
    Message,
    MessageKind,
    Ticket,
    TicketEvent,
)
from keepdesk.tickets.rows import PersonRow, person_or_none

MAX_MESSAGES = 500
MAX_EVENTS = 2000
# Inline images (cid:) are put into the served HTML as data: URLs up to this size in total.
MAX_INLINE_BYTES = 10 * 1024 * 1024
_INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_REMOTE_IMAGE = re.compile(r"<img\b[^>]*\bsrc=\"\s*https?:", re.IGNORECASE)
_CID_SRC = re.compile(r"src=\"cid:([^\"]{1,250})\"", re.IGNORECASE)

# The HTML of a message, on its own origin-less document: nothing runs, nothing loads.
FRAME_CSP = (
    "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'; sandbox allow-popups "
    "allow-popups-to-escape-sandbox"
)
FRAME_CSP_REMOTE = FRAME_CSP.replace("img-src data: cid:", "img-src data: https: http:")
FRAME_HEAD = (
    '<!doctype html><html><head><meta charset="utf-8"><base target="_blank">'
    "<style>body{font:14px/1.5 system-ui,sans-serif;margin:12px;color:#1d2430;"
    "background:#fff;overflow-wrap:anywhere}img{max-width:100%;height:auto}</style>"
    "</head><body>"
)


# --- what the mail channel knows about a message ---------------------------------------------


class MailFacts(Protocol):
    """Why a mail was threaded onto its ticket, and whether its sender was verified. The mail
    package provides them (tickets cannot import mail); `app.py` wires the loader in."""

    @property
    def thread_reason(self) -> str: ...

    @property
    def sender_verified(self) -> bool: ...

    @property
    def from_address(self) -> str: ...


MailFactsLoader = Callable[[AsyncSession, Sequence[int]], Awaitable[Mapping[int, MailFacts]]]


async def no_mail_facts(session: AsyncSession, message_ids: Sequence[int]) -> Mapping[int, Any]:
    return {}


# --- the conversation ---------------------------------------------------------------------------


@dataclass
class EventGroup:
    """Consecutive history events between two messages, shown folded."""

    lines: list[str] = field(default_factory=list)
    at: datetime | None = None
    is_events = True


# The page reads its thread as plain rows, like the lists (tickets/rows.py): as ORM objects
# with their authors and attachments, a thread of 25 messages was 6 ms of the page's 21.


@dataclass(slots=True)
class AttachmentRow:
    id: int
    filename: str
    content_type: str
    size: int
    is_inline: bool


@dataclass(slots=True)
class MessageRow:
    id: int
    kind: MessageKind
    body_text: str
    body_html: str | None
    created_at: datetime
    author_agent: PersonRow | None
    author_contact: PersonRow | None
    attachments: list[AttachmentRow] = field(default_factory=list)


@dataclass(slots=True)
class EventRow:
    action: EventAction
    field: str | None
    before: Any
    after: Any
    created_at: datetime
    actor_agent: PersonRow | None
    actor_contact: PersonRow | None


@dataclass(frozen=True)
class MessageItem:
    message: MessageRow
    delivery: Delivery | None
    mail: MailFacts | None
    has_remote_images: bool
    # A customer's later message can be split off into a ticket of its own.
    can_split: bool = False
    is_events = False


_messages = Message.__table__.c
_attachments = Attachment.__table__.c
_events = TicketEvent.__table__.c
_agents = Agent.__table__
_contacts = Contact.__table__


_PEOPLE = (
    _agents.c.id,
    _agents.c.email,
    _agents.c.name,
    _contacts.c.id,
    _contacts.c.email,
    _contacts.c.name,
)


def _with_people(
    table: FromClause,
    agent_id: ColumnElement[Any],
    contact_id: ColumnElement[Any],
    *columns: ColumnElement[Any],
) -> Select[Any]:
    """`columns` of `table`'s rows, then the six of the agent and the contact each row names
    (either may be missing), as `_people_of` reads them."""
    return select(*columns, *_PEOPLE).select_from(
        table.outerjoin(_agents, _agents.c.id == agent_id).outerjoin(
            _contacts, _contacts.c.id == contact_id
        )
    )


def _people_of(row: Row[Any], first: int) -> tuple[PersonRow | None, PersonRow | None]:
    """The agent and the contact of a `_with_people` row whose own columns number `first`."""
    return person_or_none(*row[first : first + 3]), person_or_none(*row[first + 3 : first + 6])


_MESSAGES = _with_people(
    Message.__table__,
    _messages.author_agent_id,
    _messages.author_contact_id,
    _messages.id,
    _messages.kind,
    _messages.body_text,
    _messages.body_html,
    _messages.created_at,
).order_by(_messages.id)
_ATTACHMENTS = select(
    _attachments.message_id,
    _attachments.id,
    _attachments.filename,
    _attachments.content_type,
    _attachments.size,
    _attachments.is_inline,
).order_by(_attachments.id)
# Each message has its own line in the thread; its event would only repeat it.
_EVENTS = (
    _with_people(
        TicketEvent.__table__,
        _events.actor_agent_id,
        _events.actor_contact_id,
        _events.action,
        _events.field,
        _events.before,
        _events.after,
        _events.created_at,
    )
    .where(_events.action != EventAction.message_added)
    .order_by(_events.id)
)


async def _thread(session: AsyncSession, ticket_id: int) -> tuple[list[MessageRow], bool]:
    """The first `MAX_MESSAGES` messages with their authors and attachments (two statements),
    and whether there were more."""
    found = (
        await session.execute(
            _MESSAGES.where(_messages.ticket_id == ticket_id).limit(MAX_MESSAGES + 1)
        )
    ).all()
    messages = [
        MessageRow(r[0], r[1], r[2], r[3], r[4], *_people_of(r, 5)) for r in found[:MAX_MESSAGES]
    ]
    by_id = {m.id: m for m in messages}
    for r in (await session.execute(_ATTACHMENTS.where(_attachments.ticket_id == ticket_id))).all():
        message = by_id.get(r[0])
        if message is not None:
            message.attachments.append(AttachmentRow(r[1], r[2], r[3], r[4], r[5]))
    return messages, len(found) > MAX_MESSAGES


async def _history(session: AsyncSession, ticket_id: int) -> tuple[list[EventRow], bool]:
    found = (
        await session.execute(_EVENTS.where(_events.ticket_id == ticket_id).limit(MAX_EVENTS + 1))
    ).all()
    events = [EventRow(r[0], r[1], r[2], r[3], r[4], *_people_of(r, 5)) for r in found[:MAX_EVENTS]]
    return events, len(found) > MAX_EVENTS


def _name_of(event: EventRow) -> str:
    if event.actor_agent is not None:
        return event.actor_agent.name
    if event.actor_contact is not None:
        return event.actor_contact.name or event.actor_contact.email
    return "keepdesk"


def _describe(event: EventRow, agents: Mapping[int, str], teams: Mapping[int, str]) -> str:
    who = _name_of(event)
    if event.action == EventAction.created:
        return f"{who} opened the ticket"
    if event.action == EventAction.follow_up_opened:
        if event.field == "follow_up_of":
            return f"Opened as a follow-up of #{event.after}"
        return f"The customer wrote again after closing: follow-up #{event.after}"
    if event.field == "assignee":
        if event.after is None:
            return f"{who} unassigned the ticket"
        return f"{who} assigned it to {agents.get(event.after, 'a former agent')}"
    if event.field == "team":
        if event.after is None:
            return f"{who} removed the team"
        return f"{who} moved it to {teams.get(event.after, 'a former team')}"
    if event.field == "tags":
        return f"{who} set the tags to {', '.join(event.after or []) or 'none'}"
    if event.field in ("status", "priority"):
        return f"{who} changed {event.field} from {event.before} to {event.after}"
    return f"{who} changed {event.field}"


async def timeline(
    session: AsyncSession,
    ticket: Ticket,
    mail_facts: MailFactsLoader,
) -> tuple[list[MessageItem | EventGroup], bool]:
    messages, more_messages = await _thread(session, ticket.id)
    shown, more_events = await _history(session, ticket.id)
    ids = [m.id for m in messages]
    deliveries = await outbox.deliveries_for_messages(
        session, [m.id for m in messages if m.kind == MessageKind.reply]
    )
    facts = await mail_facts(session, ids)
    agent_ids = {e.after for e in shown if e.field == "assignee" and isinstance(e.after, int)}
    team_ids = {e.after for e in shown if e.field == "team" and isinstance(e.after, int)}
    agents: dict[int, str] = {}
    teams: dict[int, str] = {}
    if agent_ids:
        everyone = (await accounts.list_agents(session, cursor=None, limit=1000)).items
        agents = {a.id: a.name for a in everyone if a.id in agent_ids}
    if team_ids:
        teams = {t.id: t.name for t in await accounts.list_teams(session) if t.id in team_ids}

    entries: list[tuple[datetime, int, MessageItem | EventRow]] = [
        (
            m.created_at,
            1,
            MessageItem(
                m,
                deliveries.get(m.id),
                facts.get(m.id),
                bool(m.body_html and _REMOTE_IMAGE.search(m.body_html)),
                m.kind == MessageKind.customer and m.id != ids[0],
            ),
        )
        for m in messages
    ]
    entries += [(e.created_at, 0, e) for e in shown]
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    items: list[MessageItem | EventGroup] = []
    for at, _, entry in entries:
        if isinstance(entry, MessageItem):
            items.append(entry)
            continue
        if not items or not isinstance(items[-1], EventGroup):
            items.append(EventGroup(at=at))
        group = items[-1]
        assert isinstance(group, EventGroup)
        group.lines.append(_describe(entry, agents, teams))
    truncated = more_messages or more_events
    return items, truncated


def framed_body(blobs: BlobStore, message: Message, *, remote_images: bool) -> tuple[str, str]:
    """The message's HTML as a whole document, and the CSP to serve it under."""
    body = _with_inline_images(blobs, message, message.body_html or "")
    return FRAME_HEAD + body + "</body></html>", FRAME_CSP_REMOTE if remote_images else FRAME_CSP


def _with_inline_images(blobs: BlobStore, message: Message, body: str) -> str:
    """`cid:` images of the message's own attachments as data: URLs (the sandboxed frame cannot
    fetch from us; a data: image of a checked raster type is inert)."""
    if "cid:" not in body.lower():
        return body
    by_cid = {
        (a.content_id or "").strip("<>").lower(): a
        for a in message.attachments
        if a.content_id and a.content_type in _INLINE_TYPES
    }
    budget = MAX_INLINE_BYTES

    def replace(match: re.Match[str]) -> str:
        nonlocal budget
        attachment = by_cid.get(match.group(1).strip("<>").lower())
        if attachment is None or attachment.size > budget:
            return match.group(0)
        budget -= attachment.size
        data = base64.b64encode(blobs.get(attachment.blob_key)).decode()
        return f'src="data:{attachment.content_type};base64,{data}"'

    return _CID_SRC.sub(replace, body)
