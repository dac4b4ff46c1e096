"""SQLite under keepdesk's own driver and sessions (db.py, sqlite_driver.py): writers take turns
in arrival order, a reader never waits behind them, a writer that waits too long hears what
SQLite would say, and a database in memory stays one database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

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


async def test_a_database_in_memory_is_one_database() -> None:
    db = Database("sqlite+aiosqlite:///:memory:")
    try:
        await _table(db)
        await _write(db, "someone", [])
        async with db.session() as reader:
            assert (await reader.execute(text("SELECT who FROM seen"))).scalar() == "someone"
    finally:
        await db.dispose()
