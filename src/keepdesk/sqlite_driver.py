"""SQLite for the async engine with one trip to the database thread per statement.

SQLAlchemy's aiosqlite adapter asks aiosqlite's thread for a cursor, the execute, the rows and
the close, each a round trip through a queue and back onto the event loop: four per statement,
five with the read transaction's BEGIN. A statement of keepdesk's takes microseconds in SQLite
itself, so the trips were most of a request's database time (a `GET /api/v1/tags` ran 17 of
them). Here a cursor runs the statement and fetches its rows in one function on that thread,
and the results come back together: one trip per statement. A transaction's BEGIN travels
with its first statement, and a rollback of a transaction that never ran a statement stays
home.

A write transaction takes no trip at all once it holds SQLite's write lock. Its `BEGIN
IMMEDIATE` goes to the thread with the first statement, since that may wait for another
process's writer (up to the busy timeout) and the event loop must not wait with it. After
that, nothing a statement does can wait for a lock (WAL: readers never block the writer), so
the statements run on the event loop's own thread, microseconds each. The commit, which
writes the WAL, goes back through the thread. A trip costs more than most statements (about
0.3 ms on a busy 2-core machine), and the write lock was held across every one of them while
the loop served other requests: 16 concurrent API replies on SQLite did 34-45 req/s with a
trip per statement and 59-60 without.

The same aiosqlite connection, thread and error types are used, so pooling, `is_disconnect`
and the exception mapping of the stock dialect are unchanged; server-side cursors (streamed
results) keep the stock cursor. Passed to the engine as its DBAPI module (`module=`), so the
configured URL stays `sqlite+aiosqlite://`.
"""

from __future__ import annotations

import collections
import sqlite3
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

_Result = tuple[Any, int, int | None, list[Any]]


def _run(conn: sqlite3.Connection, begin: str | None, operation: str, parameters: Any) -> _Result:
    """On the database thread: the transaction's BEGIN if it is still to come, the statement,
    its rows, and what the cursor says of it."""
    if begin is not None:
        conn.execute(begin)
    cursor = conn.cursor()
    try:
        cursor.execute(operation, parameters if parameters is not None else ())
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _run_many(
    conn: sqlite3.Connection, begin: str | None, operation: str, seq: Sequence[Any]
) -> _Result:
    if begin is not None:
        conn.execute(begin)
    cursor = conn.cursor()
    try:
        cursor.executemany(operation, seq)
        return cursor.description, cursor.rowcount, cursor.lastrowid, []
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A DBAPI cursor whose execute is one call on the connection's thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_dbapi_connection) -> None:
        # No aiosqlite cursor: the statement makes and closes its own on the thread.
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

    def _take(self, result: _Result) -> None:
        self._description, self._rowcount, self._lastrowid, rows = result
        self._rows = collections.deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._call(_run, operation, parameters)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._call(_run_many, operation, seq_of_parameters)

    def _call(self, run: Callable[..., _Result], operation: Any, parameters: Any) -> None:
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        begin, adapted.pending_begin = adapted.pending_begin, None
        adapted.clean = False
        try:
            if adapted.holds_write_lock:
                self._take(run(connection._conn, None, operation, parameters))
                return
            call = connection._execute(  # type: ignore[no-untyped-call]
                run, connection._conn, begin, operation, parameters
            )
            try:
                self._take(await_(call))
            finally:
                if begin == WRITE_BEGIN:
                    # Even when the statement failed, its BEGIN may have taken the lock.
                    adapted.holds_write_lock = connection._conn.in_transaction
        except Exception as error:
            adapted._handle_exception(error)

    async def _async_soft_close(self) -> None:
        return None  # nothing is open on the thread between calls

    def close(self) -> None:
        self._rows.clear()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """An aiosqlite connection whose transactions begin with their first statement, and whose
    write transactions run their statements on the caller's thread once they hold the lock."""

    __slots__ = ("clean", "holds_write_lock", "pending_begin")
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.pending_begin: str | None = None
        # No statement since the last commit or rollback: no transaction can be open, so the
        # pool's rollback of a returned connection, after the session's own, stays home.
        self.clean = True
        # BEGIN IMMEDIATE went through: the rest of the transaction runs here (module doc).
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
        self.holds_write_lock = False
        if not self.clean:
            super().rollback()
            self.clean = True

    def commit(self) -> None:
        self.pending_begin = None
        self.holds_write_lock = False
        if not self.clean:
            super().commit()
            self.clean = True


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The stock aiosqlite DBAPI adapter, handing out one-trip connections."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        # Opened on aiosqlite's thread, used on the event loop's too (one at a time: each
        # call is awaited before the next is made).
        kw["check_same_thread"] = False
        stock = super().connect(*arg, **kw)
        return OneTripConnection(self, stock._connection)


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
