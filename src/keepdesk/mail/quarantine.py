"""Quarantined mail: listing it for admins, re-processing it through the same pipeline, and
discarding it. Its raw bytes stay in the blob store either way; nothing is ever dropped."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts.access import Actor, require_admin
from keepdesk.audit import service as audit
from keepdesk.errors import Conflict, NotFound
from keepdesk.mail import ingest as ingesting
from keepdesk.mail.limits import MailLimits
from keepdesk.mail.models import Mailbox, QuarantinedMail, QuarantineStatus
from keepdesk.pagination import Page, decode_cursor, encode_cursor
from keepdesk.runtime import Runtime


def download_headers(item: QuarantinedMail) -> dict[str, str]:
    """A download, never a page: the raw mail may be hostile HTML or a script in disguise."""
    return {
        "Content-Disposition": f'attachment; filename="quarantine-{item.id}.eml"',
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "X-Content-Type-Options": "nosniff",
    }


def _check(actor: Actor | None) -> None:
    # None is the command line: whoever runs it administers the instance already.
    if actor is not None:
        require_admin(actor)


def _by(actor: Actor | None) -> audit.AuditActor:
    return actor.audit if actor is not None else audit.COMMAND_LINE


async def list_quarantine(
    session: AsyncSession,
    *,
    actor: Actor | None,
    status: QuarantineStatus | None,
    cursor: str | None,
    limit: int,
) -> Page[QuarantinedMail]:
    _check(actor)
    query = select(QuarantinedMail).order_by(QuarantinedMail.id.desc()).limit(limit + 1)
    if status is not None:
        query = query.where(QuarantinedMail.status == status)
    if cursor:
        _, before = decode_cursor(cursor, kind="quarantine", size=2)
        query = query.where(QuarantinedMail.id < int(before))
    items = list((await session.scalars(query)).all())
    more = len(items) > limit
    items = items[:limit]
    return Page(items, encode_cursor("quarantine", items[-1].id) if more else None)


async def get_quarantined(
    session: AsyncSession, *, actor: Actor | None, item_id: int
) -> QuarantinedMail:
    _check(actor)
    item = await session.get(QuarantinedMail, item_id)
    if item is None:
        raise NotFound(f"no quarantined mail with id {item_id}")
    return item


async def reprocess(
    session: AsyncSession,
    *,
    actor: Actor | None,
    item_id: int,
    runtime: Runtime,
    now: datetime,
    limits: MailLimits | None = None,
) -> ingesting.Ingested:
    """Run the held mail through the pipeline again (after a fix or a raised limit). If it is
    quarantined again, the new record replaces this one in the list."""
    item = await get_quarantined(session, actor=actor, item_id=item_id)
    if item.status != QuarantineStatus.held:
        raise Conflict(f"this mail was {item.status.value} already", code="not_held")
    raw = runtime.blobs.get(item.blob_key)
    mailbox = await session.get(Mailbox, item.mailbox_id) if item.mailbox_id else None
    result = await ingesting.ingest(
        session,
        runtime=runtime,
        mailbox=mailbox,
        raw=raw,
        blob_key=item.blob_key,
        now=now,
        limits=limits,
    )
    item.status = QuarantineStatus.reprocessed
    item.resolved_at = now
    item.resolved_by_agent_id = actor.agent_id if actor else None
    await audit.record(
        session,
        actor=_by(actor),
        action="quarantine.reprocessed",
        object_type="quarantine",
        object_id=item.id,
        at=now,
        data={"outcome": result.outcome.value, "ticket": result.ticket_number},
    )
    await session.flush()
    return result


async def discard(
    session: AsyncSession, *, actor: Actor | None, item_id: int, now: datetime
) -> QuarantinedMail:
    item = await get_quarantined(session, actor=actor, item_id=item_id)
    if item.status != QuarantineStatus.held:
        raise Conflict(f"this mail was {item.status.value} already", code="not_held")
    item.status = QuarantineStatus.discarded
    item.resolved_at = now
    item.resolved_by_agent_id = actor.agent_id if actor else None
    await audit.record(
        session,
        actor=_by(actor),
        action="quarantine.discarded",
        object_type="quarantine",
        object_id=item.id,
        at=now,
        data={"reason": item.reason},
    )
    await session.flush()
    return item
