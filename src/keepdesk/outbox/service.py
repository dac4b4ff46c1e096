"""Enqueueing outbound mail in the caller's transaction, and the state machine of its delivery.

queued ──claim──> sending ──250──> sent
                     │──4xx / network──> retrying ──claim──> sending …   (for days)
                     │──5xx──> failed                                    (final, reason kept)
                     └──dropped after DATA / sender died──> uncertain ──claim──> sending …
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.outbox.models import DeliveryStatus, OutboxKind, OutboxMessage

# AC-15: temporary failures are retried for at least four days before the row is given up.
RETRY_FOR = timedelta(days=4)
# A send that may have gone through is retried (same Message-ID) only this many times.
MAX_UNCERTAIN_ATTEMPTS = 3
# A claimed row whose sender has not reported back by then is considered abandoned.
CLAIM_TTL = timedelta(minutes=5)
_BACKOFF = (60, 300, 900, 1800, 3600, 7200, 14400, 21600)

PENDING = (
    DeliveryStatus.queued,
    DeliveryStatus.retrying,
    DeliveryStatus.uncertain,
    DeliveryStatus.sending,
)


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=_BACKOFF[min(attempts, len(_BACKOFF)) - 1] if attempts else 0)


async def enqueue(
    session: AsyncSession,
    *,
    kind: OutboxKind,
    message_id_header: str,
    recipients: Sequence[str],
    now: datetime,
    mailbox_id: int | None = None,
    ticket_id: int | None = None,
    ticket_message_id: int | None = None,
    rate_key: str | None = None,
) -> OutboxMessage:
    row = OutboxMessage(
        kind=kind,
        mailbox_id=mailbox_id,
        ticket_id=ticket_id,
        ticket_message_id=ticket_message_id,
        message_id_header=message_id_header,
        recipients=list(recipients),
        status=DeliveryStatus.queued,
        attempts=0,
        next_attempt_at=now,
        rate_key=rate_key,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def count_recent(session: AsyncSession, *, rate_key: str, since: datetime) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.rate_key == rate_key, OutboxMessage.created_at >= since)
        )
        or 0
    )


async def claim_due(
    session: AsyncSession, *, holder: str, now: datetime, limit: int = 10
) -> list[OutboxMessage]:
    """Take up to `limit` rows that are due, oldest first; the caller commits at once.

    On PostgreSQL `FOR UPDATE SKIP LOCKED` lets several senders claim side by side; SQLite
    serialises writers anyway. A row left in `sending` by a sender that died counts as
    uncertain: it may have been delivered, so its retry keeps the same Message-ID.
    """
    query = (
        select(OutboxMessage)
        .where(
            or_(
                OutboxMessage.status.in_(
                    [DeliveryStatus.queued, DeliveryStatus.retrying, DeliveryStatus.uncertain]
                )
                & (OutboxMessage.next_attempt_at <= now),
                (OutboxMessage.status == DeliveryStatus.sending)
                & (OutboxMessage.claimed_until < now),
            )
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list((await session.scalars(query)).all())
    for row in rows:
        if row.status == DeliveryStatus.sending:
            # Its sender vanished mid-send (crash between DATA and recording the answer).
            row.last_error = "the sender stopped during delivery; delivery is uncertain"
            if _uncertain_exhausted(row):
                row.status = DeliveryStatus.failed
                continue
        row.status = DeliveryStatus.sending
        row.claimed_by = holder
        row.claimed_until = now + CLAIM_TTL
        row.attempts += 1
    await session.flush()
    return [r for r in rows if r.status == DeliveryStatus.sending]


def renew_claim(row: OutboxMessage, *, now: datetime) -> None:
    """Push a claim's expiry out again just before its send, which may come late in a batch."""
    row.claimed_until = now + CLAIM_TTL


def _uncertain_exhausted(row: OutboxMessage) -> bool:
    return row.attempts >= MAX_UNCERTAIN_ATTEMPTS


def _release(row: OutboxMessage) -> None:
    row.claimed_by = None
    row.claimed_until = None


def mark_sent(row: OutboxMessage, *, now: datetime, code: int | None = 250) -> None:
    row.status = DeliveryStatus.sent
    row.sent_at = now
    row.last_smtp_code = code
    row.last_error = None
    _release(row)


def mark_temporary_failure(
    row: OutboxMessage, *, now: datetime, error: str, code: int | None = None
) -> None:
    row.last_error = error[:2000]
    row.last_smtp_code = code
    _release(row)
    if now - row.created_at >= RETRY_FOR:
        row.status = DeliveryStatus.failed
        row.last_error = f"gave up after {RETRY_FOR.days} days of temporary failures: {error}"
        return
    row.status = DeliveryStatus.retrying
    row.next_attempt_at = now + backoff(row.attempts)


def mark_uncertain(row: OutboxMessage, *, now: datetime, error: str) -> None:
    row.last_error = f"delivery uncertain: {error}"[:2000]
    _release(row)
    if _uncertain_exhausted(row):
        row.status = DeliveryStatus.failed
        return
    row.status = DeliveryStatus.uncertain
    row.next_attempt_at = now + backoff(row.attempts)


def mark_failed(row: OutboxMessage, *, error: str, code: int | None = None) -> None:
    row.status = DeliveryStatus.failed
    row.last_error = error[:2000]
    row.last_smtp_code = code
    _release(row)


@dataclass(frozen=True)
class Delivery:
    status: DeliveryStatus
    error: str | None
    attempts: int


async def deliveries_for_messages(
    session: AsyncSession, message_ids: Iterable[int]
) -> dict[int, Delivery]:
    ids = list(message_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(
            OutboxMessage.ticket_message_id,
            OutboxMessage.status,
            OutboxMessage.last_error,
            OutboxMessage.attempts,
        ).where(OutboxMessage.ticket_message_id.in_(ids))
    )
    return {
        mid: Delivery(status, error, attempts)
        for mid, status, error, attempts in rows
        if mid is not None
    }


async def find_by_message_id_header(session: AsyncSession, header: str) -> OutboxMessage | None:
    return await session.scalar(
        select(OutboxMessage).where(OutboxMessage.message_id_header == header)
    )


async def undelivered_counts(session: AsyncSession) -> dict[DeliveryStatus, int]:
    rows = await session.execute(
        select(OutboxMessage.status, func.count())
        .where(OutboxMessage.status != DeliveryStatus.sent)
        .group_by(OutboxMessage.status)
    )
    return {status: int(n) for status, n in rows}
