"""The one list of background tasks: what runs, how often, and under which lease."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from keepdesk.backup import schedule as backup_schedule
from keepdesk.leases import holder_name
from keepdesk.mail import delivery
from keepdesk.runtime import Runtime
from keepdesk.workers import housekeeping, mail_fetch


@dataclass(frozen=True)
class Task:
    name: str
    run: Callable[[Runtime], Awaitable[None]]
    every: timedelta
    # Tasks that must not run twice at once across instances hold a lease while they run.
    exclusive: bool = True


TASKS: tuple[Task, ...] = (
    Task("close-resolved-tickets", housekeeping.close_resolved_tickets, timedelta(minutes=10)),
    Task("purge-sessions", housekeeping.purge_sessions, timedelta(hours=1)),
    Task("backup", backup_schedule.scheduled_backup, timedelta(minutes=10)),
    # Each mailbox has a lease of its own, taken inside the unit, so this one is not exclusive.
    Task(
        "fetch-mail",
        lambda runtime: mail_fetch.fetch_all(runtime, holder=holder_name()),
        # The unit itself waits on the servers (IDLE) for up to 25 s between passes.
        timedelta(seconds=1),
        exclusive=False,
    ),
    Task(
        "send-mail",
        lambda runtime: delivery.send_due_task(runtime, holder=holder_name()),
        timedelta(seconds=5),
    ),
)
