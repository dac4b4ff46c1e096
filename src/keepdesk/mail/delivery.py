"""The sender: takes due outbox rows and delivers each over SMTP, recording what happened.

    claim, commit ─CP8─> render or load the bytes, commit ─> SMTP, no transaction open
        ─CP9 (message sent, answer not read)─ ─CP10 (250 read)─> record the outcome, commit

Each step is its own short transaction, so a slow mail server never holds a database lock. One
row's failure never stops the others. A sender that dies mid-send leaves its row `sending`; once
the claim expires it is taken again as uncertain and re-sent with the same Message-ID.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.faults import crash_point
from keepdesk.mail import compose, smtp
from keepdesk.mail.compose import Rendered
from keepdesk.mail.smtp import Outcome, SendResult
from keepdesk.outbox import service as outbox
from keepdesk.outbox.models import DeliveryStatus, OutboxMessage
from keepdesk.runtime import Runtime

log = logging.getLogger("keepdesk.mail.delivery")


BATCH = 20
# One unit drains a backlog batch after batch, up to this many, before the runner's next turn.
MAX_BATCHES_PER_UNIT = 50


async def send_due_task(runtime: Runtime, *, holder: str) -> None:
    """The registered unit (see workers/registry.py): keeps sending while batches come back
    full, so a burst of replies drains at the server's pace, not 20 every 5 seconds."""
    for _ in range(MAX_BATCHES_PER_UNIT):
        if await send_due(runtime, holder=holder) < BATCH:
            return


async def send_due(runtime: Runtime, *, holder: str, limit: int = BATCH) -> int:
    """Deliver up to `limit` due rows, oldest first, one after another; returns how many were
    taken. `holder` names this sender in the claims (one name per process)."""
    async with runtime.db.session(write=True) as session:
        rows = await outbox.claim_due(session, holder=holder, now=runtime.clock.now(), limit=limit)
        row_ids = [row.id for row in rows]
        await session.commit()
    crash_point("CP8")
    for row_id in row_ids:
        try:
            await _deliver(runtime, row_id, holder=holder)
        except Exception:
            # The row stays `sending` and is taken again once its claim expires.
            log.exception("delivering outbox row %d failed", row_id)
    return len(row_ids)


async def _deliver(runtime: Runtime, row_id: int, *, holder: str) -> None:
    prepared = await _prepare(runtime, row_id, holder=holder)
    if prepared is None:
        return
    try:
        result = await smtp.send(
            prepared.server,
            envelope_from=prepared.envelope_from,
            recipients=prepared.recipients,
            data=prepared.data,
            timeout=runtime.settings.mail_send_timeout_seconds,
        )
    except Exception as exc:
        # A bug or a refused fault hook: whether anything left is unknown, so assume it may have.
        log.exception("sending outbox row %d failed unexpectedly", row_id)
        result = SendResult(Outcome.uncertain, f"keepdesk failed while sending: {exc!r}")
    if result.outcome == Outcome.sent:
        crash_point("CP10")
    async with runtime.db.session(write=True) as session:
        row = await _claimed(session, row_id, holder=holder)
        if row is None:
            log.warning(
                "outbox row %d was taken over while it was sent (%s)", row_id, result.outcome
            )
            return
        _record(row, result, runtime=runtime)
        await session.commit()
    _log(row_id, result)


async def _prepare(runtime: Runtime, row_id: int, *, holder: str) -> Rendered | None:
    """The bytes to send, rendered at the first attempt; None when there is nothing to send."""
    now = runtime.clock.now()
    async with runtime.db.session(write=True) as session:
        row = await _claimed(session, row_id, holder=holder)
        if row is None:
            return None
        try:
            rendered = await compose.render(
                session, row=row, secret=runtime.secret, blobs=runtime.blobs, now=now
            )
        except compose.Unsendable as exc:
            failure, is_final = str(exc), True
        except compose.NotYetSendable as exc:
            failure, is_final = str(exc), False
        except Exception as exc:
            # Nothing left keepdesk (a stored secret that no longer opens, a blob store that
            # cannot be written): try again later, with the reason where agents see it.
            log.exception("preparing outbox row %d failed", row_id)
            failure, is_final = f"keepdesk could not prepare the mail: {exc}", False
        else:
            outbox.renew_claim(row, now=now)
            await session.commit()
            return rendered
    # Nothing of the failed attempt is kept (the session rolled back); the reason goes on the row.
    async with runtime.db.session(write=True) as session:
        row = await _claimed(session, row_id, holder=holder)
        if row is not None:
            if is_final:
                outbox.mark_failed(row, error=failure)
            else:
                outbox.mark_temporary_failure(row, now=now, error=failure)
            await session.commit()
    log.warning("outbox row %d was not sent: %s", row_id, failure)
    return None


async def _claimed(session: AsyncSession, row_id: int, *, holder: str) -> OutboxMessage | None:
    """The row, locked, when it is still ours to send; None when another sender took it over
    after our claim expired, or it was settled meanwhile (a bounce can fail it)."""
    query = select(OutboxMessage).where(OutboxMessage.id == row_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = await session.scalar(query)
    if row is None or row.status != DeliveryStatus.sending or row.claimed_by != holder:
        return None
    return row


def _record(row: OutboxMessage, result: SendResult, *, runtime: Runtime) -> None:
    now = runtime.clock.now()
    match result.outcome:
        case Outcome.sent:
            outbox.mark_sent(row, now=now, code=result.code)
        case Outcome.temporary:
            outbox.mark_temporary_failure(row, now=now, error=result.detail, code=result.code)
        case Outcome.uncertain:
            outbox.mark_uncertain(row, now=now, error=result.detail)
        case Outcome.permanent:
            outbox.mark_failed(row, error=result.detail, code=result.code)


def _log(row_id: int, result: SendResult) -> None:
    if result.outcome == Outcome.sent:
        log.info("outbox row %d sent: %s", row_id, result.detail)
    else:
        log.warning("outbox row %d %s: %s", row_id, result.outcome, result.detail)
