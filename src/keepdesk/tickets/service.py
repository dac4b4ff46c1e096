"""Ticket commands: open, reply, note, customer message, and changes to status, owner and tags.

Each command loads what the actor may see, applies the rules of `states`, writes one event per
changed field, bumps the ticket's version once, and flushes. The caller commits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Final, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import Agent, AgentRole, Contact, TeamMembership
from keepdesk.blobs import BlobStore
from keepdesk.db import collecting, conflict_insert
from keepdesk.errors import Conflict, InvalidInput, NotFound
from keepdesk.outbox import ids
from keepdesk.outbox import service as outbox
from keepdesk.outbox.models import OutboxKind
from keepdesk.tickets import history, mentions, search, states
from keepdesk.tickets.attachments import NewAttachment, store_attachments
from keepdesk.tickets.html import sanitize_html
from keepdesk.tickets.models import (
    Attachment,
    Channel,
    Counter,
    EventAction,
    Message,
    MessageKind,
    Priority,
    Tag,
    Ticket,
    TicketStatus,
)
from keepdesk.tickets.policy import TicketPolicy, normalize_tags
from keepdesk.tickets.queries import get_visible_ticket


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


@dataclass(frozen=True)
class TicketChanges:
    status: TicketStatus | None = None
    priority: Priority | None = None
    assignee_id: int | _Unset | None = UNSET
    team_id: int | _Unset | None = UNSET
    tags: Sequence[str] | None = None


# --- helpers ----------------------------------------------------------------------------------


async def _tags_by_name(session: AsyncSession, names: list[str]) -> list[Tag]:
    if not names:
        return []
    await session.execute(
        conflict_insert(session, Tag).values([{"name": n} for n in names]).on_conflict_do_nothing()
    )
    return list((await session.scalars(select(Tag).where(Tag.name.in_(names)))).all())


# Core, not the ORM's bulk UPDATE (which would look for Counter rows in the session to bring
# up to date: none are ever loaded): a third of the time per ticket.
_counters = cast(Table, Counter.__table__).c
_BUMP = (
    update(cast(Table, Counter.__table__))
    .where(_counters.name == "ticket")
    .values(value=_counters.value + bindparam("taken"))
    .returning(_counters.value)
)
# session.info key: the numbers a `batched_writes` block took ahead and has not handed out.
_NUMBERS = "keepdesk.tickets.numbers"


@dataclass
class _Numbers:
    """Ticket numbers taken from the counter at once for a batch: `next` up to `last`."""

    ahead: int  # how many to take, the first time one is needed
    next: int = 0
    last: int = -1


async def _next_number(session: AsyncSession, first: int) -> int:
    # The row lock taken here is held to commit, so numbers are handed out one at a time.
    block: _Numbers | None = session.info.get(_NUMBERS)
    if block is not None and block.next <= block.last:
        block.next += 1
        return block.next - 1
    taken = max(block.ahead, 1) if block is not None else 1
    number = await session.scalar(_BUMP, {"taken": taken})
    if number is None:
        # The very first ticket: create the counter (a racing first ticket's row wins), then
        # take a number from it like everyone else.
        await session.execute(
            conflict_insert(session, Counter)
            .values(name="ticket", value=first - 1)
            .on_conflict_do_nothing()
        )
        number = await session.scalar(_BUMP, {"taken": taken})
    assert number is not None
    ours = int(number) - taken + 1  # the first of those taken; the block keeps the rest
    if block is not None:
        block.next, block.last = ours + 1, int(number)
    return ours


async def _give_back_numbers(session: AsyncSession, block: _Numbers) -> None:
    """Return the numbers a batch took and did not use: the counter's row is still locked by
    this transaction (PostgreSQL's row lock, SQLite's one writer), so no other ticket took a
    number after them, and numbering stays without gaps."""
    unused = block.last - block.next + 1
    if unused > 0:
        await session.execute(_BUMP, {"taken": -unused})


async def _add_message(
    session: AsyncSession,
    ticket: Ticket,
    *,
    kind: MessageKind,
    body: str,
    body_html: str | None,
    now: datetime,
    blobs: BlobStore,
    policy: TicketPolicy,
    attachments: Sequence[NewAttachment] = (),
    agent_id: int | None = None,
    contact_id: int | None = None,
) -> Message:
    if not body.strip() and not body_html and not attachments:
        raise InvalidInput("a message needs a body or an attachment", code="empty_message")
    message = Message(
        ticket_id=ticket.id,
        kind=kind,
        author_agent_id=agent_id,
        author_contact_id=contact_id,
        body_text=body,
        body_html=sanitize_html(body_html) if body_html else None,
        created_at=now,
    )
    session.add(message)
    await session.flush()
    # Every command that writes a ticket's text (open, reply, note, customer mail, follow-up)
    # adds a message through here; subject and requester are set before, and never change.
    await search.index_ticket(session, ticket.id)
    await store_attachments(
        session, blobs=blobs, message=message, attachments=attachments, policy=policy, now=now
    )
    history.record_event(
        session,
        ticket,
        action=EventAction.message_added,
        now=now,
        agent_id=agent_id,
        contact_id=contact_id,
        field="message",
        after={"id": message.id, "kind": kind.value},
    )
    return message


async def assignable_agents(session: AsyncSession, ticket: Ticket) -> list[accounts.AgentName]:
    """The agents who may own the ticket (`_check_assignee`'s rule): the active members of its
    team and the active admins; with no team, every active agent."""
    agents = await accounts.active_agents(session)
    if ticket.team_id is None:
        return agents
    members = set((await accounts.member_ids(session, [ticket.team_id]))[ticket.team_id])
    return [a for a in agents if a.id in members or a.is_admin]


async def _check_assignee(session: AsyncSession, ticket: Ticket, assignee_id: int) -> Agent:
    agent = await session.get(Agent, assignee_id)
    if agent is None or not agent.is_active:
        raise InvalidInput(f"no active agent with id {assignee_id}", code="unknown_agent")
    if ticket.team_id is not None and agent.role != AgentRole.admin:
        member = await session.get(TeamMembership, (ticket.team_id, agent.id))
        if member is None:
            raise InvalidInput(
                f"{agent.name} is not a member of this ticket's team", code="not_team_member"
            )
    return agent


@asynccontextmanager
async def batched_writes(session: AsyncSession, *, new_tickets: int = 0) -> AsyncIterator[None]:
    """For one transaction that runs many commands (the mail fetcher's batch): their history
    events are written in one INSERT and their tickets indexed for search in one statement, at
    the end of the block, instead of one statement each along the way. Nothing inside may read
    either back, or open a savepoint.

    With `new_tickets`, the most tickets the block may open, their numbers are taken from the
    counter in one statement the first time one is needed, and those left over given back in
    one more at the end, instead of a statement a ticket."""
    with collecting(session, _NUMBERS, _Numbers(ahead=new_tickets)) as numbers:
        async with search.batched_index(session), history.batched_events(session):
            yield
        await _give_back_numbers(session, numbers)


# --- commands ---------------------------------------------------------------------------------


async def open_ticket(
    session: AsyncSession,
    *,
    actor: Actor,
    subject: str,
    body: str,
    requester_email: str,
    now: datetime,
    blobs: BlobStore,
    policy: TicketPolicy,
    requester_name: str = "",
    body_html: str | None = None,
    priority: Priority = Priority.normal,
    team_id: int | None = None,
    tags: Sequence[str] = (),
    channel: Channel = Channel.api,
    attachments: Sequence[NewAttachment] = (),
) -> Ticket:
    """An agent (or an integration with an agent's token) files a customer's request."""
    subject = " ".join(subject.split())
    if not subject:
        raise InvalidInput("subject must not be empty", code="empty_subject")
    if team_id is None and not actor.is_admin:
        if len(actor.team_ids) != 1:
            raise InvalidInput(
                "team_id is required: you belong to "
                f"{len(actor.team_ids) or 'no'} teams, so keepdesk cannot pick one for you",
                code="team_required",
            )
        (team_id,) = actor.team_ids
    if team_id is not None:
        await accounts.check_team(session, team_id)
    requester = await accounts.find_or_create_contact(
        session, email=requester_email, name=requester_name, now=now
    )
    ticket = await _create(
        session,
        subject=subject,
        requester=requester,
        channel=channel,
        priority=priority,
        team_id=team_id,
        tags=normalize_tags(tags),
        now=now,
        policy=policy,
        agent_id=actor.agent_id,
    )
    await _add_message(
        session,
        ticket,
        kind=MessageKind.customer,
        body=body,
        body_html=body_html,
        now=now,
        blobs=blobs,
        policy=policy,
        attachments=attachments,
        contact_id=requester.id,
    )
    await session.flush()
    return ticket


async def open_customer_ticket(
    session: AsyncSession,
    *,
    requester: Contact,
    subject: str,
    body: str,
    now: datetime,
    blobs: BlobStore,
    policy: TicketPolicy,
    channel: Channel,
    body_html: str | None = None,
    attachments: Sequence[NewAttachment] = (),
    team_id: int | None = None,
    mailbox_id: int | None = None,
    tags: Sequence[str] = (),
) -> tuple[Ticket, Message]:
    """A customer's new request arriving by itself (mail, portal): no agent involved."""
    ticket = await _create(
        session,
        subject=" ".join(subject.split()) or "(no subject)",
        requester=requester,
        channel=channel,
        priority=Priority.normal,
        team_id=team_id,
        tags=normalize_tags(tags),
        now=now,
        policy=policy,
        contact_id=requester.id,
        mailbox_id=mailbox_id,
    )
    message = await _add_message(
        session,
        ticket,
        kind=MessageKind.customer,
        body=body,
        body_html=body_html,
        now=now,
        blobs=blobs,
        policy=policy,
        attachments=attachments,
        contact_id=requester.id,
    )
    await session.flush()
    return ticket, message


async def _create(
    session: AsyncSession,
    *,
    subject: str,
    requester: Contact,
    channel: Channel,
    priority: Priority,
    team_id: int | None,
    tags: list[str],
    now: datetime,
    policy: TicketPolicy,
    agent_id: int | None = None,
    contact_id: int | None = None,
    follow_up_of: Ticket | None = None,
    mailbox_id: int | None = None,
) -> Ticket:
    ticket = Ticket(
        number=await _next_number(session, policy.first_number),
        subject=subject[:1000],
        status=TicketStatus.new,
        priority=priority,
        channel=channel,
        requester_id=requester.id,
        team_id=team_id,
        assignee_id=None,
        follow_up_of_id=follow_up_of.id if follow_up_of else None,
        mailbox_id=mailbox_id if follow_up_of is None else follow_up_of.mailbox_id,
        created_at=now,
        updated_at=now,
        version=1,
    )
    ticket.tags = await _tags_by_name(session, tags)
    session.add(ticket)
    await session.flush()
    history.record_event(
        session,
        ticket,
        action=EventAction.created,
        now=now,
        agent_id=agent_id,
        contact_id=contact_id,
        after={
            "subject": ticket.subject,
            "status": "new",
            "priority": priority.value,
            "channel": channel.value,
            "team_id": team_id,
            "tags": tags,
        },
    )
    if follow_up_of is not None:
        history.record_event(
            session,
            ticket,
            action=EventAction.follow_up_opened,
            now=now,
            contact_id=contact_id,
            field="follow_up_of",
            after=follow_up_of.number,
        )
        history.record_event(
            session,
            follow_up_of,
            action=EventAction.follow_up_opened,
            now=now,
            contact_id=contact_id,
            field="follow_up",
            after=ticket.number,
        )
    return ticket


async def add_agent_message(
    session: AsyncSession,
    *,
    actor: Actor,
    number: int,
    kind: MessageKind,
    body: str,
    now: datetime,
    blobs: BlobStore,
    policy: TicketPolicy,
    body_html: str | None = None,
    attachments: Sequence[NewAttachment] = (),
    expected_version: int | None = None,
) -> tuple[Ticket, Message]:
    """A reply to the customer or an internal note. A reply on a new ticket opens it and the
    first one records the first-response time. A note tells the agents it @mentions (`mentions`)."""
    if kind not in (MessageKind.reply, MessageKind.note):
        raise InvalidInput("kind must be reply or note", code="invalid_kind")
    ticket = await get_visible_ticket(session, actor=actor, number=number)
    history.check_version(ticket, expected_version)
    if kind == MessageKind.reply and ticket.status == TicketStatus.closed:
        raise Conflict(
            f"ticket #{number} is closed; replies go on a new ticket", code="ticket_closed"
        )
    message = await _add_message(
        session,
        ticket,
        kind=kind,
        body=body,
        body_html=body_html,
        now=now,
        blobs=blobs,
        policy=policy,
        attachments=attachments,
        agent_id=actor.agent_id,
    )
    if kind == MessageKind.note:
        await mentions.record_mentions(session, ticket=ticket, message=message, now=now)
    if kind == MessageKind.reply:
        # Committed with the reply itself; a sender task delivers it (AC-15).
        await outbox.enqueue(
            session,
            kind=OutboxKind.reply,
            message_id_header=ids.issue(
                policy.mail_secret,
                number=ticket.number,
                kind="reply",
                domain=policy.message_id_domain,
            ),
            recipients=[ticket.requester.email],
            now=now,
            mailbox_id=ticket.mailbox_id,
            ticket_id=ticket.id,
            ticket_message_id=message.id,
        )
        if ticket.first_response_at is None:
            ticket.first_response_at = now
    if ticket.status != TicketStatus.closed:
        history.set_status(
            session,
            ticket,
            states.after_agent_action(ticket.status),
            now=now,
            agent_id=actor.agent_id,
        )
    history.touch(ticket, now)
    await session.flush()
    return ticket, message


async def record_customer_message(
    session: AsyncSession,
    *,
    ticket: Ticket,
    contact: Contact,
    body: str,
    now: datetime,
    blobs: BlobStore,
    policy: TicketPolicy,
    body_html: str | None = None,
    attachments: Sequence[NewAttachment] = (),
    channel: Channel | None = None,
    automated: bool = False,
) -> tuple[Ticket, Message]:
    """The customer wrote on `ticket` (already matched by the channel). A resolved or pending
    ticket reopens; a closed one stays closed and the message opens a linked follow-up.

    An `automated` message (an out-of-office reply, RFC 3834) is kept on the ticket but moves
    nothing: no reopening, no follow-up."""
    target = ticket
    if ticket.status == TicketStatus.closed and not automated:
        target = await _create(
            session,
            subject=ticket.subject,
            requester=contact,
            channel=channel or ticket.channel,
            priority=ticket.priority,
            team_id=ticket.team_id,
            tags=[],
            now=now,
            policy=policy,
            contact_id=contact.id,
            follow_up_of=ticket,
        )
    message = await _add_message(
        session,
        target,
        kind=MessageKind.customer,
        body=body,
        body_html=body_html,
        now=now,
        blobs=blobs,
        policy=policy,
        attachments=attachments,
        contact_id=contact.id,
    )
    if target is ticket and not automated:
        history.set_status(
            session,
            ticket,
            states.after_customer_message(ticket.status),
            now=now,
            contact_id=contact.id,
        )
    history.touch(ticket, now)
    await session.flush()
    return target, message


async def split_message(
    session: AsyncSession,
    *,
    actor: Actor,
    number: int,
    message_id: int,
    now: datetime,
    policy: TicketPolicy,
) -> Ticket:
    """Move a customer's message, with its attachments, off this ticket into a new one (a mail
    threaded here wrongly, or a second question). Both tickets record the move."""
    ticket = await get_visible_ticket(session, actor=actor, number=number)
    message = await session.scalar(
        select(Message).where(Message.id == message_id, Message.ticket_id == ticket.id)
    )
    if message is None:
        raise NotFound(f"no message {message_id} on ticket #{number}")
    if message.kind != MessageKind.customer:
        raise InvalidInput("only a customer's message can be split off", code="not_splittable")
    first = await session.scalar(select(func.min(Message.id)).where(Message.ticket_id == ticket.id))
    if first == message.id:
        raise InvalidInput(
            "this message opened the ticket; it cannot leave it", code="not_splittable"
        )
    requester = (
        await session.get(Contact, message.author_contact_id) if message.author_contact_id else None
    ) or ticket.requester
    new = await _create(
        session,
        subject=ticket.subject,
        requester=requester,
        channel=ticket.channel,
        priority=ticket.priority,
        team_id=ticket.team_id,
        tags=[],
        now=now,
        policy=policy,
        agent_id=actor.agent_id,
        mailbox_id=ticket.mailbox_id,
    )
    message.ticket_id = new.id
    await session.execute(
        update(Attachment).where(Attachment.message_id == message.id).values(ticket_id=new.id)
    )
    history.record_event(
        session,
        ticket,
        action=EventAction.changed,
        now=now,
        agent_id=actor.agent_id,
        field="split",
        after={"message": message.id, "to": new.number},
    )
    history.record_event(
        session,
        new,
        action=EventAction.changed,
        now=now,
        agent_id=actor.agent_id,
        field="split_from",
        after={"message": message.id, "from": ticket.number},
    )
    history.touch(ticket, now)
    await session.flush()
    await search.index_ticket(session, ticket.id)
    await search.index_ticket(session, new.id)
    return new


async def record_sent_reply(
    session: AsyncSession,
    *,
    ticket: Ticket,
    body: str,
    now: datetime,
    blobs: BlobStore,
    policy: TicketPolicy,
    body_html: str | None = None,
    attachments: Sequence[NewAttachment] = (),
) -> Message:
    """A reply that was already sent outside keepdesk (an imported mailbox's history): it is
    recorded as a reply, by no agent, and nothing is sent."""
    message = await _add_message(
        session,
        ticket,
        kind=MessageKind.reply,
        body=body,
        body_html=body_html,
        now=now,
        blobs=blobs,
        policy=policy,
        attachments=attachments,
    )
    if ticket.first_response_at is None:
        ticket.first_response_at = now
    if ticket.status == TicketStatus.new:
        history.set_status(session, ticket, TicketStatus.open, now=now)
    history.touch(ticket, now)
    await session.flush()
    return message


async def close_quietly(
    session: AsyncSession,
    *,
    ticket_ids: Sequence[int],
    last_activity_before: datetime,
    now: datetime,
) -> int:
    """Close the given tickets whose last activity is older than the cut-off (an import's old
    threads), as keepdesk itself."""
    due = (
        await session.scalars(
            select(Ticket).where(
                Ticket.id.in_(ticket_ids),
                Ticket.status != TicketStatus.closed,
                Ticket.updated_at < last_activity_before,
            )
        )
    ).all()
    for ticket in due:
        history.set_status(session, ticket, TicketStatus.closed, now=now)
        history.touch(ticket, now)
    await session.flush()
    return len(due)


async def update_ticket(
    session: AsyncSession,
    *,
    actor: Actor,
    number: int,
    changes: TicketChanges,
    now: datetime,
    expected_version: int | None = None,
) -> Ticket:
    """Apply several field changes as one: one version bump, one event per changed field."""
    ticket = await get_visible_ticket(session, actor=actor, number=number)
    history.check_version(ticket, expected_version)
    agent_id = actor.agent_id
    changed = False

    def closed_guard() -> None:
        # Only tags may still change on a closed ticket (for reporting); nothing else moves it.
        if ticket.status == TicketStatus.closed:
            raise Conflict(
                states.why_not(TicketStatus.closed, TicketStatus.open), code="ticket_closed"
            )

    if not isinstance(changes.team_id, _Unset) and changes.team_id != ticket.team_id:
        closed_guard()
        if changes.team_id is not None:
            await accounts.check_team(session, changes.team_id)
        history.record_event(
            session,
            ticket,
            action=EventAction.changed,
            now=now,
            agent_id=agent_id,
            field="team",
            before=ticket.team_id,
            after=changes.team_id,
        )
        ticket.team_id = changes.team_id
        changed = True
        if isinstance(changes.assignee_id, _Unset) and ticket.assignee_id is not None:
            # A hand-over to another team: keep the owner only if they are in it.
            current = await session.get(Agent, ticket.assignee_id)
            in_team = (
                changes.team_id is None
                or (await session.get(TeamMembership, (changes.team_id, ticket.assignee_id)))
                is not None
            )
            if current is None or not (in_team or current.role == AgentRole.admin):
                history.record_event(
                    session,
                    ticket,
                    action=EventAction.changed,
                    now=now,
                    agent_id=agent_id,
                    field="assignee",
                    before=ticket.assignee_id,
                    after=None,
                )
                ticket.assignee_id = None

    if not isinstance(changes.assignee_id, _Unset) and changes.assignee_id != ticket.assignee_id:
        closed_guard()
        if changes.assignee_id is not None:
            await _check_assignee(session, ticket, changes.assignee_id)
        history.record_event(
            session,
            ticket,
            action=EventAction.changed,
            now=now,
            agent_id=agent_id,
            field="assignee",
            before=ticket.assignee_id,
            after=changes.assignee_id,
        )
        ticket.assignee_id = changes.assignee_id
        changed = True

    if changes.priority is not None and changes.priority != ticket.priority:
        closed_guard()
        history.record_event(
            session,
            ticket,
            action=EventAction.changed,
            now=now,
            agent_id=agent_id,
            field="priority",
            before=ticket.priority.value,
            after=changes.priority.value,
        )
        ticket.priority = changes.priority
        changed = True

    if changes.tags is not None:
        wanted = normalize_tags(changes.tags)
        current_tags = [t.name for t in ticket.tags]
        if wanted != current_tags:
            history.record_event(
                session,
                ticket,
                action=EventAction.changed,
                now=now,
                agent_id=agent_id,
                field="tags",
                before=current_tags,
                after=wanted,
            )
            ticket.tags = await _tags_by_name(session, wanted)
            changed = True

    target = changes.status
    if target is None and changed:
        target = states.after_agent_action(ticket.status)
    if target is not None and target != ticket.status:
        closed_guard()
        history.set_status(session, ticket, target, now=now, agent_id=agent_id)
        changed = True

    if changed:
        history.touch(ticket, now)
        await session.flush()
    return ticket


async def close_resolved_tickets(
    session: AsyncSession, *, now: datetime, resolved_before: datetime, batch: int = 200
) -> int:
    """Close tickets resolved before the cut-off with no word from the customer since."""
    due = (
        await session.scalars(
            select(Ticket)
            .where(Ticket.status == TicketStatus.resolved, Ticket.resolved_at < resolved_before)
            .order_by(Ticket.resolved_at)
            .limit(batch)
        )
    ).all()
    for ticket in due:
        history.set_status(session, ticket, TicketStatus.closed, now=now)
        history.touch(ticket, now)
    await session.flush()
    return len(due)
