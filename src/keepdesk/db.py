"""The database: engine and sessions, SQLite pragmas, and the column types every model shares.

SQLite runs in WAL mode with foreign keys on and a busy timeout. Write transactions on SQLite
start with `BEGIN IMMEDIATE`, so two writers queue on the lock instead of one failing with
"database is locked" when it upgrades a read lock; read-only sessions stay deferred.

The WAL is copied back into the database file (checkpointed) beside the writers, not by them:
SQLite's own automatic checkpoint runs inside the commit that crosses 1,000 pages, and that
commit waited for it (550-600 ms at 100,000 tickets, once in every few hundred writes).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, DateTime, Dialect, MetaData, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Session
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util.concurrency import await_

from keepdesk import sqlite_driver
from keepdesk.sqlite_turns import WriterTurns, database_locked

log = logging.getLogger("keepdesk.db")

# After a write, a checkpoint starts in the background when none ran for this long.
CHECKPOINT_EVERY_SECONDS = 1.0

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python; `timestamptz` on PostgreSQL, a sortable ISO string on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares the stored text, so every row must use one format: naive UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSON that is JSONB on PostgreSQL (indexable, compact) and JSON text elsewhere. With
# `none_as_null`, Python's None is SQL NULL where a Core statement binds it (as the ORM writes
# a column left None), not the JSON text "null".
def json_type(*, none_as_null: bool = False) -> Any:
    from sqlalchemy.dialects.postgresql import JSONB

    return JSON(none_as_null=none_as_null).with_variant(
        JSONB(none_as_null=none_as_null), "postgresql"
    )


class Database:
    """One engine and its session factories; created by the app's lifespan or a CLI command."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        sqlite_pool_size: int = 2,
        busy_timeout_ms: int = 10_000,
        echo: bool = False,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # SQLite in memory lives in one connection (SQLAlchemy's StaticPool).
        in_memory = self.is_sqlite and (
            ":memory:" in url or "mode=memory" in url or url.endswith("://")
        )
        kwargs: dict[str, Any] = {"echo": echo}
        if not self.is_sqlite:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        elif url.startswith("sqlite+aiosqlite"):
            kwargs["module"] = sqlite_driver.dbapi()  # one trip to its thread per statement
            if not in_memory:
                # Each connection has its own thread; beyond two they mostly contend for the
                # GIL (16 concurrent API lists: 221 req/s with 2, 194 with 4, 178 with 15).
                kwargs.update(pool_size=sqlite_pool_size, max_overflow=0)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        # Write sessions: on SQLite a pool of their own with one connection. SQLite has one
        # writer at a time anyway; queued here, writers take turns at once, where inside
        # SQLite's busy handler they slept and polled (16 concurrent API replies: p99 2.4 s),
        # and a writer waiting for the lock never holds a connection a reader needs.
        self._own_write_engine: AsyncEngine | None = None
        self._checkpointer: Checkpointer | None = None
        self._process_turns: WriterTurns | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine, busy_timeout_ms)
            # (Not for a database in memory: a second engine would open a second database.)
            if url.startswith("sqlite+aiosqlite") and not in_memory:
                write_kwargs = {**kwargs, "module": sqlite_driver.dbapi(), "pool_size": 1}
                self._own_write_engine = create_async_engine(url, **write_kwargs)
                _configure_sqlite(
                    self._own_write_engine, busy_timeout_ms, automatic_checkpoints=False
                )
                path = make_url(url).database or ""
                self._checkpointer = Checkpointer(path, busy_timeout_ms)
                # Other processes' writers on the same file (sqlite_turns).
                self._process_turns = WriterTurns(path)
                # What a write session runs after its commit (see `session`).
                self._reads_after_commit = _refusing_writes(
                    self.engine.execution_options(), "a write after the write session's commit"
                )
        else:
            _ping_on_checkout(self.engine)
        writer = self._own_write_engine or self.engine
        self._write_engine = writer.execution_options(keepdesk_write=True)
        self._read = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write = async_sessionmaker(
            self._write_engine, expire_on_commit=False, sync_session_class=_WriteSession
        )
        self._reading = (
            self._read
            if self.is_sqlite
            else async_sessionmaker(_autocommit_reads(self.engine), expire_on_commit=False)
        )
        # SQLite writers take turns in arrival order (a pool's queue lets a newcomer take a
        # connection that was handed back before the longest waiter wakes: 16 concurrent
        # replies had a p99 of 2 s). One lock per event loop; a turn waits as long as SQLite
        # would have waited for its lock.
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._turn_timeout = busy_timeout_ms / 1000

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session; the caller commits. Leaving without a commit rolls back.

        On SQLite a write session holds the writer's turn until its commit, not until it
        closes: what it reads after the commit (the answer a route builds, a page it renders)
        runs on a read connection while the next writer writes. A write after the commit fails
        (`ReadOnlySession`): a second transaction needs a session of its own."""
        if write and self._own_write_engine is not None:
            async with self._writer_turn() as turn, self._write() as session:
                session.info[_TURN] = turn
                yield session
            if self._checkpointer is not None:
                self._checkpointer.after_write()
            return
        factory = self._write if write else self._read
        async with factory() as session:
            yield session

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A session that only reads: a GET request's. On PostgreSQL it runs in autocommit, so
        it costs no BEGIN and no ROLLBACK (two of an API list's six round trips); under READ
        COMMITTED each statement saw a snapshot of its own inside a transaction too. A write in
        it fails (`ReadOnlySession`) rather than commit statement by statement, and it has no
        server-side cursors (`stream`): asyncpg opens those only inside a transaction. On
        SQLite it is `session()`: a read transaction there is one snapshot, and costs no round
        trip."""
        async with self._reading() as session:
            yield session

    @asynccontextmanager
    async def _writer_turn(self) -> AsyncIterator[_Turn]:
        loop = asyncio.get_running_loop()
        lock = self._turns.get(loop)
        if lock is None:
            lock = self._turns[loop] = asyncio.Lock()
        deadline = time.monotonic() + self._turn_timeout
        try:
            await asyncio.wait_for(lock.acquire(), self._turn_timeout)
        except TimeoutError:
            # What SQLite says when its own wait runs out (app.py answers 503).
            raise database_locked() from None
        turn = _Turn(lock, self._reads_after_commit)
        try:
            if self._process_turns is not None:
                await self._process_turns.acquire(max(0.0, deadline - time.monotonic()))
                turn.process_turns = self._process_turns
            yield turn
        finally:
            turn.release()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._checkpointer is not None:
            await self._checkpointer.close()
        if self._process_turns is not None:
            self._process_turns.close()
        await self.engine.dispose()
        if self._own_write_engine is not None:
            await self._own_write_engine.dispose()


_TURN = "keepdesk_writer_turn"  # a write session's `info` key while it holds the turn


class _Turn:
    """A write session's turn: this event loop's lock, then (file SQLite) the other processes'.
    Let go once, at the commit or when the session closes; after the commit the session reads
    through `reads`."""

    def __init__(self, lock: asyncio.Lock, reads: AsyncEngine) -> None:
        self.lock = lock
        self.reads = reads
        self.process_turns: WriterTurns | None = None
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            if self.process_turns is not None:
                self.process_turns.release()
            self.lock.release()


class _WriteSession(Session):
    """The sessions of `Database.session(write=True)`."""


@event.listens_for(_WriteSession, "after_commit")
def _after_commit(session: Session) -> None:
    """A write session's commit on SQLite: the turn goes to the next writer, and what the
    session runs after it runs on a read connection (the write pool's one connection goes back
    to the pool as the commit ends)."""
    if session.in_nested_transaction():
        return  # a SAVEPOINT released: the transaction goes on
    turn: _Turn | None = session.info.pop(_TURN, None)
    if turn is not None:
        turn.release()
        session.bind = turn.reads.sync_engine


class Checkpointer:
    """Copies the WAL into the database file on a connection and thread of its own.

    The write connection has SQLite's automatic checkpoint turned off; after a write session,
    a PASSIVE checkpoint starts here when none started for `CHECKPOINT_EVERY_SECONDS`. PASSIVE
    never waits for a lock: readers and writers go on while it copies, and pages a reader
    still needs are copied by a later one. With `synchronous=NORMAL` the WAL is fsynced before
    it is copied, and the database file after, as in SQLite's own checkpoint. Every process
    that writes runs its own; two at once take turns inside SQLite."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.started_at = float("-inf")
        self.running: asyncio.Task[None] | None = None
        self.connection: sqlite3.Connection | None = None

    def after_write(self) -> None:
        now = time.monotonic()
        if self.running is not None or now - self.started_at < CHECKPOINT_EVERY_SECONDS:
            return
        self.started_at = now
        self.running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await asyncio.to_thread(self._checkpoint)
        except sqlite3.Error as exc:
            # Nothing is lost: the frames stay in the WAL for the next checkpoint.
            log.warning("checkpointing the SQLite WAL failed: %s", exc)
        finally:
            self.running = None

    def _checkpoint(self) -> None:
        if self.connection is None:
            self.connection = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_ms / 1000,
                check_same_thread=False,
                uri=self.path.startswith("file:"),
            )
        self.connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def close(self) -> None:
        running = self.running
        if running is not None:
            if running.get_loop() is not asyncio.get_running_loop():
                return  # still someone else's to finish (a test's earlier loop)
            await asyncio.gather(running, return_exceptions=True)
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _configure_sqlite(
    engine: AsyncEngine, busy_timeout_ms: int, *, automatic_checkpoints: bool = True
) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control from the driver so BEGIN is ours (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # First: the pragmas after it may need a lock that another connection holds a moment.
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # NORMAL in WAL mode is durable against application crashes; fsync happens at checkpoint.
        cursor.execute("PRAGMA synchronous=NORMAL")
        if not automatic_checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's job
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("keepdesk_write", False)
        begin = sqlite_driver.WRITE_BEGIN if write else "BEGIN"
        dbapi_connection: Any = conn.connection.dbapi_connection
        if isinstance(dbapi_connection, sqlite_driver.OneTripConnection):
            dbapi_connection.begin_with_next_statement(begin)
        else:
            conn.exec_driver_sql(begin)


class ReadOnlySession(RuntimeError):
    """A statement that writes, run in a session from `Database.reading()`."""


def _autocommit_reads(engine: AsyncEngine) -> AsyncEngine:
    """`engine` (PostgreSQL) for `Database.reading()`: autocommit, and INSERT, UPDATE and
    DELETE refused."""
    return _refusing_writes(
        engine.execution_options(isolation_level="AUTOCOMMIT"), "a write in a read-only session"
    )


_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")  # what a textual statement starts with


def _refusing_writes(engine: AsyncEngine, what: str) -> AsyncEngine:
    """`engine` (a copy from `execution_options`) with INSERT, UPDATE and DELETE refused, the
    ORM's and Core's and textual ones: a listener on this copy alone."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _refuse_writes(
        _conn: Connection,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        context: Any,
        _executemany: bool,
    ) -> None:
        if (context is not None and (context.isinsert or context.isupdate or context.isdelete)) or (
            statement.lstrip()[:7].upper().startswith(_WRITE_VERBS)
        ):
            raise ReadOnlySession(f"{what}: {statement[:80]}")

    return engine


def _ping_on_checkout(engine: AsyncEngine) -> None:
    """Ping a pooled PostgreSQL connection before it is handed out again: one round trip
    (`SELECT 1`, outside any transaction). One that fails it is replaced, with every other
    connection of the pool, before anyone uses it (the pool retries a checkout on
    `DisconnectionError`): after a restart or an outage nothing fails on a dead connection.

    SQLAlchemy's `pool_pre_ping` does the same in three round trips on asyncpg (BEGIN, the
    query, ROLLBACK): three of an API list's eight. Skipping the ping for a connection handed
    back a moment ago (HikariCP's "alive bypass window") saved one more, and was measured: a
    fetch right after PostgreSQL ended its connections then failed on a dead one instead of
    reconnecting (`tests/mail_faults/test_database_down.py`)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        if dbapi_connection is not None:
            record.info["used"] = True

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        if not record.info.get("used"):
            return  # it has just connected
        driver: Any = record.driver_connection  # asyncpg's own connection
        try:
            await_(driver.execute("SELECT 1"))
        except Exception as exc:
            # Most likely the server restarted: its other connections are gone too.
            raise InvalidatePoolError(f"the pooled connection failed its ping: {exc}") from exc


_T = TypeVar("_T")


@contextmanager
def collecting(session: AsyncSession, key: str, into: _T) -> Iterator[_T]:
    """`into` in `session.info[key]` for the block: what a service writes inside is collected
    there, and written by the caller at the block's end (`history.batched_events`)."""
    session.info[key] = into
    try:
        yield into
    finally:
        del session.info[key]


def conflict_insert(session: AsyncSession, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `table` in the session's dialect, so that it takes `ON CONFLICT` clauses
    (`on_conflict_do_nothing`, `on_conflict_do_update`)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def is_unique_violation(exc: BaseException) -> bool:
    """True when a database error is a UNIQUE constraint failing, on either database."""
    orig = getattr(exc, "orig", None)
    text_ = f"{type(orig).__name__} {orig}".lower()
    return "unique" in text_ or "uniqueviolation" in text_
