"""A PostgreSQL server for the tests: the one named by KEEPDESK_TEST_POSTGRES_URL, or a
throwaway cluster started here (initdb + pg_ctl in a temp dir, on a free loopback port).

As root, initdb and pg_ctl refuse to run, so they run as the `postgres` system user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.support.processes import free_port


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str | None
    data_dir: Path | None = None
    bin_dir: Path | None = None

    def url(self, database: str) -> str:
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql+asyncpg://{auth}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        password = f" password={self.password}" if self.password else ""
        return f"host={self.host} port={self.port} user={self.user} dbname={database}{password}"

    def stop(self) -> None:
        if self.data_dir is None or self.bin_dir is None:
            return
        run_as_owner(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            check=False,
        )
        shutil.rmtree(self.data_dir, ignore_errors=True)


def find_bin_dir() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def run_as_owner(args: list[str], *, check: bool = True) -> None:
    """Run a PostgreSQL server program: initdb and pg_ctl refuse to run as root, so as root it
    runs as the postgres user, who owns the cluster."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    subprocess.run(args, check=check, capture_output=True, text=True)


def from_environment() -> PostgresServer | None:
    raw = os.environ.get("KEEPDESK_TEST_POSTGRES_URL")
    if not raw:
        return None
    url = make_url(raw)
    return PostgresServer(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
    )


def start_throwaway() -> PostgresServer:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL server binaries (apt install postgresql) not found")
    root = Path(tempfile.mkdtemp(prefix="keepdesk-pg-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    run_as_owner(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(root / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    run_as_owner(
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-l",
            str(root / "postgres.log"),
            "-w",
            "-t",
            "30",
            "-o",
            options,
            "start",
        ]
    )
    return PostgresServer(
        host="127.0.0.1", port=port, user="postgres", password=None, data_dir=root, bin_dir=bin_dir
    )
