"""The one list of background tasks: what runs, how often, and under which lease."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from keepdesk.runtime import Runtime
from keepdesk.workers import housekeeping


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
)
