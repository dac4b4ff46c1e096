"""Which ticket an inbound mail belongs to, and why (AC-10).

In order: a Message-ID keepdesk issued (HMAC-verified) or one already on a ticket, named in
In-Reply-To/References; then the subject tag `[#1042]`. A Message-ID keepdesk issued threads
whoever answers it: only someone who got our mail can quote it (AC-10; an out-of-office reply
from a Cc'd colleague, corpus 401). Any other id or a tag only counts when the sender is a
participant of that ticket; otherwise the mail opens a ticket of its own, marked as an
unverified follow-up, so a stranger quoting a number never lands on someone else's ticket.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select, union
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts.models import Contact
from keepdesk.mail.models import MailMessage
from keepdesk.outbox import ids
from keepdesk.tickets.models import Message, Ticket

SUBJECT_TAG = re.compile(r"\[#(\d{1,9})\]")
MAX_REFERENCES = 50


@dataclass(frozen=True)
class ThreadDecision:
    ticket: Ticket | None  # None: open a new ticket
    reason: str
    # The ticket the mail pointed at although its sender is no participant (a new one opens).
    unverified_follow_up_of: Ticket | None = None


def references_newest_first(in_reply_to: list[str], references: list[str]) -> list[str]:
    seen: list[str] = []
    for ref in [*in_reply_to, *reversed(references)]:
        if ref not in seen:
            seen.append(ref)
    return seen[:MAX_REFERENCES]


async def participants_of(
    session: AsyncSession, tickets: Collection[Ticket]
) -> dict[int, set[str]]:
    """Who takes part in each of these tickets, by ticket id: the requester and every
    contact who has written on it. One statement, for a reply's ticket or for a fetch batch's
    threads (read with its other look-ups): the (ticket, contact) pairs, then the contacts by
    their key.

    By key, not `contacts.id = requester OR id IN (authors)`: PostgreSQL ran that as a scan
    of every contact (2.9 ms at 20,000 contacts, growing with them; this way index look-ups
    only), for every reply that comes in."""
    if not tickets:
        return {}
    ticket_ids = sorted({t.id for t in tickets})
    pairs = union(
        select(Ticket.id.label("ticket_id"), Ticket.requester_id.label("contact_id")).where(
            Ticket.id.in_(ticket_ids)
        ),
        select(Message.ticket_id, Message.author_contact_id).where(
            Message.ticket_id.in_(ticket_ids), Message.author_contact_id.is_not(None)
        ),
    ).subquery()
    rows = await session.execute(
        select(pairs.c.ticket_id, Contact.email).join(Contact, Contact.id == pairs.c.contact_id)
    )
    found: dict[int, set[str]] = {ticket_id: set() for ticket_id in ticket_ids}
    for ticket_id, email in rows:
        found[ticket_id].add(email)
    return found


async def _ticket_by_number(session: AsyncSession, number: int) -> Ticket | None:
    return await session.scalar(select(Ticket).where(Ticket.number == number))


@dataclass(frozen=True)
class _Found:
    ticket: Ticket
    why: str
    issued_by_us: bool = False  # an HMAC-verified Message-ID of ours, not one anybody can quote


async def tickets_of_mails(session: AsyncSession, refs: Collection[str]) -> dict[str, Ticket]:
    """The ticket of each of these Message-IDs that is a mail on one: one statement."""
    if not refs:
        return {}
    known = await session.execute(
        select(MailMessage.header_message_id, Ticket)
        .join(Ticket, Ticket.id == MailMessage.ticket_id)
        .where(MailMessage.header_message_id.in_(sorted(refs)))
    )
    return {header: ticket for header, ticket in known}


async def _referenced(
    session: AsyncSession, refs: list[str], secret: bytes, known: dict[str, Ticket] | None
) -> _Found | None:
    for ref in refs:
        issued = ids.verify(secret, ref)
        if issued is not None:
            ticket = await _ticket_by_number(session, issued.number)
            if ticket is not None:
                return _Found(ticket, f"it answers keepdesk's message {ref}", issued_by_us=True)
    if not refs:
        return None
    by_ref = known if known is not None else await tickets_of_mails(session, refs)
    for ref in refs:
        if ref in by_ref:
            return _Found(by_ref[ref], f"it refers to {ref}, a mail already on this ticket")
    return None


async def decide(
    session: AsyncSession,
    *,
    sender: str,
    subject: str,
    in_reply_to: list[str],
    references: list[str],
    secret: bytes,
    known: dict[str, Ticket] | None = None,
    known_participants: dict[int, set[str]] | None = None,
) -> ThreadDecision:
    """`known`: the tickets of these references, looked up already for a batch of mails
    (`tickets_of_mails`, with the batch's own recorded since); else they are read here. So
    are the participants of a ticket not in `known_participants` (`participants_of`)."""
    refs = references_newest_first(in_reply_to, references)
    found = await _referenced(session, refs, secret, known)
    if found is None:
        for match in SUBJECT_TAG.finditer(subject):
            ticket = await _ticket_by_number(session, int(match.group(1)))
            if ticket is not None:
                found = _Found(ticket, f"its subject carries the tag [#{ticket.number}]")
                break
    if found is None:
        return ThreadDecision(None, "it refers to no existing ticket, so it opened a new one")
    ticket, why = found.ticket, found.why
    taking_part = (known_participants or {}).get(ticket.id)
    if taking_part is None:
        taking_part = (await participants_of(session, [ticket]))[ticket.id]
    if sender in taking_part:
        return ThreadDecision(
            ticket,
            f"Threaded onto #{ticket.number} because {why} and {sender} takes part in that ticket.",
        )
    if found.issued_by_us:
        return ThreadDecision(
            ticket,
            f"Threaded onto #{ticket.number} because {why}, a Message-ID only keepdesk can issue; "
            f"{sender} had not written on that ticket before.",
        )
    return ThreadDecision(
        None,
        f"{why.capitalize()} (#{ticket.number}), but {sender} is not a participant of "
        f"#{ticket.number}, so it opened a separate ticket for an agent to check.",
        unverified_follow_up_of=ticket,
    )


async def decide_for_reply(
    session: AsyncSession,
    *,
    in_reply_to: list[str],
    references: list[str],
    subject: str,
    secret: bytes,
    known: dict[str, Ticket] | None = None,
) -> Ticket | None:
    """The thread a reply sent from the support address belongs to (importing history)."""
    refs = references_newest_first(in_reply_to, references)
    found = await _referenced(session, refs, secret, known)
    if found is not None:
        return found.ticket
    for match in SUBJECT_TAG.finditer(subject):
        ticket = await _ticket_by_number(session, int(match.group(1)))
        if ticket is not None:
            return ticket
    return None
