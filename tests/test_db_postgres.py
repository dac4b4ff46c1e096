"""PostgreSQL under keepdesk's engine (db.py): a connection that the server ended while it sat
idle in the pool is replaced before anyone uses it; one handed back a moment ago goes out
without a ping, and if the server ended it in between, the statement that finds out fails
once and the pool starts afresh. A session that only reads (a GET request's) runs without a
transaction, and refuses to write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy import column, insert, select, table, text
from sqlalchemy.exc import DBAPIError

from keepdesk import db as db_module
from keepdesk.db import Database, ReadOnlySession
from tests.support.postgres import PostgresServer
from tests.support.services import missing


@pytest.fixture
async def pg_db(
    pg_server: PostgresServer | None, pg_database: str | None
) -> AsyncIterator[tuple[Database, PostgresServer]]:
    if pg_server is None or pg_database is None:
        missing("no PostgreSQL: set KEEPDESK_TEST_POSTGRES_URL or apt install postgresql")
    assert pg_server is not None and pg_database is not None
    db = Database(pg_database, pool_size=1)
    try:
        yield db, pg_server
    finally:
        await db.dispose()


async def _backend_pid(db: Database) -> int:
    async with db.session() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


def _terminate(server: PostgresServer, pid: int) -> None:
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as admin:
        ended = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert ended == (True,)


async def test_a_connection_ended_while_idle_in_the_pool_is_replaced_before_use(
    pg_db: tuple[Database, PostgresServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, server = pg_db
    first = await _backend_pid(db)
    _terminate(server, first)  # a restart, a failover, an idle timeout on the server
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)

    assert await _backend_pid(db) != first  # no error: the ping found it gone


async def test_a_connection_in_use_a_moment_ago_is_not_pinged_and_one_failure_resets_the_pool(
    pg_db: tuple[Database, PostgresServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, server = pg_db
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 3600.0)
    first = await _backend_pid(db)
    assert await _backend_pid(db) == first  # the same connection, handed out again
    _terminate(server, first)

    with pytest.raises(DBAPIError) as failed:
        await _backend_pid(db)
    assert failed.value.connection_invalidated
    assert await _backend_pid(db) != first  # the next session has a new connection


async def test_a_reading_session_runs_each_statement_on_its_own_and_refuses_to_write(
    pg_db: tuple[Database, PostgresServer],
) -> None:
    db, _ = pg_db
    counters = table("counters", column("name"), column("value"))
    async with db.reading() as session:
        first = (await session.execute(text("SELECT now()"))).scalar_one()
        await asyncio.sleep(0.01)
        second = (await session.execute(text("SELECT now()"))).scalar_one()
        assert second > first  # a transaction would have one now() for both

        with pytest.raises(ReadOnlySession):
            await session.execute(insert(counters).values(name="read-only-test", value=1))

    async with db.session() as session:
        written = await session.scalar(
            select(counters.c.value).where(counters.c.name == "read-only-test")
        )
    assert written is None
