"""Bringing an old shared inbox in: threads become tickets with their replies, old ones end
closed, and running the import again adds nothing."""

from __future__ import annotations

import mailbox as stdlib_mailbox
from pathlib import Path

import pytest
from sqlalchemy import func, select

from keepdesk.audit.service import COMMAND_LINE
from keepdesk.errors import InvalidInput
from keepdesk.mail import importer, mailboxes
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import Message, MessageKind, Ticket, TicketStatus
from tests.support.clock import FakeClock

REQUEST = b"""From: Alice <alice@example.com>
To: help@acme.example
Subject: Invoice question
Message-ID: <old-1@example.com>
Date: Mon, 05 Jan 2026 10:00:00 +0000

Why was I charged twice?
"""
ANSWER = b"""From: Acme Help <help@acme.example>
To: alice@example.com
Subject: Re: Invoice question
Message-ID: <old-2@acme.example>
In-Reply-To: <old-1@example.com>
References: <old-1@example.com>
Date: Mon, 05 Jan 2026 11:00:00 +0000

We refunded the second charge.
"""
OTHER = b"""From: Bob <bob@example.org>
To: help@acme.example
Subject: Password reset
Message-ID: <old-3@example.org>
Date: Tue, 10 Feb 2026 09:00:00 +0000

The link does not work.
"""


@pytest.fixture
async def help_box(runtime: Runtime) -> None:
    async with runtime.db.session(write=True) as session:
        await mailboxes.add_mailbox(
            session,
            by=COMMAND_LINE,
            address="help@acme.example",
            imap_url="imap://u:p@127.0.0.1:1/INBOX",
            smtp_url="smtp://127.0.0.1:1",
            secret=runtime.secret,
            now=runtime.clock.now(),
            auto_ack=True,
        )
        await session.commit()


def write_mbox(path: Path, mails: list[bytes]) -> Path:
    box = stdlib_mailbox.mbox(path)
    for raw in mails:
        box.add(raw)
    box.flush()
    box.close()
    return path


@pytest.mark.usefixtures("help_box")
async def test_an_mbox_becomes_threaded_tickets_and_a_second_run_adds_nothing(
    runtime: Runtime, tmp_path: Path, clock: FakeClock
) -> None:
    path = write_mbox(tmp_path / "help.mbox", [REQUEST, ANSWER, OTHER])
    first = await importer.import_messages(
        runtime, kind="mbox", path=path, mailbox_address="help@acme.example"
    )
    assert (first.total, first.outcomes) == (3, {"ingested": 3})
    async with runtime.db.session() as session:
        tickets = (await session.scalars(select(Ticket).order_by(Ticket.number))).all()
        assert [t.subject for t in tickets] == ["Invoice question", "Password reset"]
        # Both threads are older than two weeks at the (fake) time of the import.
        assert {t.status for t in tickets} == {TicketStatus.closed}
        kinds = (
            await session.scalars(
                select(Message.kind).where(Message.ticket_id == tickets[0].id).order_by(Message.id)
            )
        ).all()
        assert kinds == [MessageKind.customer, MessageKind.reply]
        # History keeps its own dates, and nothing was acknowledged.
        assert tickets[0].created_at.year == 2026 and tickets[0].created_at.month == 1
        assert tickets[0].first_response_at is not None

    second = await importer.import_messages(
        runtime, kind="mbox", path=path, mailbox_address="help@acme.example"
    )
    assert second.outcomes == {"duplicate": 3} and second.tickets_touched == set()
    async with runtime.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Message)) == 3
        from keepdesk.outbox.models import OutboxMessage

        assert await session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


@pytest.mark.usefixtures("help_box")
async def test_a_maildir_imports_too_and_recent_threads_stay_open(
    runtime: Runtime, tmp_path: Path
) -> None:
    box = stdlib_mailbox.Maildir(tmp_path / "Maildir")
    box.add(REQUEST.replace(b"Jan 2026", b"Mar 2026").replace(b"05 ", b"02 "))
    summary = await importer.import_messages(
        runtime, kind="maildir", path=tmp_path / "Maildir", mailbox_address="help@acme.example"
    )
    assert summary.outcomes == {"ingested": 1} and summary.closed == 0
    async with runtime.db.session() as session:
        ticket = await session.scalar(select(Ticket))
        assert ticket is not None and ticket.status == TicketStatus.new


async def test_an_unknown_mailbox_or_path_is_a_clear_error(
    runtime: Runtime, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match=r"no mailbox help@acme\.example"):
        await importer.import_messages(
            runtime, kind="mbox", path=tmp_path / "x.mbox", mailbox_address="help@acme.example"
        )
