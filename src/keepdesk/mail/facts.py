"""What the mail channel knows about ticket messages, for the ticket page: the sender's address,
whether it was verified, and why the mail was threaded onto its ticket."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.mail.models import MailMessage


async def mail_facts_for_messages(
    session: AsyncSession, message_ids: Sequence[int]
) -> dict[int, MailMessage]:
    if not message_ids:
        return {}
    rows = await session.scalars(
        select(MailMessage).where(MailMessage.message_id.in_(list(message_ids)))
    )
    return {row.message_id: row for row in rows}
