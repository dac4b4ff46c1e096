"""A customer's mail in the INBOX becomes a ticket, and only then leaves the INBOX."""

from __future__ import annotations

from sqlalchemy import func, select

from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.models import Mailbox, MailReceipt
from keepdesk.outbox.models import OutboxKind, OutboxMessage
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import Ticket
from tests.mail_fetch.conftest import ImapAccount

NEW_REQUEST = b"""From: Alice Lindqvist <alice@example.com>
To: support@example.com
Subject: Cannot log in
Message-ID: <first-request@example.com>
Date: Mon, 02 Mar 2026 09:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hello, I cannot log in since this morning.
"""


async def test_new_mail_becomes_a_ticket_then_moves(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    await imap_account.append(NEW_REQUEST)
    report = await fetch_once(runtime, mailbox.id)
    assert report.errors == [] and report.ingested == 1
    async with runtime.db.session() as session:
        ticket = await session.scalar(select(Ticket))
        assert ticket is not None and ticket.subject == "Cannot log in"
        receipts = (await session.scalars(select(MailReceipt))).all()
        assert [r.imap_done for r in receipts] == [True]
        acks = await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.kind == OutboxKind.auto_ack)
        )
        assert acks == 1
    assert await imap_account.count("INBOX") == 0
    assert (
        await imap_account.count("keepdesk.processed")
        + await imap_account.count("keepdesk/processed")
        == 1
    )

    again = await fetch_once(runtime, mailbox.id)
    assert again.fetched == 0
