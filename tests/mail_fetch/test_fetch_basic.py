"""A customer's mail in the INBOX becomes a ticket, and only then leaves the INBOX."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import AgentRole, Contact
from keepdesk.mail import ingest as ingesting
from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.models import Mailbox, MailMessage, MailReceipt
from keepdesk.outbox.models import OutboxKind, OutboxMessage
from keepdesk.runtime import Runtime
from keepdesk.tickets import queries, search
from keepdesk.tickets import service as tickets
from keepdesk.tickets.models import Channel, Ticket
from keepdesk.tickets.policy import TicketPolicy
from tests.mail_faults.conftest import add_box
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


def _mail(message_id: str, subject: str, body: str, *, in_reply_to: str | None = None) -> bytes:
    thread = f"In-Reply-To: {in_reply_to}\nReferences: {in_reply_to}\n" if in_reply_to else ""
    return (
        f"From: Bob Berg <bob@example.com>\nTo: support@example.com\nSubject: {subject}\n"
        f"Message-ID: {message_id}\n{thread}Date: Mon, 02 Mar 2026 09:00:00 +0000\n"
        f"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n{body}\n"
    ).encode()


async def test_one_batch_threads_dedupes_and_indexes_mails_that_refer_to_each_other(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    """The fetcher records a batch in one transaction with its look-ups done once and its
    history and search index written at the end: mails of the batch still see each other."""
    first = _mail("<printer@example.com>", "Printer on fire", "Smoke from tray two.")
    for raw in (
        first,
        _mail(
            "<printer-2@example.com>",
            "Re: Printer on fire",
            "Still burning.",
            in_reply_to="<printer@example.com>",
        ),
        first,  # delivered twice
        _mail("<scanner@example.com>", "Scanner jammed", "Paper stuck in the feeder."),
    ):
        await imap_account.append(raw)

    report = await fetch_once(runtime, mailbox.id)

    assert (report.fetched, report.ingested, report.duplicates) == (4, 3, 1)
    admin = Actor(1, "admin@example.com", "Admin", AgentRole.admin, frozenset())
    async with runtime.db.session() as session:
        contacts = (await session.scalars(select(Contact.email))).all()
        assert contacts == ["bob@example.com"]
        found = {}
        for word in ("burning", "smoke", "feeder"):
            page = await search.search_tickets(session, actor=admin, query=word, cursor=None)
            found[word] = [row.subject for row in page.items]
        assert found == {
            "burning": ["Printer on fire"],
            "smoke": ["Printer on fire"],
            "feeder": ["Scanner jammed"],
        }
        printer = await session.scalar(select(Ticket).where(Ticket.subject == "Printer on fire"))
        assert printer is not None
        events = await queries.list_events(session, ticket=printer, cursor=None, limit=50)
        assert [(e.action.value, e.field, e.before) for e in events.items] == [
            ("created", None, None),
            ("message_added", "message", None),
            ("message_added", "message", None),
        ]
        assert all(e.actor_contact is not None for e in events.items)
        # The mail records, written at the batch's end, in the order the mails came.
        records = await session.execute(
            select(MailMessage.header_message_id, MailMessage.ticket_id).order_by(MailMessage.id)
        )
        assert [(header, ticket_id == printer.id) for header, ticket_id in records] == [
            ("<printer@example.com>", True),
            ("<printer-2@example.com>", True),
            ("<scanner@example.com>", False),
        ]


async def test_tickets_from_batches_are_numbered_without_gaps(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    """A batch takes numbers for all its mails at once and gives back those its replies and
    duplicates did not use: the tickets of two batches and one opened between them follow
    each other."""
    first = _mail("<lamp@example.com>", "Lamp flickers", "Since Monday.")
    for raw in (
        first,
        _mail(
            "<lamp-2@example.com>", "Re: Lamp flickers", "Still.", in_reply_to="<lamp@example.com>"
        ),
        first,
        _mail("<desk@example.com>", "Desk wobbles", "One leg is short."),
    ):
        await imap_account.append(raw)
    assert (await fetch_once(runtime, mailbox.id)).ingested == 3
    async with runtime.db.session(write=True) as session:
        contact = (await session.scalars(select(Contact))).one()
        await tickets.open_customer_ticket(
            session,
            requester=contact,
            subject="From the web form",
            body="Typed in a form.",
            now=runtime.clock.now(),
            blobs=runtime.blobs,
            policy=TicketPolicy.from_runtime(runtime),
            channel=Channel.web,
        )
        await session.commit()
    await imap_account.append(_mail("<chair@example.com>", "Chair squeaks", "Loudly."))
    assert (await fetch_once(runtime, mailbox.id)).ingested == 1

    async with runtime.db.session() as session:
        numbered = (
            await session.execute(select(Ticket.number, Ticket.subject).order_by(Ticket.number))
        ).all()
    start = numbered[0].number
    assert [(n - start, subject) for n, subject in numbered] == [
        (0, "Lamp flickers"),
        (1, "Desk wobbles"),
        (2, "From the web form"),
        (3, "Chair squeaks"),
    ]


async def test_a_batch_threads_only_the_participants_of_the_tickets_it_refers_to(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    """A batch reads who takes part in the tickets its mails refer to once, with its other
    look-ups: the requester's answer threads, a stranger quoting the same Message-ID opens a
    ticket of their own."""
    await imap_account.append(_mail("<boiler@example.com>", "Boiler leaks", "Water on the floor."))
    assert (await fetch_once(runtime, mailbox.id)).ingested == 1
    stranger = (
        b"From: Eve Mallory <eve@elsewhere.test>\nTo: support@example.com\n"
        b"Subject: Re: Boiler leaks\nMessage-ID: <eve@elsewhere.test>\n"
        b"In-Reply-To: <boiler@example.com>\nReferences: <boiler@example.com>\n"
        b"Date: Mon, 02 Mar 2026 10:00:00 +0000\nMIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\n\nPlease send the invoice to me instead.\n"
    )
    for raw in (
        _mail(
            "<boiler-2@example.com>",
            "Re: Boiler leaks",
            "It got worse.",
            in_reply_to="<boiler@example.com>",
        ),
        stranger,
    ):
        await imap_account.append(raw)

    assert (await fetch_once(runtime, mailbox.id)).ingested == 2

    async with runtime.db.session() as session:
        by_subject = {
            t.subject: t
            for t in await session.scalars(
                select(Ticket).options(selectinload(Ticket.tags)).order_by(Ticket.number)
            )
        }
        assert sorted(by_subject) == ["Boiler leaks", "Re: Boiler leaks"]
        boiler, separate = by_subject["Boiler leaks"], by_subject["Re: Boiler leaks"]
        thread = await queries.list_messages(session, ticket=boiler, cursor=None, limit=10)
        assert [m.body_text.strip() for m in thread.items] == [
            "Water on the floor.",
            "It got worse.",
        ]
        assert [tag.name for tag in separate.tags] == ["unverified-follow-up"]


async def test_a_reply_parsed_only_inside_the_transaction_still_finds_its_batch_mate(
    runtime: Runtime,
) -> None:
    """The fetcher hands `recording_batch` no parse for a mail whose parser failed before the
    transaction; the mail is parsed inside it, and the references `look_up` did not know are
    read then, the batch's own mails (not written yet) included."""
    box = await add_box(
        runtime,
        address="support@example.com",
        imap_url="imaps://support:secret@imap.example.com/INBOX",
    )
    request = _mail("<toner@example.com>", "Toner empty", "The printer says toner.")
    reply = _mail(
        "<toner-2@example.com>", "Re: Toner empty", "Found some.", in_reply_to="<toner@example.com>"
    )
    own = frozenset({"support@example.com"})
    parsed = await ingesting.parse(runtime, request, own=own)
    mails = [(1, request, parsed), (2, reply, None)]  # the reply's parse failed before

    async with runtime.db.session(write=True) as session:
        box = await session.get_one(Mailbox, box.id)
        async with ingesting.recording_batch(
            session, mailbox_id=box.id, uidvalidity=7, mails=mails
        ) as seen:
            results = [
                await ingesting.ingest(
                    session,
                    runtime=runtime,
                    mailbox=box,
                    raw=raw,
                    blob_key=runtime.blobs.put(raw),
                    now=runtime.clock.now(),
                    uidvalidity=7,
                    uid=uid,
                    parsed=parse,
                    own=own,
                    seen=seen,
                )
                for uid, raw, parse in mails
            ]
        await session.commit()

    first, second = results
    assert first.is_new and not second.is_new
    assert second.ticket_number == first.ticket_number
    assert "it refers to <toner@example.com>" in second.reason
