"""Writers of several processes on one SQLite file take turns (keepdesk.sqlite_turns).

Each `WriterTurns` opens descriptors of its own, and `flock` treats separate descriptors as
separate owners, so two of them in this process meet as two processes' writers would.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from keepdesk.sqlite_turns import WriterTurns


@pytest.fixture
def database(tmp_path: Path) -> str:
    return str(tmp_path / "keepdesk.sqlite3")


async def _until(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if condition() or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.01)


def _taken(path: str) -> bool:
    descriptor = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)
    return False


async def test_a_second_writer_waits_for_the_first(database: str) -> None:
    first, second = WriterTurns(database), WriterTurns(database)
    await first.acquire(5)
    waiting = asyncio.create_task(second.acquire(5))
    await asyncio.sleep(0.1)
    assert not waiting.done()

    first.release()
    await asyncio.wait_for(waiting, 5)
    second.release()
    first.close()
    second.close()


async def test_the_process_that_waited_goes_before_the_holder_goes_again(database: str) -> None:
    holder, other = WriterTurns(database), WriterTurns(database)
    await holder.acquire(5)
    waiting = asyncio.create_task(other.acquire(5))
    # The waiter holds the gate while it waits for the lock.
    await _until(lambda: _taken(f"{database}-writer-gate"))
    assert _taken(f"{database}-writer-gate")

    holder.release()
    again = asyncio.create_task(holder.acquire(5))
    await asyncio.wait_for(waiting, 5)
    await asyncio.sleep(0.1)
    assert not again.done(), "the holder took the lock again before the waiting process"

    other.release()
    await asyncio.wait_for(again, 5)
    holder.release()
    holder.close()
    other.close()


async def test_a_wait_that_runs_out_says_database_is_locked_and_leaves_no_lock(
    database: str,
) -> None:
    holder, other = WriterTurns(database), WriterTurns(database)
    await holder.acquire(5)
    with pytest.raises(OperationalError, match="database is locked"):
        await other.acquire(0.1)

    holder.release()
    # The abandoned wait takes the locks and lets go of them at once: nothing stays taken. (The
    # gate first: the waiting thread holds it until it has the lock, then closes both.)
    gate, writer = f"{database}-writer-gate", f"{database}-writer"
    await _until(lambda: not _taken(gate) and not _taken(writer))
    assert not _taken(gate)
    assert not _taken(writer)
    await asyncio.wait_for(other.acquire(5), 5)
    other.release()
    await asyncio.wait_for(holder.acquire(5), 5)
    holder.release()
    holder.close()
    other.close()
