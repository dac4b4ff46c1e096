"""Mail loops stay bounded (AC-14, corpus 407 and 411): at most one auto-ack per sender and
mailbox a day, and keepdesk's own acknowledgement arriving at another of its mailboxes is a loop
that creates nothing."""

from __future__ import annotations

import pytest

from keepdesk.mail import compose
from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.models import ReceiptOutcome
from keepdesk.outbox.models import OutboxKind, OutboxMessage
from tests.mail_corpus.conftest import Desk, Instance, add_mailbox, new_imap_account

pytestmark = pytest.mark.asyncio(loop_scope="module")


def request(n: int, sender: str = "carol@example.org") -> bytes:
    return (
        f"From: Carol Nguyen <{sender}>\nTo: support@example.com\n"
        f"Subject: Request {n}\nMessage-ID: <request-{n}@example.org>\n"
        f"Date: Tue, 03 Mar 2026 09:{n:02d}:00 +0100\n\nThis is request number {n}.\n"
    ).encode()


async def test_five_new_requests_in_a_day_get_one_acknowledgement(
    desk: Desk, instance: Instance
) -> None:
    for n in range(1, 6):
        await desk.deliver(request(n))
    assert (await desk.fetch()).ingested == 5
    assert len(await desk.tickets()) == 5
    [ack] = await desk.outbox(OutboxKind.auto_ack)
    assert ack.recipients == ["carol@example.org"]

    instance.clock.advance(hours=23)
    await desk.deliver(request(6))
    await desk.fetch()
    assert len(await desk.outbox(OutboxKind.auto_ack)) == 1  # still inside the 24 hours

    instance.clock.advance(hours=2)
    await desk.deliver(request(7))
    await desk.fetch()
    assert len(await desk.outbox(OutboxKind.auto_ack)) == 2  # a new day, one more


async def test_our_acknowledgement_reaching_another_of_our_mailboxes_is_a_loop(
    desk: Desk,
) -> None:
    # support@ acknowledges a request; the acknowledgement (say, through a forward) lands in
    # billing@, the second keepdesk mailbox, on its own IMAP account.
    await desk.deliver(request(1))
    await desk.fetch()
    [row] = await desk.outbox(OutboxKind.auto_ack)
    async with desk.runtime.db.session(write=True) as session:
        ack = await session.get(OutboxMessage, row.id)
        assert ack is not None
        rendered = await compose.render(
            session,
            row=ack,
            secret=desk.runtime.secret,
            blobs=desk.runtime.blobs,
            now=desk.runtime.clock.now(),
        )
        await session.commit()
    assert b"Auto-Submitted: auto-replied" in rendered.data

    billing_imap = new_imap_account(desk.imap.server)
    billing = await add_mailbox(desk.runtime, "billing@example.com", billing_imap)
    await billing_imap.append(rendered.data)
    report = await fetch_once(desk.runtime, billing.id)

    assert (report.fetched, report.ingested, report.errors) == (1, 0, [])
    assert len(await desk.tickets()) == 1  # only carol's request
    assert [r.id for r in await desk.outbox()] == [row.id]  # billing@ answered nothing
    receipt = (await desk.receipts())[-1]
    assert receipt.mailbox_id == billing.id and receipt.outcome == ReceiptOutcome.loop
    assert await billing_imap.count("INBOX") == 0
