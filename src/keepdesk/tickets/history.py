"""A ticket's history and version: the event written for every change, the version bump, and
the status change that goes with its event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.db import collecting, json_type
from keepdesk.errors import Conflict
from keepdesk.tickets import states
from keepdesk.tickets.models import EventAction, Ticket, TicketEvent, TicketStatus

# session.info key: the events of a `batched_events` block, written at its end.
_BATCH = "keepdesk.history.batch"
# An empty `before` or `after` is SQL NULL, as in the events the ORM writes.
_INSERT_EVENTS = insert(cast(Table, TicketEvent.__table__)).values(
    before=bindparam("before", type_=json_type(none_as_null=True)),
    after=bindparam("after", type_=json_type(none_as_null=True)),
)


def record_event(
    session: AsyncSession,
    ticket: Ticket,
    *,
    action: EventAction,
    now: datetime,
    agent_id: int | None = None,
    contact_id: int | None = None,
    field: str | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    values = {
        "ticket_id": ticket.id,
        "created_at": now,
        "actor_agent_id": agent_id,
        "actor_contact_id": contact_id,
        "action": action,
        "field": field,
        "before": before,
        "after": after,
    }
    batch: list[dict[str, Any]] | None = session.info.get(_BATCH)
    if batch is None:
        session.add(TicketEvent(**values))
    else:
        batch.append(values)


@asynccontextmanager
async def batched_events(session: AsyncSession) -> AsyncIterator[None]:
    """The events recorded inside are written at its end, in one statement, instead of one
    INSERT each in the flushes along the way (the fetcher's batch of ten mails wrote 17). For
    a block that reads none of its own events back and opens no savepoint; after an error
    inside, its events are dropped with its transaction."""
    batch: list[dict[str, Any]]
    with collecting(session, _BATCH, []) as batch:
        yield
    if batch:
        # Core's executemany: one statement whatever is None (the ORM's bulk INSERT makes one
        # for each run of events that leave the same columns empty).
        await session.execute(_INSERT_EVENTS, batch)


def touch(ticket: Ticket, now: datetime) -> None:
    ticket.updated_at = now
    ticket.version = ticket.version + 1


def check_version(ticket: Ticket, expected: int | None) -> None:
    if expected is not None and expected != ticket.version:
        raise Conflict(
            f"ticket #{ticket.number} changed since version {expected} (it is at version "
            f"{ticket.version}); reload it and try again",
            code="version_conflict",
            current_version=ticket.version,
        )


def set_status(
    session: AsyncSession,
    ticket: Ticket,
    status: TicketStatus,
    *,
    now: datetime,
    agent_id: int | None = None,
    contact_id: int | None = None,
) -> None:
    if status == ticket.status:
        return
    if not states.can_transition(ticket.status, status):
        raise Conflict(states.why_not(ticket.status, status), code="invalid_transition")
    record_event(
        session,
        ticket,
        action=EventAction.changed,
        now=now,
        agent_id=agent_id,
        contact_id=contact_id,
        field="status",
        before=ticket.status.value,
        after=status.value,
    )
    ticket.status = status
    if status == TicketStatus.resolved:
        ticket.resolved_at = now
    elif status == TicketStatus.closed:
        ticket.closed_at = now
        ticket.resolved_at = ticket.resolved_at or now
    elif status in (TicketStatus.open, TicketStatus.pending):
        ticket.resolved_at = None
