"""PostgreSQL under keepdesk's engine (db.py): a connection that the server ended while it sat
in the pool, even a moment, is replaced before anyone uses it, and so are the pool's others.
A session that only reads (a GET request's) runs without a transaction, and refuses to
write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from sqlalchemy import column, insert, select, table, text

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
    db = Database(pg_database, pool_size=2)
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


async def test_connections_the_server_ended_are_replaced_before_use(
    pg_db: tuple[Database, PostgresServer],
) -> None:
    """A restart, a failover, an idle timeout on the server: ended while in the pool."""
    db, server = pg_db
    first = await _backend_pid(db)
    assert await _backend_pid(db) == first  # the pool hands the same connection out again
    _terminate(server, first)

    second = await _backend_pid(db)  # no error: the ping found it gone

    assert second != first
    async with db.session() as one, db.session() as two:  # both of the pool's connections
        pids = [(await s.execute(text("SELECT pg_backend_pid()"))).scalar_one() for s in (one, two)]
    _terminate(server, pids[0])
    _terminate(server, pids[1])
    async with db.session() as one, db.session() as two:
        for s in (one, two):
            assert (await s.execute(text("SELECT 1"))).scalar_one() == 1


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
