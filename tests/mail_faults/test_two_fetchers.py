"""Two fetchers on one mailbox: of two `keepdesk worker` processes started together only one
fetches it, each mail becomes one ticket, and a mailbox whose lease holder died is taken over
once the lease runs out (RELIABILITY.md F17, AC-8)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from sqlalchemy import func, select

from keepdesk import leases
from keepdesk.mail.models import Mailbox, MailReceipt
from keepdesk.runtime import Runtime
from keepdesk.workers.mail_fetch import MAILBOX_LEASE, fetch_all
from tests.mail_faults.conftest import (
    add_box,
    assert_each_mail_once,
    committed,
    deliver,
    proxied_url,
    start_keepdesk,
)
from tests.mail_faults.proxy import ImapProxy
from tests.mail_fetch.conftest import ImapAccount
from tests.support.clock import FakeClock

WORKERS_DEADLINE = 60.0
# The workers would take a backup first thing; it has nothing to do with fetching.
NO_BACKUPS = {"KEEPDESK_BACKUP_EVERY_HOURS": "0"}


async def done_receipts(runtime: Runtime) -> int:
    async with runtime.db.session() as session:
        done = await session.scalar(
            select(func.count()).select_from(MailReceipt).where(MailReceipt.imap_done.is_(True))
        )
    return int(done or 0)


async def test_two_worker_processes_fetch_each_mail_once_and_only_one_holds_the_mailbox(
    runtime: Runtime, imap_account: ImapAccount, proxy: ImapProxy
) -> None:
    expected = await deliver(imap_account, "f17", 20)
    box = await add_box(
        runtime, address="support@example.com", imap_url=proxied_url(proxy, imap_account)
    )

    workers = await asyncio.gather(
        *(start_keepdesk(runtime.settings, "worker", env=NO_BACKUPS) for _ in range(2))
    )
    try:
        deadline = time.monotonic() + WORKERS_DEADLINE
        while await done_receipts(runtime) < 20:
            assert time.monotonic() < deadline, "the workers did not fetch the mail in time"
            assert all(w.returncode is None for w in workers), "a worker exited"
            await asyncio.sleep(0.05)
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()  # it waits in IDLE, holding the lease; a dead holder is the point
    for worker in workers:
        await worker.communicate()

    await assert_each_mail_once(runtime, imap_account, box, expected)
    # The one that took the lease opened the only IMAP session; the other never connected.
    assert proxy.connections == 1
    async with runtime.db.session() as session:
        lease = await session.get(leases.Lease, f"mailbox:{box.id}")
    assert lease is not None
    assert lease.holder.rpartition(":")[2] in {str(w.pid) for w in workers}


async def test_a_mailbox_whose_fetcher_died_is_taken_over_when_its_lease_runs_out(
    runtime: Runtime, imap_account: ImapAccount, clock: FakeClock
) -> None:
    expected = await deliver(imap_account, "f17lease", 3)
    box = await add_box(runtime, address="support@example.com", imap_url=imap_account.url)
    async with runtime.db.session(write=True) as session:
        taken = await leases.acquire(
            session,
            name=f"mailbox:{box.id}",
            holder="dead-host:4242",
            ttl=MAILBOX_LEASE,
            now=clock.now(),
        )
        await session.commit()
    assert taken  # and then its process was killed

    await fetch_all(runtime, holder="live-host:1", idle_seconds=0)
    assert (await committed(runtime, box.id)).receipts == {}, "fetched under another's lease"

    clock.advance(seconds=MAILBOX_LEASE.total_seconds() - 1)
    await fetch_all(runtime, holder="live-host:1", idle_seconds=0)
    assert (await committed(runtime, box.id)).receipts == {}, "taken over before the lease ended"

    clock.advance(seconds=2)
    await fetch_all(runtime, holder="live-host:1", idle_seconds=0)
    await assert_each_mail_once(runtime, imap_account, box, expected)
    async with runtime.db.session() as session:
        lease = await session.get(leases.Lease, f"mailbox:{box.id}")
        stored = await session.get(Mailbox, box.id)
    assert lease is not None and lease.holder == "live-host:1"
    assert lease.expires_at > clock.now() + MAILBOX_LEASE - timedelta(seconds=5)
    assert stored is not None and stored.last_error is None
