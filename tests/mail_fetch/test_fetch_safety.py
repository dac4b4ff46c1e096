"""Fetching never loses or doubles mail: re-deliveries, reused Message-IDs, a UIDVALIDITY
change, two fetchers at once, oversized mail, and IDLE waking up for new mail."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from keepdesk.mail import ingest as ingest_module
from keepdesk.mail import parsing
from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.models import Mailbox, MailReceipt, QuarantinedMail, ReceiptOutcome
from keepdesk.mail.parsing import ParsedMail, Rejected
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import Message, Tag, Ticket
from keepdesk.workers.mail_fetch import fetch_all
from tests.mail_fetch.conftest import ImapAccount


def mail(
    n: int,
    *,
    message_id: str | None = None,
    body: str | None = None,
    sender: str = "alice@example.com",
    extra: str = "",
) -> bytes:
    mid = message_id or f"<m{n}@example.com>"
    return (
        f"{extra}From: Customer {n} <{sender}>\nTo: support@example.com\n"
        f"Subject: Request {n}\nMessage-ID: {mid}\n"
        f"Date: Mon, 02 Mar 2026 09:{n % 60:02d}:00 +0000\n\n"
        f"{body or f'Body of request {n}.'}\n"
    ).encode()


async def counts(runtime: Runtime) -> tuple[int, int]:
    async with runtime.db.session() as session:
        tickets = await session.scalar(select(func.count()).select_from(Ticket))
        messages = await session.scalar(select(func.count()).select_from(Message))
        return int(tickets or 0), int(messages or 0)


async def test_a_redelivery_through_another_mx_creates_nothing_new(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    await imap_account.append(mail(1))
    await imap_account.append(mail(1, extra="Received: from backup-mx by mx; Mon, 2 Mar 2026\n"))
    report = await fetch_once(runtime, mailbox.id)
    assert (report.ingested, report.duplicates) == (1, 1)
    assert await counts(runtime) == (1, 1)


async def test_different_mail_under_one_message_id_is_all_kept(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    await imap_account.append(mail(1, message_id="<reused@example.com>", body="First."))
    await imap_account.append(mail(2, message_id="<reused@example.com>", body="Second."))
    report = await fetch_once(runtime, mailbox.id)
    assert report.ingested == 2
    assert (await counts(runtime))[1] == 2


async def test_mail_without_message_id_is_not_duplicated_on_refetch(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    async with runtime.db.session(write=True) as session:
        box = await session.get(Mailbox, mailbox.id)
        assert box is not None
        box.processed_action = box.processed_action.flag  # mail stays in the INBOX
        await session.commit()
    await imap_account.append(mail(1).replace(b"Message-ID: <m1@example.com>\n", b""))
    assert (await fetch_once(runtime, mailbox.id)).ingested == 1
    # The cursor is lost (a restored database, say): the same UID is fetched again.
    async with runtime.db.session(write=True) as session:
        box = await session.get(Mailbox, mailbox.id)
        assert box is not None
        box.last_uid = 0
        await session.commit()
    again = await fetch_once(runtime, mailbox.id)
    assert again.fetched == 0 and again.errors == []
    assert await counts(runtime) == (1, 1)


async def test_uidvalidity_change_rescans_without_duplicates(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    async with runtime.db.session(write=True) as session:
        box = await session.get(Mailbox, mailbox.id)
        assert box is not None
        box.processed_action = box.processed_action.flag  # mail stays in the INBOX
        await session.commit()
    await imap_account.append(mail(1))
    await imap_account.append(mail(2))
    first = await fetch_once(runtime, mailbox.id)
    assert first.ingested == 2

    imap_account.renumber()
    await imap_account.append(mail(3))
    await imap_account.append(mail(4))

    second = await fetch_once(runtime, mailbox.id)
    assert (second.ingested, second.duplicates) == (2, 2)
    assert await counts(runtime) == (4, 4)
    async with runtime.db.session() as session:
        box = await session.get(Mailbox, mailbox.id)
        assert box is not None and box.rescan_required is False
        assert box.alert is not None and "rescan" in box.alert
        pending = await session.scalar(
            select(func.count()).select_from(MailReceipt).where(MailReceipt.imap_done.is_(False))
        )
    # Nothing was flagged during the rescan; the next pass finishes the server actions.
    assert pending == 4
    await fetch_once(runtime, mailbox.id)
    flags = await imap_account.flags()
    assert len(flags) == 4 and all(b"\\Seen" in f for f in flags)


async def test_two_fetchers_on_one_mailbox_ingest_each_mail_once(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    for n in range(1, 11):
        await imap_account.append(mail(n, sender=f"c{n}@example.com"))
    await asyncio.gather(
        fetch_all(runtime, holder="instance-a", idle_seconds=0),
        fetch_all(runtime, holder="instance-b", idle_seconds=0),
    )
    assert await counts(runtime) == (10, 10)
    assert await imap_account.count("INBOX") == 0


async def test_oversized_mail_is_quarantined_before_download(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount, tmp_path: Path
) -> None:
    await imap_account.append(mail(1, body="x" * 5000))
    await imap_account.append(mail(2))
    from keepdesk.mail.limits import MailLimits

    report = await fetch_once(runtime, mailbox.id, limits=MailLimits(max_bytes=2048))
    assert (report.quarantined, report.ingested) == (1, 1)
    async with runtime.db.session() as session:
        held = (await session.scalars(select(QuarantinedMail))).one()
        receipt = await session.scalar(
            select(MailReceipt).where(MailReceipt.outcome == ReceiptOutcome.quarantined)
        )
    assert held.reason == "too_large" and held.size < 2048  # only the header block was read
    assert receipt is not None and receipt.imap_done
    assert await imap_account.count("INBOX") == 0


async def test_idle_wakes_up_for_new_mail(
    runtime: Runtime, mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    async def deliver_later() -> None:
        # Wait until the fetcher has passed once (its cursor is set), then deliver.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            async with runtime.db.session() as session:
                box = await session.get(Mailbox, mailbox.id)
                if box is not None and box.uidvalidity is not None:
                    break
            await asyncio.sleep(0.05)
        await imap_account.append(mail(7))

    started = time.monotonic()
    report, _ = await asyncio.gather(
        fetch_once(runtime, mailbox.id, idle_seconds=30), deliver_later()
    )
    assert report.ingested == 1
    # IDLE returned on the server's EXISTS, long before the 30 s were up.
    assert time.monotonic() - started < 15


async def test_a_reply_is_not_kept_waiting_while_the_fetcher_parses_a_mail(
    runtime: Runtime,
    mailbox: Mailbox,
    imap_account: ImapAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fetcher parses before its write transaction: on SQLite, with one writer at a time,
    an agent's reply written meanwhile goes through instead of waiting for the parse. Parsed in
    a thread of the fetcher's own process (`mail_parse_processes` 0), where the hook below
    runs; in a worker process the parse holds nothing of this one."""
    loop = asyncio.get_running_loop()
    written: list[str] = []

    async def agents_write() -> None:
        async with runtime.db.session(write=True) as session:
            await session.execute(insert(Tag).values(name="written-during-parse"))
            await session.commit()
        written.append("reply")

    real_parse = parsing.parse_mail
    kept_waiting: list[str] = []

    def parse_while_someone_writes(raw: bytes, **kwargs: Any) -> ParsedMail | Rejected:
        if not written and not kept_waiting:
            # In the parser's thread: the write should be done while the parse still runs.
            reply = asyncio.run_coroutine_threadsafe(agents_write(), loop)
            try:
                reply.result(timeout=5)
            except TimeoutError:
                kept_waiting.append("the reply waited for the fetcher's transaction")
        return real_parse(raw, **kwargs)

    monkeypatch.setattr(ingest_module, "parse_mail", parse_while_someone_writes)
    in_threads = dataclasses.replace(
        runtime, settings=runtime.settings.model_copy(update={"mail_parse_processes": 0})
    )
    await imap_account.append(mail(1))
    report = await fetch_once(in_threads, mailbox.id)
    assert kept_waiting == []
    assert (report.ingested, report.errors, written) == (1, [], ["reply"])
    assert await counts(runtime) == (1, 1)
