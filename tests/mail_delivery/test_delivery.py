"""Stories of a reply on its way to the customer: through the API, the outbox and a real SMTP
server that accepts, refuses, stalls or drops the line. Time moves only by the test's clock."""

from __future__ import annotations

import asyncio
import base64
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from keepdesk.mail import ingest
from keepdesk.mail.models import Direction, Mailbox, MailMessage
from keepdesk.outbox import ids
from keepdesk.outbox.models import DeliveryStatus, OutboxMessage
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import Ticket
from tests.conftest import World, open_ticket
from tests.mail_delivery.conftest import Sink, add_mailbox, free_port, send_due
from tests.support.clock import FakeClock

FIRST_MAIL = b"""From: Carol Customer <carol@customer.test>
To: help@acme.example
Subject: Printer on fire
Message-ID: <carol-1@customer.test>
Date: Mon, 02 Mar 2026 08:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

It started smoking after the update.
"""


def answer_to(message_id: str, *, number: int) -> bytes:
    return f"""From: Carol Customer <carol@customer.test>
To: help@acme.example
Subject: Re: Printer on fire [#{number}]
Message-ID: <carol-2@customer.test>
In-Reply-To: {message_id}
References: <carol-1@customer.test> {message_id}
Date: Mon, 02 Mar 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Still smoking.
""".encode()


async def customer_writes(runtime: Runtime, mailbox: Mailbox, raw: bytes) -> int:
    """The mail arrives as if fetched from the mailbox; returns its ticket's number."""
    raw = raw.replace(b"\n", b"\r\n")
    async with runtime.db.session(write=True) as session:
        box = await session.get(Mailbox, mailbox.id)
        result = await ingest.ingest(
            session,
            runtime=runtime,
            mailbox=box,
            raw=raw,
            blob_key=runtime.blobs.put(raw),
            now=runtime.clock.now(),
        )
        await session.commit()
    assert result.ticket_number is not None, result
    return result.ticket_number


async def reply(client: httpx.AsyncClient, number: int, body: str = "On it.", **extra: Any) -> int:
    response = await client.post(
        f"/api/v1/tickets/{number}/messages", json={"kind": "reply", "body": body, **extra}
    )
    assert response.status_code == 201, response.text
    delivery = response.json()["message"]["delivery"]
    assert delivery == {"status": "queued", "error": None}
    message_id: int = response.json()["message"]["id"]
    return message_id


async def delivery_of(client: httpx.AsyncClient, number: int, message_id: int) -> dict[str, Any]:
    """What the API says about a reply's delivery."""
    response = await client.get(f"/api/v1/tickets/{number}/messages")
    assert response.status_code == 200
    (message,) = [m for m in response.json()["items"] if m["id"] == message_id]
    result: dict[str, Any] = message["delivery"]
    return result


def text_of(mail: EmailMessage, kind: str = "plain") -> str:
    part = mail.get_body((kind,))
    assert part is not None
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


async def support_ticket(world: World, requester: str = "carol@customer.test") -> int:
    ticket = await open_ticket(
        world.client("dave"), team=world.ids["support"], requester={"email": requester}
    )
    number: int = ticket["number"]
    return number


async def test_a_reply_reaches_the_customer_once_threaded_with_her_mail(
    world: World, runtime: Runtime, sink: Sink
) -> None:
    mailbox = await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    number = await customer_writes(runtime, mailbox, FIRST_MAIL)
    dave = world.client("dave")
    invoice = b"%PDF-1.4 not really a pdf"
    first = await reply(
        dave,
        number,
        "We are on it.\nPlease unplug it.",
        body_html="<p>We are on it.</p><p>Please <b>unplug</b> it.</p>",
        attachments=[
            {
                "filename": 'Rechnung "März".pdf',
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(invoice).decode(),
            }
        ],
    )

    assert await send_due(runtime) == 1

    (got,) = sink.received
    assert got.mail_from == "help@acme.example"
    assert got.rcpt_tos == ["carol@customer.test"]
    mail = got.message
    assert mail["From"] == "Dave Support via Acme Help <help@acme.example>"
    assert mail["To"] == "carol@customer.test"
    assert mail["Subject"] == f"Re: Printer on fire [#{number}]"
    assert mail["In-Reply-To"] == "<carol-1@customer.test>"
    assert mail["References"] == "<carol-1@customer.test>"
    assert mail["X-Keepdesk-Ticket"] == str(number)
    assert mail["Auto-Submitted"] is None  # a person wrote this one
    message_id = mail["Message-ID"]
    issued = ids.verify(runtime.secret, message_id)
    assert issued is not None and issued.number == number
    assert text_of(mail) == "We are on it.\nPlease unplug it.\n"
    assert "<b>unplug</b>" in text_of(mail, "html")
    (attachment,) = mail.iter_attachments()
    assert attachment.get_filename() == 'Rechnung "März".pdf'
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == invoice
    assert await delivery_of(dave, number, first) == {"status": "sent", "error": None}

    # Nothing is due any more: a second pass sends nothing.
    assert await send_due(runtime) == 0
    assert len(sink.received) == 1

    # Carol answers keepdesk's mail; it lands on the same ticket, and the next reply carries
    # the whole conversation, root first.
    assert await customer_writes(runtime, mailbox, answer_to(message_id, number=number)) == number
    await reply(dave, number, "Try the other socket.")
    assert await send_due(runtime) == 1
    second = sink.received[1].message
    assert second["In-Reply-To"] == "<carol-2@customer.test>"
    assert second["References"].split() == [
        "<carol-1@customer.test>",
        message_id,
        "<carol-2@customer.test>",
    ]
    assert second["Message-ID"] not in (message_id, None)


async def test_the_sent_reply_is_kept_for_threading_and_its_bytes_for_retries(
    world: World, runtime: Runtime, sink: Sink
) -> None:
    await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    number = await support_ticket(world)
    message_id = await reply(world.client("dave"), number)

    await send_due(runtime)

    async with runtime.db.session() as session:
        row = await session.scalar(select(OutboxMessage))
        mail = await session.scalar(select(MailMessage))
    assert row is not None and row.blob_key is not None
    assert runtime.blobs.get(row.blob_key) == sink.received[0].data
    assert row.envelope_from == "help@acme.example"
    assert mail is not None
    assert (mail.message_id, mail.direction) == (message_id, Direction.outbound)
    assert mail.header_message_id == row.message_id_header


async def test_temporary_refusals_are_retried_after_the_backoff_and_delivered_once(
    world: World, runtime: Runtime, sink: Sink, clock: FakeClock
) -> None:
    await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    number = await support_ticket(world)
    dave = world.client("dave")
    message = await reply(dave, number)
    sink.reply_at_rcpt("451 4.7.1 greylisted, try again later", times=2)

    assert await send_due(runtime) == 1
    delivery = await delivery_of(dave, number, message)
    assert delivery["status"] == "retrying"
    assert "451 4.7.1 greylisted, try again later" in delivery["error"]

    assert await send_due(runtime) == 0  # not due again before its back-off has passed
    clock.advance(seconds=61)
    assert await send_due(runtime) == 1
    assert (await delivery_of(dave, number, message))["status"] == "retrying"
    clock.advance(minutes=5, seconds=1)
    assert await send_due(runtime) == 1

    assert await delivery_of(dave, number, message) == {"status": "sent", "error": None}
    assert len(sink.received) == 1


@pytest.mark.parametrize(
    ("stage", "words"),
    [("rcpt", "550 5.1.1 no such user here"), ("data", "552 5.3.4 message size exceeds limit")],
)
async def test_a_permanent_refusal_fails_with_the_servers_words(
    world: World, runtime: Runtime, sink: Sink, clock: FakeClock, stage: str, words: str
) -> None:
    await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    number = await support_ticket(world)
    dave = world.client("dave")
    message = await reply(dave, number)
    if stage == "rcpt":
        sink.reply_at_rcpt(words)
    else:
        sink.reply_at_data(words)

    await send_due(runtime)

    delivery = await delivery_of(dave, number, message)
    assert delivery["status"] == "failed"
    assert words in delivery["error"]
    clock.advance(days=1)
    assert await send_due(runtime) == 0  # final: never retried
    assert sink.received == []


async def test_a_line_dropped_after_the_message_is_uncertain_and_retried_with_the_same_id(
    world: World, runtime: Runtime, sink: Sink, clock: FakeClock
) -> None:
    await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    number = await support_ticket(world)
    dave = world.client("dave")
    message = await reply(dave, number)
    sink.drop_after_data(times=1)

    await send_due(runtime)

    delivery = await delivery_of(dave, number, message)
    assert delivery["status"] == "uncertain"
    assert "may have been delivered" in delivery["error"]
    clock.advance(seconds=61)
    await send_due(runtime)
    assert (await delivery_of(dave, number, message))["status"] == "sent"
    first, second = sink.received
    # The server may well have delivered both; to the customer's client they are one mail.
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.data == second.data


async def test_replies_wait_while_the_server_is_down_and_go_out_in_order_once_it_is_back(
    world: World, runtime: Runtime, clock: FakeClock
) -> None:
    port = free_port()  # nothing listens there yet
    await add_mailbox(runtime, port=port, team_id=world.ids["support"])
    number = await support_ticket(world)
    dave = world.client("dave")
    first = await reply(dave, number, "First.")
    clock.advance(seconds=1)
    second = await reply(dave, number, "Second.")

    assert await send_due(runtime) == 2
    for message in (first, second):
        delivery = await delivery_of(dave, number, message)
        assert delivery["status"] == "retrying"
        assert f"127.0.0.1:{port}" in delivery["error"]

    sink = Sink(port).start()
    try:
        clock.advance(seconds=61)
        assert await send_due(runtime) == 2
        assert [text_of(r.message) for r in sink.received] == ["First.\n", "Second.\n"]
        for message in (first, second):
            assert (await delivery_of(dave, number, message))["status"] == "sent"
        clock.advance(hours=1)
        assert await send_due(runtime) == 0
        assert len(sink.received) == 2
    finally:
        sink.stop()


@pytest.mark.parametrize(
    ("stalls", "status"), [("before the message", "retrying"), ("after the message", "uncertain")]
)
async def test_a_stalled_send_times_out_and_the_other_replies_still_go_out(
    world: World, runtime: Runtime, sink: Sink, stalls: str, status: str
) -> None:
    await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    slow_number = await support_ticket(world, requester="slow@customer.test")
    number = await support_ticket(world)
    dave = world.client("dave")
    slow = await reply(dave, slow_number)
    fine = await reply(dave, number)
    if stalls == "before the message":
        sink.hang_at_rcpt(address="slow@customer.test")
    else:
        sink.hang_after_data(address="slow@customer.test")

    assert await send_due(runtime) == 2

    slow_delivery = await delivery_of(dave, slow_number, slow)
    assert slow_delivery["status"] == status
    assert "no answer in time" in slow_delivery["error"]
    assert await delivery_of(dave, number, fine) == {"status": "sent", "error": None}
    assert sink.received_by("carol@customer.test")


@pytest.mark.parametrize(
    "subject",
    [
        "Printer\r\nBcc: evil@attacker.example",
        "Printer\nBcc: evil@attacker.example\r\n\r\nInjected body",
        "Printer\rBcc: evil@attacker.example",
        "Printer\u2028Bcc: evil@attacker.example",
        # Decoded text that still looks like an encoded-word: the stdlib would decode it again.
        "=?utf-8?q?Printer=0D=0ABcc:_evil@attacker.example?=",
    ],
)
async def test_a_hostile_subject_cannot_add_a_header(
    world: World, runtime: Runtime, sink: Sink, subject: str
) -> None:
    await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    number = await support_ticket(world)
    async with runtime.db.session(write=True) as session:
        # No real path stores such a subject today; this proves the mail side does not rely
        # on that (AC-16).
        await session.execute(update(Ticket).where(Ticket.number == number).values(subject=subject))
        await session.commit()
    await reply(world.client("dave"), number)

    await send_due(runtime)

    (got,) = sink.received
    assert got.rcpt_tos == ["carol@customer.test"]
    head = got.data.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line[:1] != b" "]
    assert b"bcc" not in names
    assert names.count(b"subject") == 1
    decoded = got.message["Subject"]
    assert "\r" not in decoded and "\n" not in decoded
    assert decoded.startswith("Re: Printer") or decoded.startswith("Re: =?utf-8?q?Printer")
    assert decoded.endswith(f"[#{number}]")


async def test_starttls_that_the_server_does_not_offer_is_an_error_not_a_downgrade(
    world: World, runtime: Runtime, sink: Sink
) -> None:
    await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"], scheme="smtp+starttls")
    number = await support_ticket(world)
    dave = world.client("dave")
    message = await reply(dave, number)

    await send_due(runtime)

    delivery = await delivery_of(dave, number, message)
    assert delivery["status"] == "retrying"
    assert "does not offer STARTTLS" in delivery["error"]
    assert sink.received == []


async def test_two_senders_at_once_deliver_each_reply_once(
    world: World, runtime: Runtime, sink: Sink
) -> None:
    await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    dave = world.client("dave")
    for n in range(6):
        number = await support_ticket(world, requester=f"customer{n}@customer.test")
        await reply(dave, number)

    taken = await asyncio.gather(
        send_due(runtime, holder="sender-a"), send_due(runtime, holder="sender-b")
    )

    assert sum(taken) == 6
    message_ids = [r.message["Message-ID"] for r in sink.received]
    assert len(message_ids) == len(set(message_ids)) == 6
    async with runtime.db.session() as session:
        statuses = (await session.scalars(select(OutboxMessage.status))).all()
    assert statuses == [DeliveryStatus.sent] * 6


async def test_without_any_mailbox_the_reply_waits_says_what_to_do_and_goes_once_added(
    world: World, runtime: Runtime, sink: Sink, clock: FakeClock
) -> None:
    number = await support_ticket(world)
    dave = world.client("dave")
    message = await reply(dave, number)

    await send_due(runtime)

    assert await delivery_of(dave, number, message) == {
        "status": "retrying",
        "error": "no mailbox to send from: add one with keepdesk mailbox add",
    }
    await add_mailbox(runtime, port=sink.port)
    clock.advance(hours=1)
    await send_due(runtime)
    assert (await delivery_of(dave, number, message))["status"] == "sent"
    assert len(sink.received_by("carol@customer.test")) == 1
