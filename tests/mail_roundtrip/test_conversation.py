"""A whole conversation by mail: the customer writes, an agent answers in keepdesk, the answer
arrives by SMTP, and the customer's reply to it lands on the same ticket. And two keepdesk
instances acknowledging each other exchange one mail, not a storm."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select

from keepdesk.audit.service import COMMAND_LINE
from keepdesk.config import load_settings
from keepdesk.mail import delivery, mailboxes
from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.models import Mailbox, MailMessage
from keepdesk.runtime import Runtime
from keepdesk.schema import upgrade_async
from keepdesk.tickets.models import Message, MessageKind, Ticket
from tests.conftest import World
from tests.mail_delivery.conftest import Sink
from tests.mail_fetch.conftest import ImapAccount
from tests.support.clock import FakeClock

FIRST = b"""From: Alice Lindqvist <alice@example.com>
To: help@acme.example
Subject: Printer on fire
Message-ID: <alice-1@example.com>
Date: Mon, 02 Mar 2026 09:00:00 +0000

It smokes since the update.
"""


async def _mailbox(runtime: Runtime, address: str, imap: ImapAccount, sink: Sink) -> Mailbox:
    async with runtime.db.session(write=True) as session:
        box = await mailboxes.add_mailbox(
            session,
            by=COMMAND_LINE,
            address=address,
            imap_url=imap.url,
            smtp_url=f"smtp://127.0.0.1:{sink.port}",
            secret=runtime.secret,
            now=runtime.clock.now(),
            auto_ack=True,
            display_name="Acme Help",
        )
        await session.commit()
        return box


async def test_customer_mail_agent_reply_customer_reply_one_ticket(
    world: World, runtime: Runtime, imap_account: ImapAccount, sink: Sink
) -> None:
    box = await _mailbox(runtime, "help@acme.example", imap_account, sink)
    await imap_account.append(FIRST)
    assert (await fetch_once(runtime, box.id)).ingested == 1
    alice_admin = world.client("alice")
    tickets = (await alice_admin.get("/api/v1/tickets")).json()["items"]
    assert len(tickets) == 1 and tickets[0]["requester"]["email"] == "alice@example.com"
    number = tickets[0]["number"]

    answer = await alice_admin.post(
        f"/api/v1/tickets/{number}/messages",
        json={"kind": "reply", "body": "Unplug it, please. We are on our way."},
    )
    assert answer.status_code == 201
    await alice_admin.patch(f"/api/v1/tickets/{number}", json={"status": "pending"})
    await delivery.send_due(runtime, holder="test")

    delivered = sink.received_by("alice@example.com")
    kinds = sorted(m.message.get("Auto-Submitted", "no") for m in delivered)
    assert kinds == ["auto-replied", "no"]  # the acknowledgement and the agent's answer
    reply = next(m.message for m in delivered if m.message.get("Auto-Submitted") is None)
    assert f"[#{number}]" in reply["Subject"]
    assert reply["In-Reply-To"] == "<alice-1@example.com>"

    customer_answer = (
        f"From: Alice Lindqvist <alice@example.com>\nTo: help@acme.example\n"
        f"Subject: Re: {reply['Subject']}\nMessage-ID: <alice-2@example.com>\n"
        f"In-Reply-To: {reply['Message-ID']}\n"
        f"References: <alice-1@example.com> {reply['Message-ID']}\n\n"
        "Unplugged. It stopped smoking.\n"
    ).encode()
    await imap_account.append(customer_answer)
    assert (await fetch_once(runtime, box.id)).ingested == 1

    ticket = (await alice_admin.get(f"/api/v1/tickets/{number}")).json()
    assert ticket["status"] == "open"  # the customer's answer reopened the pending ticket
    messages = (await alice_admin.get(f"/api/v1/tickets/{number}/messages")).json()["items"]
    assert [m["kind"] for m in messages] == ["customer", "reply", "customer"]
    assert messages[1]["delivery"]["status"] == "sent"
    async with runtime.db.session() as session:
        reason = await session.scalar(
            select(MailMessage.thread_reason).where(
                MailMessage.header_message_id == "<alice-2@example.com>"
            )
        )
        assert reason is not None and "answers keepdesk's message" in reason
        assert len((await session.scalars(select(Ticket))).all()) == 1


async def test_two_instances_acknowledging_each_other_do_not_loop(
    runtime: Runtime, imap_account: ImapAccount, sink: Sink, tmp_path: Path
) -> None:
    # Instance A is the test's own; instance B gets a SQLite database of its own.
    other_account = ImapAccount(
        server=imap_account.server, user=f"b{uuid.uuid4().hex[:10]}@example.org"
    )
    settings_b = load_settings(
        data_dir=tmp_path / "b",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'b.sqlite3'}",
        secret_key="instance-b-secret-" + "y" * 32,
    )
    await upgrade_async(settings_b.effective_database_url)
    async with Runtime.from_settings(settings_b, clock=FakeClock()) as runtime_b:
        box_a = await _mailbox(runtime, "help@acme.example", imap_account, sink)
        box_b = await _mailbox(runtime_b, "service@other.example", other_account, sink)
        inboxes = {"help@acme.example": imap_account, "service@other.example": other_account}

        # B's support address writes to A, as if a person there had typed it.
        await imap_account.append(
            b"From: Other Service <service@other.example>\nTo: help@acme.example\n"
            b"Subject: Question about an order\nMessage-ID: <q-1@other.example>\n\nHello?\n"
        )
        forwarded = 0
        for _ in range(6):
            await fetch_once(runtime, box_a.id)
            await delivery.send_due(runtime, holder="a")
            await fetch_once(runtime_b, box_b.id)
            await delivery.send_due(runtime_b, holder="b")
            # Carry what each instance sent into the other's inbox.
            for mail in sink.received[forwarded:]:
                for rcpt in mail.rcpt_tos:
                    if rcpt in inboxes:
                        await inboxes[rcpt].append(mail.data)
            forwarded = len(sink.received)

        # A acknowledged once; B recognised the acknowledgement as automatic and stayed quiet.
        assert len(sink.received) == 1
        assert sink.received[0].rcpt_tos == ["service@other.example"]
        async with runtime_b.db.session() as session:
            stored = (await session.scalars(select(Message))).all()
            assert [m.kind for m in stored] == [MessageKind.customer]
