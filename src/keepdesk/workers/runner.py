"""Runs every registered task in its own supervised loop until asked to stop.

A failing unit is logged and retried with exponential back-off; one task's failure never stops
another. Exclusive tasks take their lease first, so with several instances only one runs each.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from keepdesk import leases
from keepdesk.leases import holder_name
from keepdesk.runtime import Runtime, TaskState
from keepdesk.workers.registry import TASKS, Task

log = logging.getLogger("keepdesk.workers")

_MAX_BACKOFF = 300.0


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early when asked to stop; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def run_once(runtime: Runtime, task: Task, *, holder: str) -> bool:
    """Run one unit of the task if its lease is ours; False when another process holds it."""
    if task.exclusive:
        ttl = max(task.every * 2, timedelta(minutes=2))
        async with runtime.db.session(write=True) as session:
            mine = await leases.acquire(
                session, name=task.name, holder=holder, ttl=ttl, now=runtime.clock.now()
            )
            await session.commit()
        if not mine:
            return False
    await task.run(runtime)
    return True


async def _supervise(runtime: Runtime, task: Task, stop: asyncio.Event, holder: str) -> None:
    state = runtime.tasks.setdefault(task.name, TaskState())
    while not stop.is_set():
        try:
            await run_once(runtime, task, holder=holder)
            state.last_success_at = runtime.clock.now()
            state.failures_in_a_row = 0
            delay = task.every.total_seconds()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.failures_in_a_row += 1
            state.last_failure_at = runtime.clock.now()
            state.last_error = f"{type(exc).__name__}: {exc}"[:1000]
            delay = min(_MAX_BACKOFF, 2.0**state.failures_in_a_row)
            if state.failures_in_a_row == 1:
                log.exception("task %s failed; retrying in %.0fs", task.name, delay)
            else:
                # The traceback was logged with the first failure; a long outage stays readable.
                log.error(
                    "task %s failed again (%d in a row): %s; retrying in %.0fs",
                    task.name,
                    state.failures_in_a_row,
                    state.last_error,
                    delay,
                )
        # Mailboxes' states (`mail_fetch`) change inside the fetch unit: all go out together.
        runtime.save_task_states()
        if await _wait(stop, delay):
            return


async def run_workers(
    runtime: Runtime, stop: asyncio.Event, tasks: tuple[Task, ...] = TASKS
) -> None:
    holder = holder_name()
    runtime.runs_tasks = True
    log.info("background tasks started: %s", ", ".join(t.name for t in tasks))
    async with asyncio.TaskGroup() as group:
        for task in tasks:
            group.create_task(_supervise(runtime, task, stop, holder), name=task.name)
