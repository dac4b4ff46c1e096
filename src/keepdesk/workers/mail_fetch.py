"""The mail-fetch unit: every active mailbox, each under its own lease (AC-8).

A process keeps a mailbox's lease by renewing it every pass; if it dies, another instance takes
the mailbox over once the lease expires.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select

from keepdesk.mail.fetcher import fetch_under_lease
from keepdesk.mail.models import Mailbox
from keepdesk.runtime import Runtime, TaskState

log = logging.getLogger("keepdesk.workers.mail_fetch")

# Longer than a pass plus an IDLE wait, so a live holder never loses it mid-pass.
MAILBOX_LEASE = timedelta(minutes=5)
MAX_BACKOFF_SECONDS = 300.0


async def fetch_all(runtime: Runtime, *, holder: str, idle_seconds: float = 25) -> None:
    """Every active mailbox at once, each waiting on its server (IDLE) between passes."""
    async with runtime.db.session() as session:
        ids = (
            await session.scalars(
                select(Mailbox.id).where(Mailbox.is_active.is_(True)).order_by(Mailbox.id)
            )
        ).all()
    await asyncio.gather(*(_cycle(runtime, m, holder, idle_seconds) for m in ids))


async def _cycle(runtime: Runtime, mailbox_id: int, holder: str, idle_seconds: float) -> None:
    key = f"mailbox:{mailbox_id}"
    state = runtime.tasks.setdefault(key, TaskState())
    if state.retry_at is not None and runtime.clock.now() < state.retry_at:
        return  # backing off after failures (F2, F7): the server or database is down
    report = await fetch_under_lease(
        runtime,
        mailbox_id,
        holder=holder,
        ttl=MAILBOX_LEASE,
        release=False,
        idle_seconds=idle_seconds,
    )
    if report is None:
        return  # another instance has this mailbox
    now = runtime.clock.now()
    if report.errors:
        state.failures_in_a_row += 1
        state.last_failure_at, state.last_error = now, report.errors[-1][:1000]
        delay = min(MAX_BACKOFF_SECONDS, 2.0**state.failures_in_a_row)
        state.retry_at = now + timedelta(seconds=delay)
        log.warning(
            "%s: fetching failed (%d in a row), next try in %.0fs: %s",
            report.mailbox,
            state.failures_in_a_row,
            delay,
            state.last_error,
        )
        return
    state.failures_in_a_row, state.retry_at, state.last_success_at = 0, None, now
    if report.fetched:
        log.info(
            "%s: %d fetched, %d new, %d duplicates, %d quarantined",
            report.mailbox,
            report.fetched,
            report.ingested,
            report.duplicates,
            report.quarantined,
        )
