"""Parsing mail in worker processes (`mail_parse_processes`).

A mail's parse is about a millisecond of pure-Python CPU, and a hostile one may take up to
`mail_max_cpu_seconds`. In a thread it holds the interpreter lock the process that records mail
and answers agents needs; in a worker process it runs on another core. The workers are forked
from a fresh server process (multiprocessing's "forkserver"), never from this one with its
threads, database connections and event loop.

A worker that dies (the kernel's OOM killer, say) breaks the pool: every parse waiting on it
fails, the one that killed it and the others alike. Each is then tried again alone, in a
process of its own, so the mail that kills its parser kills only that one: it is quarantined
(`parser_crashed`), never dropped, and the others come in.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import select
import threading
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from keepdesk.faults import crash_point
from keepdesk.mail.limits import MailLimits
from keepdesk.mail.parsing import ParsedMail, Rejected, parse_mail

log = logging.getLogger("keepdesk.mail.parsers")

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _new_pool(processes: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["keepdesk.mail.parsing"])
    return ProcessPoolExecutor(
        max_workers=processes,
        mp_context=context,
        initializer=_end_with,
        initargs=(os.getpid(),),
    )


def _current(processes: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != processes:
            if _pool is not None:
                _pool.shutdown(wait=False)  # what it parses still finishes
            _pool = _new_pool(processes)
            _pool_size = processes
        return _pool


def _end_with(keepdesk_pid: int) -> None:  # in each worker, as it starts
    """A worker never outlives the keepdesk process it parses for, however that ended (SIGKILL
    included, where nothing runs to stop it): a thread waits on the process's pidfd, which
    turns readable when it ends, and ends the worker. Left over, a worker would hold that
    process's stdout and stderr open, and the fork server with it."""
    try:
        watched = os.pidfd_open(keepdesk_pid)
    except ProcessLookupError:
        os._exit(0)
    threading.Thread(target=_exit_when_ended, args=(watched,), daemon=True).start()


def _exit_when_ended(pidfd: int) -> None:
    select.select([pidfd], [], [])
    os._exit(0)


def _drop(broken: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False)


def _parse_job(
    raw: bytes, limits: MailLimits, own: frozenset[str]
) -> ParsedMail | Rejected:  # in the worker
    crash_point("PARSER")
    return parse_mail(raw, limits=limits, own_addresses=own)


async def parse_in_worker(
    raw: bytes, *, limits: MailLimits, own: frozenset[str], processes: int
) -> ParsedMail | Rejected:
    """`parse_mail` in one of `processes` worker processes."""
    job = functools.partial(_parse_job, raw, limits, own)
    loop = asyncio.get_running_loop()
    pool = _current(processes)
    try:
        return await loop.run_in_executor(pool, job)
    except BrokenProcessPool:
        _drop(pool)
    log.warning("a mail parser process died; parsing the mails it had again, each alone")
    async with _alone(loop, processes):
        alone = _new_pool(1)
        try:
            return await loop.run_in_executor(alone, job)
        except BrokenProcessPool:
            log.warning("a mail killed its parser's process twice; it goes to the quarantine")
            return Rejected(
                "parser_crashed",
                "The parser's process died twice while this message was being parsed, the "
                "second time with no other message beside it (out of memory?).",
            )
        finally:
            alone.shutdown(wait=False)


def _alone(loop: asyncio.AbstractEventLoop, processes: int) -> asyncio.Semaphore:
    """At most `processes` mails parsed alone at once, on this event loop."""
    turns = _turns.get(loop)
    if turns is None:
        turns = _turns[loop] = asyncio.Semaphore(processes)
    return turns


def shutdown() -> None:
    """Stop the workers, before a process ends. `serve` and `worker` call it: uvicorn ends by
    re-raising SIGTERM, which runs no exit handlers, and the pool's semaphores would be left
    to multiprocessing's tracker, which complains on stderr (not a JSON log line). A command
    that returns normally has `atexit` do it."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True)  # what is being parsed finishes first
