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

from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.blobs import BlobStore
from keepdesk.outbox import service as outbox
from keepdesk.outbox.service import Delivery
from keepdesk.tickets import queries
from keepdesk.tickets.models import EventAction, Message, MessageKind, Ticket, TicketEvent

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


@dataclass(frozen=True)
class MessageItem:
    message: Message
    delivery: Delivery | None
    mail: MailFacts | None
    has_remote_images: bool
    # A customer's later message can be split off into a ticket of its own.
    can_split: bool = False
    is_events = False


def _name_of(event: TicketEvent) -> str:
    if event.actor_agent is not None:
        return event.actor_agent.name
    if event.actor_contact is not None:
        return event.actor_contact.name or event.actor_contact.email
    return "keepdesk"


def _describe(event: TicketEvent, agents: Mapping[int, str], teams: Mapping[int, str]) -> str:
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
    messages = await queries.list_messages(session, ticket=ticket, cursor=None, limit=MAX_MESSAGES)
    events = await queries.list_events(session, ticket=ticket, cursor=None, limit=MAX_EVENTS)
    ids = [m.id for m in messages.items]
    deliveries = await outbox.deliveries_for_messages(
        session, [m.id for m in messages.items if m.kind == MessageKind.reply]
    )
    facts = await mail_facts(session, ids)
    shown = [e for e in events.items if e.action != EventAction.message_added]
    agent_ids = {e.after for e in shown if e.field == "assignee" and isinstance(e.after, int)}
    team_ids = {e.after for e in shown if e.field == "team" and isinstance(e.after, int)}
    agents: dict[int, str] = {}
    teams: dict[int, str] = {}
    if agent_ids:
        everyone = (await accounts.list_agents(session, cursor=None, limit=1000)).items
        agents = {a.id: a.name for a in everyone if a.id in agent_ids}
    if team_ids:
        teams = {t.id: t.name for t in await accounts.list_teams(session) if t.id in team_ids}

    entries: list[tuple[datetime, int, MessageItem | TicketEvent]] = [
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
        for m in messages.items
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
    truncated = messages.next_cursor is not None or events.next_cursor is not None
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
