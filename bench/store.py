"""Cached data sets under bench/data/, and the working copy each run measures.

A data set is built once per size, database and schema revision: its stamp records the size,
the head revision and the builder's version, and a run with the same three reuses it. Each run
then works on a copy (a file copy on SQLite, `CREATE DATABASE … TEMPLATE` on PostgreSQL), so the
tickets a run creates never leak into the next run's numbers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench import dataset
from bench.dataset import Facts
from bench.pg import PgServer
from bench.sinks import PostgresSink, SQLiteSink
from keepdesk import schema
from keepdesk.blobs import BlobStore
from keepdesk.db import Database

log = logging.getLogger("bench.store")

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Workspace:
    """What a keepdesk process is pointed at: a database URL and a data directory."""

    kind: str  # "sqlite" or "postgresql"
    database_url: str
    data_dir: Path
    facts: Facts
    built_seconds: float
    reused: bool


def _stamp_ok(path: Path, expected: dict[str, object]) -> dict[str, object] | None:
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if any(stamp.get(k) != v for k, v in expected.items()):
        return None
    return dict(stamp)


def _expected(tickets: int, **extra: object) -> dict[str, object]:
    return {
        "tickets": tickets,
        "revision": schema.head_revision(),
        "builder": dataset.BUILDER_VERSION,
        **extra,
    }


def _write_stamp(path: Path, expected: dict[str, object], facts: Facts, seconds: float) -> None:
    stamp = {**expected, "facts": facts.to_json(), "built_seconds": round(seconds, 1)}
    path.write_text(json.dumps(stamp, indent=2) + "\n")


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _copy_dir(source: Path, run: Path) -> None:
    """A run's data directory: its own files, the data set's blob store (content-addressed, so
    the run only ever adds to it)."""
    _fresh_dir(run)
    (run / "blobs").symlink_to(source / "blobs", target_is_directory=True)


def _index_for_search(database_url: str) -> None:
    """Fill the full-text index the way an upgrade's backfill does: the bulk load writes rows,
    and keepdesk (not the database) keeps that index, so it starts out empty."""
    from keepdesk.tickets import search

    async def reindex() -> None:
        db = Database(database_url)
        try:
            async with db.session(write=True) as session:
                await search.reindex_all(session)
                await session.commit()
        finally:
            await db.dispose()

    started = time.monotonic()
    asyncio.run(reindex())
    log.info("filled the search index in %.1f s", time.monotonic() - started)


def sqlite_dataset(
    tickets: int, *, root: Path = DATA, rebuild: bool = False, analyze: bool = False
) -> Workspace:
    home = root / f"sqlite-{tickets}"
    db = home / "keepdesk.sqlite3"
    expected = _expected(tickets, analyze=analyze)
    stamp = None if rebuild else _stamp_ok(home / "stamp.json", expected)
    reused = stamp is not None and db.is_file()
    if not reused:
        _fresh_dir(home)
        building = home / "building.sqlite3"
        schema.upgrade(f"sqlite+aiosqlite:///{building}")
        started = time.monotonic()
        facts = dataset.build(
            SQLiteSink(building, analyze=analyze),
            tickets=tickets,
            blobs=BlobStore(home / "blobs"),
            anchor=dataset.anchor_now(),
        )
        _index_for_search(f"sqlite+aiosqlite:///{building}")
        seconds = time.monotonic() - started
        building.rename(db)
        _write_stamp(home / "stamp.json", expected, facts, seconds)
        stamp = _stamp_ok(home / "stamp.json", expected)
    assert stamp is not None
    run = root / f"run-sqlite-{tickets}"
    _copy_dir(home, run)
    started = time.monotonic()
    shutil.copyfile(db, run / "keepdesk.sqlite3")
    log.info("copied the SQLite data set in %.1f s", time.monotonic() - started)
    return Workspace(
        kind="sqlite",
        database_url=f"sqlite+aiosqlite:///{run / 'keepdesk.sqlite3'}",
        data_dir=run,
        facts=Facts.from_json(stamp["facts"]),  # type: ignore[arg-type]
        built_seconds=float(stamp["built_seconds"]),  # type: ignore[arg-type]
        reused=reused,
    )


def postgres_dataset(
    server: PgServer, tickets: int, *, root: Path = DATA, rebuild: bool = False
) -> Workspace:
    home = root / f"postgresql-{tickets}"
    name = f"keepdesk_bench_{tickets}"
    expected = _expected(tickets, server=server.label)
    stamp = None if rebuild else _stamp_ok(home / "stamp.json", expected)
    reused = stamp is not None and server.exists(name)
    if not reused:
        _fresh_dir(home)
        server.create(name)
        schema.upgrade(server.url(name))
        started = time.monotonic()
        facts = dataset.build(
            PostgresSink(server.dsn(name)),
            tickets=tickets,
            blobs=BlobStore(home / "blobs"),
            anchor=dataset.anchor_now(),
        )
        _index_for_search(server.url(name))
        seconds = time.monotonic() - started
        _write_stamp(home / "stamp.json", expected, facts, seconds)
        stamp = _stamp_ok(home / "stamp.json", expected)
    assert stamp is not None
    run_name = f"keepdesk_bench_run_{tickets}"
    started = time.monotonic()
    server.create(run_name, template=name)
    log.info("copied the PostgreSQL data set in %.1f s", time.monotonic() - started)
    run = root / f"run-postgresql-{tickets}"
    _copy_dir(home, run)
    return Workspace(
        kind="postgresql",
        database_url=server.url(run_name),
        data_dir=run,
        facts=Facts.from_json(stamp["facts"]),  # type: ignore[arg-type]
        built_seconds=float(stamp["built_seconds"]),  # type: ignore[arg-type]
        reused=reused,
    )
