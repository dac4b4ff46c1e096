"""SQLite under keepdesk's own driver and sessions (db.py, sqlite_driver.py): writers take turns
in arrival order, a reader never waits behind them, a writer that waits too long hears what
SQLite would say, a writer gives its turn away at its commit, a writer waiting for another
process's lock leaves the event loop free, a quick statement runs on the loop without a break
and a slow one goes back to the connection's thread for a while, a write outside the write lock
never waits on the loop, a commit never stops to copy the WAL back (the checkpointer does,
beside the writers), and a database in memory stays one database."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from keepdesk import db as db_module
from keepdesk import sqlite_driver
from keepdesk.db import Database, ReadOnlySession


async def _table(db: Database) -> None:
    async with db.session(write=True) as session:
        await session.execute(text("CREATE TABLE IF NOT EXISTS seen (who TEXT)"))
        await session.commit()


async def _write(db: Database, who: str, order: list[str]) -> None:
    async with db.session(write=True) as session:
        await session.execute(text("INSERT INTO seen VALUES (:who)"), {"who": who})
        order.append(who)
        await session.commit()


async def test_writers_take_turns_in_the_order_they_came(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'turns.sqlite3'}")
    try:
        await _table(db)
        order: list[str] = []
        first = db.session(write=True)
        session = await first.__aenter__()
        await session.execute(text("INSERT INTO seen VALUES ('first')"))
        waiting = []
        for who in ("second", "third", "fourth"):
            waiting.append(asyncio.create_task(_write(db, who, order)))
            await asyncio.sleep(0.01)  # let each one start waiting before the next comes
        assert order == []  # all wait for the first writer's turn to end
        await session.commit()
        await first.__aexit__(None, None, None)
        await asyncio.gather(*waiting)
        assert order == ["second", "third", "fourth"]
        async with db.session() as reader:
            rows = (await reader.execute(text("SELECT who FROM seen ORDER BY rowid"))).all()
        assert [r[0] for r in rows] == ["first", "second", "third", "fourth"]
    finally:
        await db.dispose()


async def test_a_reader_does_not_wait_behind_waiting_writers(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'readers.sqlite3'}", sqlite_pool_size=1)
    try:
        await _table(db)
        order: list[str] = []
        async with db.session(write=True) as writer:
            await writer.execute(text("INSERT INTO seen VALUES ('holding')"))
            queued = asyncio.create_task(_write(db, "queued", order))
            await asyncio.sleep(0.01)
            async with db.session() as reader:
                # What was committed before: the writers' uncommitted rows are not there.
                count = (await reader.execute(text("SELECT count(*) FROM seen"))).scalar()
            assert count == 0
            await writer.commit()
        await queued
        assert order == ["queued"]
    finally:
        await db.dispose()


async def test_a_writer_that_waits_too_long_is_told_the_database_is_locked(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'locked.sqlite3'}", busy_timeout_ms=200)
    try:
        await _table(db)
        async with db.session(write=True) as writer:
            await writer.execute(text("INSERT INTO seen VALUES ('holding')"))
            with pytest.raises(OperationalError, match="database is locked"):
                await _write(db, "late", [])
            await writer.commit()
        # The turn was given back: the next writer goes through.
        order: list[str] = []
        await _write(db, "next", order)
        assert order == ["next"]
    finally:
        await db.dispose()


async def test_a_writer_gives_its_turn_away_at_its_commit(tmp_path: Path) -> None:
    """What a write session runs after its commit (a route building its answer, a page it
    renders) does not hold up the next writer: it reads the committed rows on a read
    connection, and a write there is refused rather than run without the turn."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'commit.sqlite3'}", busy_timeout_ms=300)
    try:
        await _table(db)
        order: list[str] = []
        async with db.session(write=True) as writer:
            async with writer.begin_nested():  # a SAVEPOINT's release is not the commit
                await writer.execute(text("INSERT INTO seen VALUES ('first')"))
            await writer.execute(text("INSERT INTO seen VALUES ('second')"))
            await writer.commit()
            await _write(db, "next", order)  # held up, it would hear "database is locked"
            rows = (await writer.execute(text("SELECT who FROM seen ORDER BY rowid"))).all()
            assert [r[0] for r in rows] == ["first", "second", "next"]
            with pytest.raises(ReadOnlySession, match="after the write session's commit"):
                await writer.execute(text("INSERT INTO seen VALUES ('late')"))
        assert order == ["next"]
        async with db.session() as reader:
            count = (await reader.execute(text("SELECT count(*) FROM seen"))).scalar()
        assert count == 3
    finally:
        await db.dispose()


async def test_a_writer_waiting_for_another_process_leaves_the_event_loop_free(
    tmp_path: Path,
) -> None:
    path = tmp_path / "elsewhere.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=5000)
    other = sqlite3.connect(path, isolation_level=None)  # another process's writer, say
    try:
        await _table(db)
        other.execute("BEGIN IMMEDIATE")
        order: list[str] = []
        writer = asyncio.create_task(_write(db, "waiting", order))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1  # the loop serves everyone else meanwhile
        assert order == [] and not writer.done()
        other.execute("INSERT INTO seen VALUES ('other')")
        other.execute("COMMIT")
        await writer
        assert ticks == 20 and order == ["waiting"]
        async with db.session() as reader:
            rows = (await reader.execute(text("SELECT who FROM seen ORDER BY rowid"))).all()
        assert [r[0] for r in rows] == ["other", "waiting"]
    finally:
        other.close()
        await db.dispose()


async def _turns_of_others(work: Callable[[], Awaitable[object]]) -> int:
    """How many turns the event loop gave another request's work while `work` ran."""
    turns = 0

    async def someone_else() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(someone_else())
    await asyncio.sleep(0)
    turns = 0
    try:
        await work()
    finally:
        other.cancel()
    return turns


async def test_quick_statements_run_without_a_break_once_seen(tmp_path: Path) -> None:
    """A trip to the connection's thread costs more than a quick statement, and every other
    request's work ran in the gap (with a writer, while the write lock stayed taken)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'nobreak.sqlite3'}")
    insert, count = text("INSERT INTO seen VALUES (:n)"), text("SELECT count(*) FROM seen")
    try:
        await _table(db)
        async with db.session(write=True) as session:
            await session.execute(insert, {"n": "first"})  # BEGIN IMMEDIATE: on the thread
            for _ in range(3):  # new: on the thread, timed (a busy machine may need another)
                await session.execute(insert, {"n": "warm"})
                await session.execute(count)

            async def twenty_writes() -> None:
                for n in range(20):
                    await session.execute(insert, {"n": str(n)})
                assert (await session.execute(count)).scalar() == 24

            assert await _turns_of_others(twenty_writes) == 0
            await session.commit()
        async with db.session() as reader:
            for _ in range(3):
                await reader.execute(count)

            async def reads() -> None:
                for _ in range(20):
                    assert (await reader.execute(count)).scalar() == 24

            assert await _turns_of_others(reads) == 0
    finally:
        await db.dispose()


async def _until_on_the_loop(work: Callable[[], Awaitable[None]], *, tries: int) -> bool:
    """Whether `work` runs without giving other tasks a turn (on the loop) within `tries`."""
    for _ in range(tries):
        if await _turns_of_others(work) == 0:
            return True
    return False


async def test_a_statement_slow_on_the_loop_goes_back_to_the_thread_for_a_while(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'slow.sqlite3'}")
    numbers = text(
        "SELECT count(*) FROM (WITH RECURSIVE c(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < :n) SELECT x FROM c)"
    )
    try:
        async with db.session() as reader:

            async def count_to(n: int) -> None:
                assert (await reader.execute(numbers, {"n": n})).scalar() == n

            assert await _turns_of_others(lambda: count_to(2)) > 0  # new: on the thread
            # Quick (a run under a millisecond on the thread): on the loop from then on. Run
            # alone, not beside the turn counter, whose task keeps the loop busy so that the
            # thread may wait milliseconds for the GIL.
            for _ in range(3):
                await count_to(2)
            assert await _until_on_the_loop(lambda: count_to(2), tries=3)
            # Slow this time (tens of milliseconds): the loop waits for it, once...
            assert await _turns_of_others(lambda: count_to(300_000)) == 0
            # ...and from then on it runs on the thread, slow or quick, for a hundred runs...
            assert await _turns_of_others(lambda: count_to(300_000)) > 0
            for _ in range(sqlite_driver.RETRY_AFTER // 2):
                assert await _turns_of_others(lambda: count_to(2)) > 0
            # ...until it has been quick there a hundred times in a row (a pause in between
            # starts the count over; alone again).
            for _ in range(sqlite_driver.RETRY_AFTER * 3):
                await count_to(2)
            assert await _until_on_the_loop(lambda: count_to(2), tries=3)
    finally:
        await db.dispose()


async def test_a_write_outside_the_write_lock_never_waits_on_the_loop(tmp_path: Path) -> None:
    """A statement that writes may wait for another process's lock unless its transaction
    holds the lock already: it goes to the thread, however quick it was before."""
    path = tmp_path / "upgrade.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=300)
    insert = text("INSERT INTO seen VALUES ('from a read session')")
    try:
        await _table(db)
        for _ in range(2):  # quick, twice, while nobody else writes
            async with db.session() as session:
                await session.execute(insert)
                await session.commit()
        with sqlite3.connect(path, isolation_level=None) as other:
            other.execute("BEGIN IMMEDIATE")
            async with db.session() as session:

                async def blocked() -> None:
                    with pytest.raises(OperationalError, match="database is locked"):
                        await session.execute(insert)

                assert await _turns_of_others(blocked) > 10  # the loop went on meanwhile
            other.execute("ROLLBACK")
    finally:
        await db.dispose()


async def test_a_write_whose_first_statement_fails_gives_the_lock_back(tmp_path: Path) -> None:
    path = tmp_path / "fails.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=200)
    try:
        await _table(db)
        async with db.session(write=True) as session:
            with pytest.raises(OperationalError, match="no such table"):
                await session.execute(text("INSERT INTO missing VALUES (1)"))
            await session.rollback()
            # The same session writes again, in a transaction of its own.
            await session.execute(text("INSERT INTO seen VALUES ('after')"))
            await session.commit()
        # Nothing is left holding the lock: another process writes at once.
        with sqlite3.connect(path, isolation_level=None, timeout=0.2) as other:
            other.execute("INSERT INTO seen VALUES ('other')")
        async with db.session() as reader:
            rows = (await reader.execute(text("SELECT who FROM seen ORDER BY rowid"))).all()
        assert [r[0] for r in rows] == ["after", "other"]
    finally:
        await db.dispose()


async def test_a_database_in_memory_is_one_database() -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    try:
        await _table(db)
        await _write(db, "someone", [])
        async with db.session() as reader:
            assert (await reader.execute(text("SELECT who FROM seen"))).scalar() == "someone"
    finally:
        await db.dispose()


def _wal_pages(path: Path) -> int:
    """Pages the WAL file has room for (SQLite starts it over after a full checkpoint, but never
    shrinks it): read off the file, since asking SQLite would checkpoint."""
    size = path.with_name(path.name + "-wal").stat().st_size
    return (size - 32) // (4096 + 24)


def _rows_in_database_file(path: Path) -> int:
    """The rows the database file itself holds, without the WAL (immutable=1 never reads it)."""
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as probe:
        return int(probe.execute("SELECT count(*) FROM pages").fetchone()[0])


async def test_commits_leave_the_wal_to_the_checkpointer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wal.sqlite3"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.session(write=True) as session:
            await session.execute(text("CREATE TABLE pages (body BLOB)"))
            await session.commit()
        assert db._checkpointer is not None
        await db._checkpointer.close()  # the checkpoint the first write started
        # No checkpoint for a while: 1,500 pages go into the WAL in 30 commits. SQLite's own
        # automatic checkpoint (at 1,000 pages) would have run inside one of those commits and
        # started the WAL over, so it would have room for little more than 1,000.
        monkeypatch.setattr(db_module, "CHECKPOINT_EVERY_SECONDS", 3600)
        for _ in range(30):
            async with db.session(write=True) as session:
                await session.execute(
                    text("INSERT INTO pages VALUES (randomblob(3900))"), [{}] * 50
                )
                await session.commit()
        assert _wal_pages(path) >= 1500
        assert _rows_in_database_file(path) == 0

        # The next write after the interval starts the checkpointer, which copies it all.
        monkeypatch.setattr(db_module, "CHECKPOINT_EVERY_SECONDS", 0)
        async with db.session(write=True) as session:
            await session.execute(text("DELETE FROM pages WHERE rowid % 2 = 0"))
            await session.commit()
        await db._checkpointer.close()
        assert _rows_in_database_file(path) == 750
        async with db.session() as reader:
            assert (await reader.execute(text("SELECT count(*) FROM pages"))).scalar() == 750
    finally:
        await db.dispose()
