"""The status machine: pure functions over a ticket's status, no database.

new ──> open ──> pending ──> resolved ──> closed
 │        ^  <──────┘  │        │  ^
 └────────┴────────────┴────────┘  └── from any status but closed
resolved --customer writes--> open;   closed is final (a new message opens a follow-up)
"""

from __future__ import annotations

from keepdesk.tickets.models import TicketStatus

_ALLOWED: dict[TicketStatus, frozenset[TicketStatus]] = {
    TicketStatus.new: frozenset(
        {TicketStatus.open, TicketStatus.pending, TicketStatus.resolved, TicketStatus.closed}
    ),
    TicketStatus.open: frozenset(
        {TicketStatus.pending, TicketStatus.resolved, TicketStatus.closed}
    ),
    TicketStatus.pending: frozenset(
        {TicketStatus.open, TicketStatus.resolved, TicketStatus.closed}
    ),
    TicketStatus.resolved: frozenset({TicketStatus.open, TicketStatus.closed}),
    TicketStatus.closed: frozenset(),
}


def can_transition(current: TicketStatus, target: TicketStatus) -> bool:
    return target in _ALLOWED[current]


def why_not(current: TicketStatus, target: TicketStatus) -> str:
    if current == TicketStatus.closed:
        return "a closed ticket stays closed; a new message on it opens a follow-up ticket"
    if target == TicketStatus.new:
        return "a ticket cannot go back to new"
    return f"a ticket cannot go from {current.value} to {target.value}"


def after_agent_action(current: TicketStatus) -> TicketStatus:
    """An agent touching a new ticket has picked it up: it is open."""
    return TicketStatus.open if current == TicketStatus.new else current


def after_customer_message(current: TicketStatus) -> TicketStatus:
    """The customer wrote: a ticket waiting on them, or resolved, needs an agent again."""
    if current in (TicketStatus.pending, TicketStatus.resolved):
        return TicketStatus.open
    return current


def is_active(status: TicketStatus) -> bool:
    return status not in (TicketStatus.resolved, TicketStatus.closed)
