"""The IMAP connection breaks while a body is on its way: cut off mid-literal, a `* BYE`, a
server that stops answering, or a literal shorter than the size the server announced. Nothing
partial is committed, nothing is flagged, and the mail comes in once on a later pass
(RELIABILITY.md F2, F3, AC-1, AC-2)."""

from __future__ import annotations

import dataclasses
import time

import pytest
from sqlalchemy import select

from keepdesk.mail.fetcher import FETCH_ATTEMPTS, fetch_once
from keepdesk.mail.models import Mailbox, ProcessedAction, QuarantinedMail
from keepdesk.runtime import Runtime
from keepdesk.workers.mail_fetch import fetch_all
from tests.mail_faults.conftest import (
    add_box,
    assert_each_mail_once,
    assert_nothing_lost_or_doubled,
    committed,
    deliver,
    proxied_url,
    server_mail,
)
from tests.mail_faults.proxy import ImapProxy, Mode
from tests.mail_fetch.conftest import ImapAccount
from tests.support.clock import FakeClock

# A timeout far beyond what a test may take: a broken connection must be noticed at once.
PATIENT = 30.0
# Long enough for a loaded machine to answer every healthy command in time.
STALL_TIMEOUT = 2.0


def with_imap_timeout(runtime: Runtime, seconds: float) -> Runtime:
    settings = runtime.settings.model_copy(update={"mail_imap_timeout_seconds": seconds})
    return dataclasses.replace(runtime, settings=settings)


@pytest.mark.parametrize("fault", ["cut", "bye", "stall"])
async def test_a_connection_lost_mid_body_commits_nothing_and_the_next_pass_takes_it_once(
    runtime: Runtime, imap_account: ImapAccount, proxy: ImapProxy, fault: Mode
) -> None:
    expected = await deliver(imap_account, f"f2{fault}", 3)
    box = await add_box(
        runtime, address="support@example.com", imap_url=proxied_url(proxy, imap_account)
    )
    # A stalled server is only noticed by the read timeout; a closed one must be noticed at once.
    fetcher = with_imap_timeout(runtime, STALL_TIMEOUT if fault == "stall" else PATIENT)
    proxy.set(fault, first=2, times=1)

    started = time.monotonic()
    report = await fetch_once(fetcher, box.id)
    assert time.monotonic() - started < PATIENT / 3, "the broken connection went unnoticed"

    # The three bodies come in one UID FETCH, broken in the second: the answer never
    # completed, so no mail was fetched whole, nothing is committed and nothing is done on
    # the server; the next pass takes all three.
    assert report.errors != [] and report.ingested == 0
    db, server = await assert_nothing_lost_or_doubled(runtime, imap_account, box.id, expected)
    assert db.receipts == {}, "a mail of the broken answer was committed"
    untouched = [h.message_id for h in server if h.folder == "INBOX" and not h.flags]
    assert sorted(untouched) == expected
    async with runtime.db.session() as session:
        stored = await session.get(Mailbox, box.id)
    assert stored is not None and stored.last_error and stored.last_uid == 0

    again = await fetch_once(fetcher, box.id)
    assert again.errors == [] and again.ingested == 3
    await assert_each_mail_once(runtime, imap_account, box, expected)


async def test_the_worker_unit_returns_normally_when_the_server_hangs_up(
    runtime: Runtime, imap_account: ImapAccount, proxy: ImapProxy, clock: FakeClock
) -> None:
    expected = await deliver(imap_account, "f2loop", 2)
    box = await add_box(
        runtime, address="support@example.com", imap_url=proxied_url(proxy, imap_account)
    )
    proxy.set("cut", times=1)
    await fetch_all(runtime, holder="worker-a", idle_seconds=0)  # does not raise
    db, _ = await assert_nothing_lost_or_doubled(runtime, imap_account, box.id, expected)
    assert db.receipts == {}
    # The unit backs off after a failure: right away it does not even try.
    await fetch_all(runtime, holder="worker-a", idle_seconds=0)
    assert (await assert_nothing_lost_or_doubled(runtime, imap_account, box.id, expected))[
        0
    ].receipts == {}
    clock.advance(seconds=10)
    await fetch_all(runtime, holder="worker-a", idle_seconds=0)
    await assert_each_mail_once(runtime, imap_account, box, expected)


@pytest.mark.parametrize("short_to", [0, 200], ids=["empty", "half"])
async def test_a_body_shorter_than_announced_is_retried_then_quarantined_never_deleted(
    runtime: Runtime, imap_account: ImapAccount, proxy: ImapProxy, short_to: int
) -> None:
    expected = await deliver(imap_account, f"f3{short_to}", 2)
    box = await add_box(
        runtime,
        address="support@example.com",
        imap_url=proxied_url(proxy, imap_account),
        action=ProcessedAction.delete,
    )
    proxy.short_to = short_to
    proxy.set("short", first=1, times=FETCH_ATTEMPTS, uid=1)

    report = await fetch_once(runtime, box.id)
    assert report.errors == []
    assert (report.quarantined, report.ingested) == (1, 1)
    assert proxy.disturbed == FETCH_ATTEMPTS  # the first mail was fetched again each time
    async with runtime.db.session() as session:
        held = (await session.scalars(select(QuarantinedMail))).one()
    assert held.reason == "fetch_incomplete" and "announced" in held.detail
    assert runtime.blobs.exists(held.blob_key)
    db = await committed(runtime, box.id)
    assert (db.messages[expected[0]], db.tickets[expected[0]]) == (0, 0)
    assert (db.messages[expected[1]], db.tickets[expected[1]]) == (1, 1)
    assert len([r for rs in db.receipts.values() for r in rs if r.imap_done]) == 2
    server = await server_mail(imap_account)
    # Deleting is for mail that was ingested; the incomplete one is kept, in the quarantine.
    assert [(h.folder.replace("/", "."), h.message_id) for h in server] == [
        ("keepdesk.quarantine", expected[0])
    ]


async def test_a_short_body_that_arrives_whole_on_the_next_try_is_ingested_once(
    runtime: Runtime, imap_account: ImapAccount, proxy: ImapProxy
) -> None:
    expected = await deliver(imap_account, "f3retry", 2)
    box = await add_box(
        runtime, address="support@example.com", imap_url=proxied_url(proxy, imap_account)
    )
    proxy.short_to = 100
    proxy.set("short", first=1, times=FETCH_ATTEMPTS - 1, uid=1)
    report = await fetch_once(runtime, box.id)
    assert report.errors == [] and (report.ingested, report.quarantined) == (2, 0)
    await assert_each_mail_once(runtime, imap_account, box, expected)
