"""Where the data set builder's rows go: a SQLite file or a PostgreSQL database, loaded in bulk.

Rows arrive already in the database's own form (the builder asks the sink how to write a
timestamp, a flag, JSON), so no per-value type processing runs: that would triple the build.
Secondary indexes are dropped before the load and re-created from their own DDL afterwards,
so the schema is exactly what the migrations made.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert
from sqlalchemy.dialects import sqlite as sqlite_dialect

from keepdesk.metadata import metadata

Row = tuple[Any, ...]


def check_columns(table: str, columns: Sequence[str]) -> None:
    """Fail loudly when the schema moved on: a new column would be silently left empty."""
    actual = [c.name for c in metadata.tables[table].columns]
    if sorted(actual) != sorted(columns):
        raise RuntimeError(
            f"bench/dataset.py is out of step with the {table} table: it writes {sorted(columns)}"
            f" but the table has {sorted(actual)}"
        )


class Sink(ABC):
    tables: Sequence[str] = ()

    @abstractmethod
    def ts(self, value: datetime) -> Any:
        """A timestamp column's value for a naive datetime that holds UTC."""

    @abstractmethod
    def flag(self, value: bool) -> Any: ...

    def json(self, value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    @abstractmethod
    def start(self, tables: Sequence[str]) -> None:
        """Drop the secondary indexes of `tables` and open the load."""

    @abstractmethod
    def insert(self, table: str, columns: Sequence[str], rows: list[Row]) -> None: ...

    @abstractmethod
    def finish(self) -> None:
        """Commit, re-create the indexes, and leave the database as a running keepdesk would."""


class SQLiteSink(Sink):
    def __init__(self, path: Path, *, analyze: bool) -> None:
        self.path = path
        self.analyze = analyze
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.indexes: list[str] = []
        self._sql: dict[tuple[str, tuple[str, ...]], str] = {}

    def ts(self, value: datetime) -> str:
        # The text keepdesk's UTCDateTime stores on SQLite (naive UTC, SQLAlchemy's format):
        # SQLite compares these strings, so every row must use exactly this form.
        return value.isoformat(" ", "microseconds")

    def flag(self, value: bool) -> int:
        return 1 if value else 0

    def start(self, tables: Sequence[str]) -> None:
        cur = self.conn.cursor()
        # A throwaway build: a crash leaves a half file that the stamp never vouches for.
        cur.execute("PRAGMA journal_mode=OFF")
        cur.execute("PRAGMA synchronous=OFF")
        cur.execute("PRAGMA foreign_keys=OFF")
        cur.execute("PRAGMA cache_size=-262144")  # 256 MiB
        names = ",".join("?" * len(tables))
        self.indexes = [
            sql
            for (sql,) in cur.execute(
                f"SELECT sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "  # noqa: S608
                f"AND tbl_name IN ({names})",
                list(tables),
            )
        ]
        for (name,) in cur.execute(
            f"SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL "  # noqa: S608
            f"AND tbl_name IN ({names})",
            list(tables),
        ).fetchall():
            cur.execute(f'DROP INDEX "{name}"')
        cur.execute("BEGIN")

    def insert(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        key = (table, tuple(columns))
        sql = self._sql.get(key)
        if sql is None:
            check_columns(table, columns)
            stmt = insert(metadata.tables[table])
            compiled = stmt.compile(
                dialect=sqlite_dialect.dialect(paramstyle="qmark"), column_keys=list(columns)
            )
            sql = self._sql[key] = str(compiled)
        self.conn.executemany(sql, rows)

    def finish(self) -> None:
        cur = self.conn.cursor()
        cur.execute("COMMIT")
        for sql in self.indexes:
            cur.execute(sql)
        if self.analyze:
            cur.execute("ANALYZE")
        # What keepdesk's engine would set on its first connection anyway.
        cur.execute("PRAGMA journal_mode=WAL")
        self.conn.close()


class PostgresSink(Sink):
    """COPY into a fresh database; foreign keys are checked by nobody during the load when the
    role may turn them off (superuser), as pg_restore does."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=False)
        self.indexes: list[tuple[str, str]] = []
        self.tables: Sequence[str] = ()

    def ts(self, value: datetime) -> datetime:
        return value  # naive, read as UTC: the load session's time zone is UTC

    def flag(self, value: bool) -> bool:
        return value

    def start(self, tables: Sequence[str]) -> None:
        self.tables = tables
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                "AND tablename = ANY(%s) AND indexname NOT IN (SELECT conname FROM pg_constraint)",
                (list(tables),),
            )
            self.indexes = [(name, ddl) for name, ddl in cur.fetchall()]
            for name, _ in self.indexes:
                cur.execute(f'DROP INDEX "{name}"')
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            row = cur.fetchone()
            if row and row[0]:
                cur.execute("SET session_replication_role = replica")
        self.conn.commit()

    def insert(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        check_columns(table, columns)
        names = ", ".join(f'"{c}"' for c in columns)
        with (
            self.conn.cursor() as cur,
            cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def finish(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SET session_replication_role = DEFAULT")
            for _, ddl in self.indexes:
                cur.execute(ddl)
            for table in self.tables:
                cur.execute(
                    "SELECT pg_get_serial_sequence(%s, 'id') FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = %s AND column_name = 'id'",
                    (table, table),
                )
                row = cur.fetchone()
                if row and row[0]:
                    cur.execute(
                        f'SELECT setval(%s, (SELECT coalesce(max(id), 0) + 1 FROM "{table}"), '  # noqa: S608
                        "false)",
                        (row[0],),
                    )
        self.conn.commit()
        # What autovacuum does on its own shortly after a load: statistics and the visibility
        # map (index-only scans).
        self.conn.autocommit = True
        self.conn.execute("VACUUM (ANALYZE)")
        self.conn.close()
