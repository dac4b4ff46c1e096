"""Moving mail between tickets: the ticket side moves the message, the mail side its threading
facts, so the sender's next answer follows it to the new ticket."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts.access import Actor
from keepdesk.mail.models import MailMessage
from keepdesk.tickets import service as tickets
from keepdesk.tickets.models import Ticket
from keepdesk.tickets.policy import TicketPolicy


async def split_message(
    session: AsyncSession,
    *,
    actor: Actor,
    number: int,
    message_id: int,
    now: datetime,
    policy: TicketPolicy,
) -> Ticket:
    new = await tickets.split_message(
        session, actor=actor, number=number, message_id=message_id, now=now, policy=policy
    )
    await session.execute(
        update(MailMessage)
        .where(MailMessage.message_id == message_id)
        .values(
            ticket_id=new.id,
            thread_reason=f"Split off from #{number} by {actor.name}.",
        )
    )
    await session.flush()
    return new
