"""The thread fixtures of the corpus (3xx, 401, 408, 409, 411) delivered onto ticket #1234.

MANIFEST's state: 301 opened #1234 for alice@example.com, then keepdesk sent her
`<kd-1234-out-1@example.com>` … `out-5`. Here 301 comes in over IMAP, alice (admin) sends five
replies through the API, and `Thread.rewrite` puts their real, signed Message-IDs and the real
ticket number where the corpus mail names the made-up ones.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from keepdesk.accounts.models import AgentRole, Contact
from keepdesk.mail.models import ReceiptOutcome
from keepdesk.outbox.models import DeliveryStatus, OutboxKind
from tests.mail_corpus.conftest import (
    PROCESSED_FOLDER,
    Desk,
    add_agent,
    as_stored,
    corpus_mail,
    open_thread,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The corpus files whose MANIFEST verdict is checked here (test_corpus.py holds the rest).
COVERED = {"301", "302", "304", "305", "307", "311", "312", "323", "401", "408", "409", "411"}
ALICE = "alice@example.com"


async def set_status(desk: Desk, number: int, status: str) -> None:
    response = await desk.alice.patch(f"/api/v1/tickets/{number}", json={"status": status})
    assert response.status_code == 200, response.text


async def test_301_opens_the_ticket_and_acknowledges_it_once(desk: Desk) -> None:
    thread = await open_thread(desk)
    ticket = await desk.ticket(thread.number)
    assert (ticket["subject"], ticket["requester"]["email"]) == ("Printer on fire", ALICE)
    [ack] = await desk.outbox(OutboxKind.auto_ack)
    assert ack.recipients == [ALICE] and ack.ticket_id is not None
    [mail] = await desk.mail_messages()
    assert mail.header_message_id == "<root-1234@example.com>"


async def test_302_a_reply_to_our_message_reopens_the_pending_ticket(desk: Desk) -> None:
    thread = await open_thread(desk)
    await set_status(desk, thread.number, "pending")
    await desk.deliver(thread.rewrite(corpus_mail("302")))
    assert (await desk.fetch()).ingested == 1

    assert [t["number"] for t in await desk.tickets()] == [thread.number]
    assert (await desk.ticket(thread.number))["status"] == "open"
    last = (await desk.messages(thread.number))[-1]
    assert last["kind"] == "customer" and last["author"]["email"] == ALICE
    assert last["body_text"].startswith("It is out now.")
    mail = (await desk.mail_messages())[-1]
    assert f"answers keepdesk's message {thread.sent[0]}" in mail.thread_reason
    assert len(await desk.outbox(OutboxKind.auto_ack)) == 1  # only 301's


async def test_304_a_tag_from_a_participant_appends(desk: Desk) -> None:
    thread = await open_thread(desk)
    await desk.deliver(thread.rewrite(corpus_mail("304")))
    assert (await desk.fetch()).ingested == 1
    assert [t["number"] for t in await desk.tickets()] == [thread.number]
    last = (await desk.messages(thread.number))[-1]
    assert last["author"]["email"] == ALICE and "only the subject tag" in last["body_text"]
    assert "carries the tag" in (await desk.mail_messages())[-1].thread_reason
    assert len(await desk.outbox(OutboxKind.auto_ack)) == 1


async def test_305_a_tag_from_a_stranger_opens_a_separate_ticket_and_sends_nothing(
    desk: Desk,
) -> None:
    thread = await open_thread(desk)
    before = await desk.messages(thread.number)
    await desk.deliver(thread.rewrite(corpus_mail("305")))
    assert (await desk.fetch()).ingested == 1

    assert await desk.messages(thread.number) == before
    [_, other] = await desk.tickets()
    assert other["requester"]["email"] == "mallory@example.net"
    assert other["tags"] == ["unverified-follow-up"]
    assert "not a participant" in (await desk.mail_messages())[-1].thread_reason
    # Nothing at all goes to Mallory: no acknowledgement, no history, no portal link.
    assert all("mallory@example.net" not in row.recipients for row in await desk.outbox())
    assert len(await desk.outbox()) == 6  # 301's ack and the five replies, as before


async def test_307_a_spoofed_agent_reply_is_never_an_agent_action(desk: Desk) -> None:
    thread = await open_thread(desk)
    await add_agent(desk.runtime, "dana.agent@example.com", "Dana Agent", AgentRole.agent)
    before = await desk.messages(thread.number)
    # The notification id it answers, in our own format but with a signature nobody issued.
    forged = f"<kd-{thread.number}-n-0123456789.{'0' * 20}@example.com>".encode()
    raw = thread.rewrite(corpus_mail("307")).replace(
        b"<kd-notify-1234-7-deadbeef@example.com>", forged
    )
    await desk.deliver(raw)
    await desk.fetch()

    # Nothing reached alice's ticket or her mailbox: no agent reply, nothing forwarded.
    assert await desk.messages(thread.number) == before
    assert len(await desk.outbox()) == 6
    replies = [
        message
        for ticket in await desk.tickets()
        for message in await desk.messages(ticket["number"])
        if message["kind"] == "reply"
    ]
    assert [r["author"]["email"] for r in replies] == ["alice@keepdesk.test"] * 5
    # Kept as an external message an agent has to look at, marked not verified.
    [_, held] = await desk.tickets()
    assert held["requester"]["email"] == "dana.agent@example.com"
    assert held["tags"] == ["unverified-follow-up"]
    mail = (await desk.mail_messages())[-1]
    assert mail.sender_verified is False and "NOT verified" in mail.thread_reason


async def test_311_a_redelivery_of_the_root_creates_nothing(desk: Desk) -> None:
    thread = await open_thread(desk)
    stored = await desk.deliver(corpus_mail("311"))
    report = await desk.fetch()

    assert (report.ingested, report.duplicates) == (0, 1)
    assert [t["number"] for t in await desk.tickets()] == [thread.number]
    assert len(await desk.messages(thread.number)) == 6  # 301 and the five replies
    assert len(await desk.outbox(OutboxKind.auto_ack)) == 1
    receipt = (await desk.receipts())[-1]
    assert receipt.outcome == ReceiptOutcome.duplicate and receipt.imap_done
    desk.assert_raw_kept(receipt, stored)
    assert await desk.in_folder(PROCESSED_FOLDER) == 2


async def test_312_reply_to_never_changes_the_requester(desk: Desk) -> None:
    await open_thread(desk)
    await desk.deliver(corpus_mail("312"))
    assert (await desk.fetch()).ingested == 1
    [_, ticket] = await desk.tickets()
    assert ticket["requester"]["email"] == ALICE
    for row in await desk.outbox():
        assert row.recipients == [ALICE]  # never erik@ or mallory@ from Reply-To


async def test_323_a_dmarc_failure_is_appended_flagged_and_changes_nothing(desk: Desk) -> None:
    thread = await open_thread(desk)
    await desk.deliver(thread.rewrite(corpus_mail("323")))
    assert (await desk.fetch()).ingested == 1

    assert [t["number"] for t in await desk.tickets()] == [thread.number]
    last = (await desk.messages(thread.number))[-1]
    assert last["author"]["email"] == ALICE and "login link" in last["body_text"]
    mail = (await desk.mail_messages())[-1]
    assert mail.sender_verified is False
    assert "NOT verified" in mail.thread_reason and "DMARC fail" in mail.thread_reason
    # AC-13: no account changed, no link sent, no privileged status change.
    async with desk.runtime.db.session() as session:
        contacts = (await session.scalars(select(Contact.email))).all()
    assert contacts == [ALICE]
    assert (await desk.ticket(thread.number))["status"] not in ("resolved", "closed")
    assert len(await desk.outbox()) == 6


async def test_401_an_out_of_office_is_kept_on_the_ticket_and_moves_nothing(desk: Desk) -> None:
    thread = await open_thread(desk)
    await set_status(desk, thread.number, "pending")
    await desk.deliver(thread.rewrite(corpus_mail("401")))
    assert (await desk.fetch()).ingested == 1

    assert [t["number"] for t in await desk.tickets()] == [thread.number]
    assert (await desk.ticket(thread.number))["status"] == "pending"
    last = (await desk.messages(thread.number))[-1]
    assert last["author"]["email"] == "bob@example.org" and "out of the office" in last["body_text"]
    assert (await desk.mail_messages())[-1].automation == "auto_submitted"
    assert len(await desk.outbox()) == 6


async def test_408_a_permanent_bounce_fails_the_reply_it_names(desk: Desk) -> None:
    thread = await open_thread(desk)
    await desk.deliver(thread.rewrite(corpus_mail("408")))
    assert (await desk.fetch()).ingested == 1

    assert [t["number"] for t in await desk.tickets()] == [thread.number]
    replies = await desk.outbox(OutboxKind.reply)
    assert [r.status for r in replies].count(DeliveryStatus.failed) == 1
    assert replies[3].status == DeliveryStatus.failed and "5.1.1" in (replies[3].last_error or "")
    last = (await desk.messages(thread.number))[-1]
    assert last["kind"] == "system" and "nobody@example.net" in last["body_text"]
    # Never an answer to MAILER-DAEMON or a null return path.
    assert len(await desk.outbox()) == 6


async def test_409_a_delay_warning_fails_nothing(desk: Desk) -> None:
    thread = await open_thread(desk)
    await desk.deliver(thread.rewrite(corpus_mail("409")))
    assert (await desk.fetch()).ingested == 1

    assert [t["number"] for t in await desk.tickets()] == [thread.number]
    replies = await desk.outbox(OutboxKind.reply)
    assert DeliveryStatus.failed not in {r.status for r in replies}
    last = (await desk.messages(thread.number))[-1]
    assert last["kind"] == "system" and "delayed" in last["body_text"]
    assert len(await desk.outbox()) == 6


VENDOR_REQUEST = b"""From: Vendor Support <support@tickets.example.net>
To: Example Support <support@example.com>
Subject: Your printer order
Date: Tue, 03 Mar 2026 09:00:00 +0100
Message-ID: <order-411@tickets.example.net>
Content-Type: text/plain

Please confirm the delivery address for order 286612.
"""


async def test_411_a_foreign_helpdesk_ack_appends_and_is_never_acknowledged(desk: Desk) -> None:
    # The loop as it starts: the vendor writes, keepdesk acknowledges once, and the vendor's
    # helpdesk answers that acknowledgement with one of its own (no Auto-Submitted).
    await desk.deliver(VENDOR_REQUEST)
    await desk.fetch()
    [ticket] = await desk.tickets()
    [ack] = await desk.outbox(OutboxKind.auto_ack)
    raw = (
        corpus_mail("411")
        .replace(b"<kd-ack-117904@example.com>", ack.message_id_header.encode())
        .replace(b"[#117904]", f"[#{ticket['number']}]".encode())
    )
    await desk.deliver(raw)
    assert (await desk.fetch()).ingested == 1

    assert [t["number"] for t in await desk.tickets()] == [ticket["number"]]
    assert len(await desk.messages(ticket["number"])) == 2
    assert (await desk.mail_messages())[-1].automation == "foreign_helpdesk"
    assert [row.id for row in await desk.outbox()] == [ack.id]  # no second acknowledgement


async def test_309_and_its_twin_under_one_message_id_are_both_kept(desk: Desk) -> None:
    # 310, the twin, is not in the corpus folder: the same Message-ID over a different body.
    first = corpus_mail("309")
    twin = first.replace(b"Shipment notice 1", b"Shipment notice 2").replace(b"A-1", b"B-2")
    stored = [await desk.deliver(first), await desk.deliver(twin)]
    report = await desk.fetch()

    assert (report.ingested, report.duplicates) == (2, 0)
    assert [t["subject"] for t in await desk.tickets()] == [
        "Shipment notice 1",
        "Shipment notice 2",
    ]
    for receipt, raw in zip(await desk.receipts(), stored, strict=True):
        desk.assert_raw_kept(receipt, raw)
    assert stored[1] == as_stored(twin)
