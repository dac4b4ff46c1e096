"""Housekeeping units: closing long-resolved tickets, forgetting ended sessions."""

from __future__ import annotations

import logging
from datetime import timedelta

from keepdesk.accounts import auth
from keepdesk.runtime import Runtime
from keepdesk.tickets import service as tickets

log = logging.getLogger("keepdesk.workers.housekeeping")


async def close_resolved_tickets(runtime: Runtime) -> None:
    days = runtime.settings.tickets_auto_close_days
    if days == 0:
        return
    async with runtime.db.session(write=True) as session:
        closed = await tickets.close_resolved_tickets(
            session, now=runtime.clock.now(), resolved_before=runtime.clock.now() - timedelta(days)
        )
        await session.commit()
    if closed:
        log.info("closed %d tickets resolved more than %d days ago", closed, days)


async def purge_sessions(runtime: Runtime) -> None:
    async with runtime.db.session(write=True) as session:
        await auth.purge_ended_sessions(session, now=runtime.clock.now())
        await session.commit()
