"""The PostgreSQL server the benchmark uses: one named by URL, or a cluster of its own.

`--pg-url` (or KEEPDESK_BENCH_POSTGRES_URL) names a server; the benchmark creates its own
databases there (`keepdesk_bench_*`) and touches no other. Without one, it keeps a cluster under
bench/data/postgres (initdb once, started for the run, stopped after), so the cached data set
outlives the run. That cluster runs with PostgreSQL's defaults: fsync and synchronous commit on,
unlike the throwaway test clusters, because a benchmark of a durable helpdesk must pay for it.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url
from tests.support.postgres import find_bin_dir, run_as_owner
from tests.support.processes import free_port

log = logging.getLogger("bench.pg")


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str | None
    maintenance_db: str
    label: str
    cluster: Path | None = None
    bin_dir: Path | None = None

    def url(self, database: str) -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql+asyncpg://{auth}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str | None = None) -> str:
        password = f" password={self.password}" if self.password else ""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"dbname={database or self.maintenance_db}{password}"
        )

    def version(self) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def exists(self, database: str) -> bool:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            return row.fetchone() is not None

    def drop(self, database: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def create(self, database: str, *, template: str | None = None) -> None:
        """An empty database, or a copy of `template`. A copy is made file by file where the
        server can (PostgreSQL 15's default writes the whole copy to the WAL, and the
        checkpoint that follows wrote those 550 MB at 100,000 tickets all through the next
        three minutes of measurements), then checkpointed, so a run starts with nothing of
        the copy left to write."""
        self.drop(database)
        clause = f' TEMPLATE "{template}"' if template else ""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            if template and conn.info.server_version >= 150000:
                clause += " STRATEGY = FILE_COPY"
            conn.execute(f'CREATE DATABASE "{database}"{clause}')
            if template:
                conn.execute("CHECKPOINT")

    def stop(self) -> None:
        if self.cluster is None or self.bin_dir is None:
            return
        run_as_owner(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.cluster / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            check=False,
        )


def from_url(raw: str) -> PgServer:
    url = make_url(raw)
    return PgServer(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        maintenance_db=url.database or "postgres",
        label=f"{url.host or '127.0.0.1'}:{url.port or 5432}",
    )


# What this module puts in a cluster's folder.
_OURS = frozenset({"data", "postgres.log"})


def own_cluster(root: Path) -> PgServer:
    """Start (creating it the first time) the benchmark's own cluster under `root`."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError(
            "PostgreSQL server binaries not found (apt install postgresql), and no "
            "--pg-url / KEEPDESK_BENCH_POSTGRES_URL given"
        )
    data = root / "data"
    if not (data / "PG_VERSION").is_file():
        # What an interrupted initdb left is ours to clear; a folder of anything else is not.
        others = (
            sorted(p.name for p in root.iterdir() if p.name not in _OURS) if root.exists() else []
        )
        if others:
            raise FileExistsError(
                f"{root} holds {', '.join(others[:5])}: not the benchmark's PostgreSQL cluster, "
                "so it is left alone (choose an empty folder)"
            )
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        log.info("creating the benchmark's PostgreSQL cluster in %s", root)
        run_as_owner(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
    if (data / "postmaster.pid").is_file():
        # Left running by an interrupted run: it is ours, so stop it and start it our way.
        run_as_owner(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False
        )
    port = free_port()
    # Defaults, but for where it listens and enough memory that a data set of a million
    # tickets is not all disk reads: what any production install would set.
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c shared_buffers=512MB"
    run_as_owner(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "postgres.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        ]
    )
    return PgServer(
        host="127.0.0.1",
        port=port,
        user="postgres",
        password=None,
        maintenance_db="postgres",
        label=f"own cluster ({bin_dir.parent.name})",
        cluster=root,
        bin_dir=bin_dir,
    )
