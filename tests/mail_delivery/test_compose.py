"""What an outbound mail says: subject tag, sender, threading headers, automatic-reply marks,
and bytes that stay the same on every attempt."""

from __future__ import annotations

import email.header

import pytest
from sqlalchemy import func, select

from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import AgentRole
from keepdesk.mail import compose, mailboxes
from keepdesk.mail.models import Direction, MailMessage
from keepdesk.outbox.models import OutboxKind, OutboxMessage
from keepdesk.runtime import Runtime
from tests.conftest import World, open_ticket
from tests.mail_delivery.conftest import Sink, add_mailbox, send_due
from tests.mail_delivery.test_delivery import (
    FIRST_MAIL,
    customer_writes,
    reply,
    support_ticket,
    text_of,
)


def alice(world: World) -> Actor:
    return Actor(world.ids["alice"], "alice@keepdesk.test", "Alice", AgentRole.admin, frozenset())


def decoded(words: list[str]) -> str:
    return str(email.header.make_header(email.header.decode_header(" ".join(words))))


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Printer on fire", "Re: Printer on fire [#1042]"),
        ("Re: Printer on fire [#1042]", "Re: Printer on fire [#1042]"),
        ("RE: Printer on fire", "RE: Printer on fire [#1042]"),
        ("Printer [#1042] on fire", "Re: Printer [#1042] on fire"),
        ("Drucker qualmt, bitte prüfen", "Re: Drucker qualmt, bitte prüfen [#1042]"),
        ("Printer\x00on\tfire\r\n", "Re: Printer on fire [#1042]"),
        ("", "Re: [#1042]"),
    ],
)
def test_the_subject_answers_the_ticket_and_carries_its_tag_once(
    subject: str, expected: str
) -> None:
    words = compose.subject_words(subject, 1042)

    assert all(w.isascii() and " " not in w for w in words)
    assert decoded(words) == expected


@pytest.mark.parametrize(
    "subject",
    [
        "=?utf-8?q?a=0D=0ABcc:_x@example.org?=",  # decoded once already: must stay this text
        "x" * 300,  # one word longer than a line
        "日本語の件名" * 20,
    ],
)
def test_subjects_that_plain_text_cannot_carry_are_encoded_and_decode_back(subject: str) -> None:
    words = compose.subject_words(subject, 7)

    assert all(len(w) <= 75 for w in words)  # RFC 2047 §2
    assert decoded(words) == f"Re: {subject} [#7]"


async def test_an_auto_acknowledgement_is_marked_automatic_and_not_kept_as_a_reply(
    world: World, runtime: Runtime, sink: Sink
) -> None:
    mailbox = await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    async with runtime.db.session(write=True) as session:
        admin = alice(world)
        await mailboxes.update_mailbox(
            session, actor=admin, mailbox_id=mailbox.id, now=runtime.clock.now(), auto_ack=True
        )
        await session.commit()
    number = await customer_writes(runtime, mailbox, FIRST_MAIL)

    assert await send_due(runtime) == 1

    (got,) = sink.received
    mail = got.message
    assert got.rcpt_tos == ["carol@customer.test"]
    assert mail["Auto-Submitted"] == "auto-replied"  # RFC 3834 §5
    assert mail["X-Loop"] == "help@acme.example"
    assert mail["From"] == "Acme Help <help@acme.example>"
    assert mail["Subject"] == f"Re: Printer on fire [#{number}]"
    assert mail["In-Reply-To"] == "<carol-1@customer.test>"
    assert f"opened ticket #{number}" in text_of(mail)
    async with runtime.db.session() as session:
        row = await session.scalar(select(OutboxMessage))
        outbound = await session.scalar(
            select(func.count())
            .select_from(MailMessage)
            .where(MailMessage.direction == Direction.outbound)
        )
    assert row is not None and row.kind == OutboxKind.auto_ack
    assert mail["Message-ID"] == row.message_id_header
    assert outbound == 0  # there is no ticket message behind an acknowledgement


async def test_references_keep_the_root_and_the_newest_ids(
    world: World, runtime: Runtime, sink: Sink
) -> None:
    mailbox = await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    number = await customer_writes(runtime, mailbox, FIRST_MAIL)
    for n in range(2, 23):
        follow_up = FIRST_MAIL.replace(
            b"Message-ID: <carol-1@customer.test>",
            f"Message-ID: <carol-{n}@customer.test>\nIn-Reply-To: <carol-1@customer.test>".encode(),
        )
        assert await customer_writes(runtime, mailbox, follow_up) == number
    await reply(world.client("dave"), number)

    await send_due(runtime)

    mail = sink.received[0].message
    expected = ["<carol-1@customer.test>"] + [f"<carol-{n}@customer.test>" for n in range(4, 23)]
    assert mail["References"].split() == expected
    assert mail["In-Reply-To"] == "<carol-22@customer.test>"
    head = sink.received[0].data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))


async def test_a_retry_sends_the_stored_bytes_and_a_lost_blob_is_rendered_again(
    world: World, runtime: Runtime, sink: Sink
) -> None:
    mailbox = await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    number = await customer_writes(runtime, mailbox, FIRST_MAIL)
    await reply(world.client("dave"), number)

    async def render() -> compose.Rendered:
        async with runtime.db.session(write=True) as session:
            row = await session.scalar(select(OutboxMessage))
            assert row is not None
            rendered = await compose.render(
                session,
                row=row,
                secret=runtime.secret,
                blobs=runtime.blobs,
                now=runtime.clock.now(),
            )
            await session.commit()
            return rendered

    first = await render()
    again = await render()
    assert again.data == first.data
    assert (first.envelope_from, first.recipients) == ("help@acme.example", ["carol@customer.test"])
    assert (first.server.host, first.server.port) == ("127.0.0.1", sink.port)

    async with runtime.db.session() as session:
        row = await session.scalar(select(OutboxMessage))
    assert row is not None and row.blob_key is not None
    runtime.blobs.path_for(row.blob_key).unlink()
    rebuilt = await render()
    assert b"Message-ID: " + row.message_id_header.encode() in rebuilt.data
    assert runtime.blobs.exists(row.blob_key)
    async with runtime.db.session() as session:
        kept = (await session.scalars(select(MailMessage.direction))).all()
    assert sorted(kept) == [Direction.inbound, Direction.outbound]


async def test_the_reply_leaves_from_the_tickets_mailbox_else_its_teams_else_the_first(
    world: World, runtime: Runtime, sink: Sink
) -> None:
    other = await add_mailbox(
        runtime,
        port=sink.port,
        team_id=world.ids["support"],
        address="team@acme.example",
        display_name="Acme Support",
    )
    inbox = await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    mailed = await customer_writes(runtime, inbox, FIRST_MAIL)
    typed_in = await support_ticket(world)
    billing = (await open_ticket(world.client("bob"), subject="Invoice"))["number"]
    await reply(world.client("dave"), mailed)
    await reply(world.client("dave"), typed_in)
    await reply(world.client("bob"), billing, "Fixed.")
    assert await send_due(runtime) == 3
    async with runtime.db.session(write=True) as session:
        admin = alice(world)
        await mailboxes.update_mailbox(
            session, actor=admin, mailbox_id=other.id, now=runtime.clock.now(), is_active=False
        )
        await session.commit()
    await reply(world.client("dave"), typed_in, "Once more.")

    await send_due(runtime)

    senders = [(r.message["X-Keepdesk-Ticket"], r.mail_from) for r in sink.received]
    assert senders == [
        (str(mailed), "help@acme.example"),  # the mailbox the mail came in on
        (str(typed_in), "team@acme.example"),  # no mailbox of its own: its team's first
        (str(billing), "team@acme.example"),  # Billing has none: the first active one
        (str(typed_in), "help@acme.example"),  # team@ is switched off now
    ]
    assert sink.received[1].message["From"] == "Dave Support via Acme Support <team@acme.example>"


async def test_names_outside_ascii_are_encoded_and_read_back(
    world: World, runtime: Runtime, sink: Sink
) -> None:
    await add_mailbox(
        runtime, port=sink.port, team_id=world.ids["support"], display_name="Acme Hülfe, Köln"
    )
    number = await support_ticket(world)
    await reply(world.client("dave"), number, "Grüße aus Köln, wir kümmern uns.")

    await send_due(runtime)

    (got,) = sink.received
    assert got.data.isascii()  # nothing needs 8BITMIME or SMTPUTF8
    mail = got.message
    assert str(mail["From"]) == '"Dave Support via Acme Hülfe, Köln" <help@acme.example>'
    assert mail["From"].addresses[0].display_name == "Dave Support via Acme Hülfe, Köln"
    assert text_of(mail) == "Grüße aus Köln, wir kümmern uns.\n"
