"""A ticket's history and version: the event written for every change, the version bump, and
the status change that goes with its event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.errors import Conflict
from keepdesk.tickets import states
from keepdesk.tickets.models import EventAction, Ticket, TicketEvent, TicketStatus


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
    session.add(
        TicketEvent(
            ticket_id=ticket.id,
            created_at=now,
            actor_agent_id=agent_id,
            actor_contact_id=contact_id,
            action=action,
            field=field,
            before=before,
            after=after,
        )
    )


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
