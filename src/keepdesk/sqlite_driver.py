"""SQLite for the async engine: a statement runs on the event loop's thread when it has shown
it is quick, else in one trip to the connection's thread.

SQLAlchemy's aiosqlite adapter asks aiosqlite's thread for a cursor, the execute, the rows and
the close, each a round trip through a queue and back onto the event loop: four per statement,
five with the read transaction's BEGIN. Here a cursor runs the statement and fetches its rows
in one function, and the results come back together. A transaction's BEGIN travels with its
first statement, and a rollback of a transaction that never ran a statement stays home.

Most of keepdesk's statements take microseconds in SQLite itself, and a trip to the thread
cost more than the statement (about 0.3 ms on a busy 2-core machine): a queue page ran six of
them, an API reply twenty, and at 16 concurrent requests each trip also waited for the loop's
other work while a writer held SQLite's one write lock. So a statement runs on the loop's own
thread when it may: when nothing it does can wait for a lock, and its last run in SQLite took
under `QUICK_SECONDS`. Nothing waits for a lock when the transaction holds the write lock
already, or when the statement is a SELECT (WAL: readers never wait for the writer; only the
recovery of the WAL after a crash holds them up, briefly, and the rule below covers it). A
`BEGIN IMMEDIATE`, which may wait for another process's writer up to the busy timeout, and a
commit that writes the WAL, always go to the thread. A statement that runs on the loop for
longer than `SLOW_SECONDS` goes back to the thread until it has been quick there
`RETRY_AFTER` times in a row: a slow statement (an outbox count at a million rows, say)
stops the loop at most once in that many runs, and a pause that was not the statement's (a
garbage collection, another guest taking the CPU) costs it that many trips, not its place on
the loop for good.

The same aiosqlite connection, thread and error types are used, so pooling, `is_disconnect`
and the exception mapping of the stock dialect are unchanged; server-side cursors (streamed
results) keep the stock cursor. Passed to the engine as its DBAPI module (`module=`), so the
configured URL stays `sqlite+aiosqlite://`.
"""

from __future__ import annotations

import collections
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.connectors.asyncio import AsyncAdapt_dbapi_connection
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

# How db.py begins a write transaction: the write lock is taken at once, or not at all.
WRITE_BEGIN = "BEGIN IMMEDIATE"
# A statement whose last run took less than this in SQLite runs on the event loop next time...
QUICK_SECONDS = 0.001
# ...until a run there takes longer than this: then it goes back to the connection's thread,
# and comes back only after this many quick runs there in a row.
SLOW_SECONDS = 0.005
RETRY_AFTER = 100
# Statements remembered per engine (an IN list of each length is a statement of its own);
# beyond this, new ones stay on the thread.
REMEMBERED = 4096

# description, rowcount, lastrowid, rows, and the seconds SQLite took
_Result = tuple[Any, int, int | None, list[Any], float]


def _run(conn: sqlite3.Connection, begin: str | None, operation: str, parameters: Any) -> _Result:
    """The transaction's BEGIN if it is still to come, the statement, its rows, what the
    cursor says of it, and how long the statement took."""
    if begin is not None:
        conn.execute(begin)
    started = time.perf_counter()
    cursor = conn.cursor()
    try:
        cursor.execute(operation, parameters if parameters is not None else ())
        rows = cursor.fetchall() if cursor.description else []
        took = time.perf_counter() - started
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows, took
    finally:
        cursor.close()


def _run_many(
    conn: sqlite3.Connection, begin: str | None, operation: str, seq: Sequence[Any]
) -> _Result:
    if begin is not None:
        conn.execute(begin)
    started = time.perf_counter()
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, seq)
        took = time.perf_counter() - started
        return cursor.description, cursor.rowcount, cursor.lastrowid, [], took
    finally:
        cursor.close()


class Speeds:
    """What each statement has shown of its speed, and so where it runs (module doc)."""

    __slots__ = ("_owed", "_quick")

    def __init__(self) -> None:
        self._quick: set[str] = set()
        # Quick runs on the thread a statement still owes before it may run on the loop again.
        self._owed: dict[str, int] = {}

    def is_quick(self, operation: str) -> bool:
        return operation in self._quick

    def ran(self, operation: str, seconds: float, *, here: bool) -> None:
        if here:
            if seconds > SLOW_SECONDS:
                self._quick.discard(operation)
                self._owed[operation] = RETRY_AFTER
        elif seconds >= QUICK_SECONDS:
            if operation in self._owed:
                self._owed[operation] = RETRY_AFTER  # not in a row: it starts over
        else:
            owed = self._owed.get(operation, 1) - 1
            if owed > 0:
                self._owed[operation] = owed
            else:
                self._owed.pop(operation, None)
                if len(self._quick) < REMEMBERED:
                    self._quick.add(operation)


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A DBAPI cursor whose execute runs here, or is one call on the connection's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        # No aiosqlite cursor: the statement makes and closes its own.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows: collections.deque[Any] = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    def _take(self, result: _Result) -> float:
        self._description, self._rowcount, self._lastrowid, rows, took = result
        self._rows = collections.deque(rows)
        return took

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._call(_run, operation, parameters)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._call(_run_many, operation, seq_of_parameters)

    def _call(self, run: Callable[..., _Result], operation: Any, parameters: Any) -> None:
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        speeds: Speeds = adapted.dbapi.speeds
        begin, adapted.pending_begin = adapted.pending_begin, None
        adapted.clean = False
        try:
            if (
                begin != WRITE_BEGIN
                and speeds.is_quick(operation)
                and (adapted.holds_write_lock or operation.lstrip()[:6].upper() == "SELECT")
            ):
                took = self._take(run(connection._conn, begin, operation, parameters))
                speeds.ran(operation, took, here=True)
                return
            call = connection._execute(  # type: ignore[no-untyped-call]
                run, connection._conn, begin, operation, parameters
            )
            try:
                took = self._take(await_(call))
            finally:
                if begin == WRITE_BEGIN:
                    # Even when the statement failed, its BEGIN may have taken the lock.
                    adapted.holds_write_lock = connection._conn.in_transaction
            speeds.ran(operation, took, here=False)
        except Exception as error:
            adapted._handle_exception(error)

    async def _async_soft_close(self) -> None:
        return None  # nothing is open on the thread between calls

    def close(self) -> None:
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """An aiosqlite connection whose transactions begin with their first statement, and whose
    quick statements run on the caller's thread (module doc)."""

    __slots__ = ("clean", "holds_write_lock", "pending_begin")
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.pending_begin: str | None = None
        # No statement since the last commit or rollback: no transaction can be open, so the
        # pool's rollback of a returned connection, after the session's own, stays home.
        self.clean = True
        # WRITE_BEGIN went through: no statement of this transaction can wait for a lock.
        self.holds_write_lock = False

    def cursor(self, server_side: bool = False) -> Any:
        if server_side:
            self.clean = False  # the stock cursor: statements this class does not see
        return super().cursor(server_side)

    def begin_with_next_statement(self, begin: str) -> None:
        """Send `begin` (BEGIN or `WRITE_BEGIN`) together with the next statement: a
        transaction's first statement then costs one trip, not two."""
        self.pending_begin = begin

    def rollback(self) -> None:
        self.pending_begin = None  # a BEGIN not sent yet began nothing
        if self.clean:
            return
        if self.holds_write_lock:
            self.holds_write_lock = False
            super().rollback()
        else:
            # No write lock to give back: ending the transaction releases its read mark, with
            # nothing to wait for or to write, so no trip.
            try:
                self._connection._conn.rollback()
            except Exception as error:
                self._handle_exception(error)
        self.clean = True

    def commit(self) -> None:
        self.pending_begin = None
        self.holds_write_lock = False
        if not self.clean:
            super().commit()  # on the thread: the commit writes the WAL
            self.clean = True


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The stock aiosqlite DBAPI adapter, handing out one-trip connections; one per engine,
    with what that engine has learnt of its statements' speed."""

    def __init__(self, aiosqlite: Any, sqlite: Any) -> None:
        super().__init__(aiosqlite, sqlite)
        self.speeds = Speeds()

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        # Opened on aiosqlite's thread, used on the event loop's too (one at a time: each
        # call is awaited before the next is made).
        kw["check_same_thread"] = False
        stock = super().connect(*arg, **kw)
        return OneTripConnection(self, stock._connection)


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
