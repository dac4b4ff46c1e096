"""SQLite under keepdesk's own driver and sessions (db.py, sqlite_driver.py): writers take turns
in arrival order, a reader never waits behind them, a writer that waits too long hears what
SQLite would say, a writer waiting for another process's lock leaves the event loop free, a
writer holding the lock runs its statements without giving it up in between, a commit never
stops to copy the WAL back (the checkpointer does, beside the writers), and a database in
memory stays one database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from keepdesk import db as db_module
from keepdesk.db import Database


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


async def test_a_writer_holding_the_lock_runs_its_statements_without_a_break(
    tmp_path: Path,
) -> None:
    """Each statement of a write transaction after its first would otherwise be a trip to the
    connection's thread, and every other request's work would run in the gaps while the
    write lock stays taken."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'nobreak.sqlite3'}")
    try:
        await _table(db)
        in_between: list[int] = []

        async def someone_else() -> None:
            while True:
                in_between.append(1)
                await asyncio.sleep(0)

        others = asyncio.create_task(someone_else())
        async with db.session(write=True) as session:
            await session.execute(text("INSERT INTO seen VALUES ('first')"))  # takes the lock
            in_between.clear()
            for n in range(20):
                await session.execute(text("INSERT INTO seen VALUES (:n)"), {"n": str(n)})
            count = (await session.execute(text("SELECT count(*) FROM seen"))).scalar()
            assert in_between == [] and count == 21
            await session.commit()
        await asyncio.sleep(0)
        assert in_between  # the others go on once the writer is done
        others.cancel()
        # Read sessions still run on the connection's thread, the loop free in the meantime.
        async with db.session() as reader:
            in_between.clear()
            others = asyncio.create_task(someone_else())
            await reader.execute(text("SELECT count(*) FROM seen"))
            assert in_between
            others.cancel()
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
