"""The safety copy `keepdesk upgrade` takes before it migrates a database that holds data.

SQLite is copied through its online backup API (consistent while the server runs); PostgreSQL
with `pg_dump --format=custom`. The full backup and restore tooling builds on the same idea.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from keepdesk.errors import Unavailable


def snapshot(database_url: str, target_dir: Path, *, label: str, now: datetime) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        source = Path(url.database or "")
        target = target_dir / f"{label}-{stamp}.sqlite3"
        _sqlite_copy(source, target)
        return target
    target = target_dir / f"{label}-{stamp}.pgdump"
    _pg_dump(database_url, target)
    return target


def _sqlite_copy(source: Path, target: Path) -> None:
    partial = target.with_suffix(".partial")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    with partial.open("rb") as f:
        os.fsync(f.fileno())
    partial.rename(target)


def _pg_dump(database_url: str, target: Path) -> None:
    pg_dump = shutil.which("pg_dump") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))), None
    )
    if pg_dump is None:
        raise Unavailable(
            "pg_dump is not installed (Debian: apt install postgresql-client); install it, or "
            "take your own backup and run 'keepdesk upgrade --no-backup'"
        )
    url = make_url(database_url)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password  # never on the command line, where ps shows it
    args = [
        pg_dump,
        "--format=custom",
        f"--file={target}.partial",
        f"--host={url.host or 'localhost'}",
        f"--port={url.port or 5432}",
        f"--username={url.username or 'postgres'}",
        url.database or "postgres",
    ]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        Path(f"{target}.partial").unlink(missing_ok=True)
        reason = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise Unavailable(f"pg_dump failed: {reason}")
    Path(f"{target}.partial").rename(target)
