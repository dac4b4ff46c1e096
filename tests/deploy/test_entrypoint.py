"""The container image's logic, run here without a container engine: deploy/entrypoint.sh
migrates, creates the first administrator once, reads secrets from files, refuses root, and
gives up on an unreachable database within its deadline, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from keepdesk import schema
from keepdesk.accounts import secrets
from keepdesk.accounts.models import Agent, AgentRole
from keepdesk.config import load_settings
from keepdesk.runtime import Runtime
from tests.support import processes

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
ADMIN_PASSWORD = "correct horse battery staple"
# What does not depend on the database runs once, on SQLite.
ON_SQLITE = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


def entrypoint(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite in the data directory (the image's default), else an empty PostgreSQL
    database's URL as an operator writes it: postgresql://user@host:port/name."""
    if request.param == "sqlite":
        return None
    url = make_url(request.getfixturevalue("fresh_pg_url"))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def env(tmp_path: Path, database: str | None) -> dict[str, str]:
    """What compose.yaml gives the container: a data directory, the database, the first admin
    (and, for tests only, leave to run as root: this suite runs as root on CI)."""
    password_file = tmp_path / "admin_password"
    password_file.write_text(ADMIN_PASSWORD + "\n")
    settings = {
        "KEEPDESK_DATA_DIR": str(tmp_path / "data"),
        "KEEPDESK_ADMIN_EMAIL": "ada@example.org",
        "KEEPDESK_ADMIN_PASSWORD_FILE": str(password_file),
        "KEEPDESK_ALLOW_ROOT": "1",
    }
    if database is not None:
        # As compose.yaml does it: the URL without, the password in a file. The test server
        # trusts local connections, so any password works; what is tested is that one full of
        # URL syntax reaches the driver intact instead of breaking the URL.
        db_password = tmp_path / "db_password"
        db_password.write_text("p@ss:w/rd%#?x\n")
        settings["KEEPDESK_DATABASE_URL"] = database
        settings["KEEPDESK_DATABASE_PASSWORD_FILE"] = str(db_password)
    return processes.environment(**settings)


def runtime_of(env: dict[str, str]) -> Runtime:
    return Runtime.from_settings(
        load_settings(
            data_dir=Path(env["KEEPDESK_DATA_DIR"]),
            database_url=env.get("KEEPDESK_DATABASE_URL"),
            secret_key=env.get("KEEPDESK_SECRET_KEY"),
        )
    )


async def admins(env: dict[str, str]) -> list[Agent]:
    async with runtime_of(env) as runtime, runtime.db.session() as session:
        return list(
            (await session.scalars(select(Agent).where(Agent.role == AgentRole.admin))).all()
        )


def test_the_entrypoint_is_executable() -> None:
    assert os.access(ENTRYPOINT, os.X_OK), "chmod +x deploy/entrypoint.sh (git keeps the mode)"


async def test_it_migrates_and_creates_the_first_admin_once(env: dict[str, str]) -> None:
    first = entrypoint("--check-only", env=env)
    assert first.returncode == 0, first.stderr
    assert "upgraded the database from empty to" in first.stderr
    assert "created admin ada@example.org" in first.stderr
    assert "ready (--check-only" in first.stderr
    assert "p@ss" not in first.stderr

    async with runtime_of(env) as runtime:
        assert await schema.current_revision(runtime.db) == schema.head_revision()
    [ada] = await admins(env)
    assert ada.email == "ada@example.org"
    assert ada.name == "Administrator"
    assert secrets.verify_password(ada.password_hash, ADMIN_PASSWORD)

    # A restart: nothing to migrate, and the admin exists, even with another address given.
    second = entrypoint("--check-only", env={**env, "KEEPDESK_ADMIN_EMAIL": "eve@example.org"})
    assert second.returncode == 0, second.stderr
    assert "the database is up to date" in second.stderr
    assert "created admin" not in second.stderr
    assert [a.email for a in await admins(env)] == ["ada@example.org"]


@ON_SQLITE
def test_an_admin_address_without_a_password_file_stops_it_at_once(env: dict[str, str]) -> None:
    del env["KEEPDESK_ADMIN_PASSWORD_FILE"]
    result = entrypoint("--check-only", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "error: KEEPDESK_ADMIN_EMAIL is set but KEEPDESK_ADMIN_PASSWORD_FILE is not"
    )
    assert not Path(env["KEEPDESK_DATA_DIR"]).exists(), "it stopped before touching anything"


def _unshared_root() -> list[str] | None:
    """How to run a command as (user-namespace) root when this test does not run as root."""
    if os.geteuid() == 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-r", "true"], check=False).returncode:
        return None
    return [unshare, "--map-root-user"]


@ON_SQLITE
def test_it_refuses_to_run_as_root(env: dict[str, str]) -> None:
    prefix = _unshared_root()
    if prefix is None:
        pytest.skip("not root, and no user namespaces to become root in")
    del env["KEEPDESK_ALLOW_ROOT"]
    result = subprocess.run(
        [*prefix, str(ENTRYPOINT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "error: refusing to run as root" in result.stderr
    assert not Path(env["KEEPDESK_DATA_DIR"]).exists(), "it stopped before touching anything"


@ON_SQLITE
async def test_secrets_come_from_files(env: dict[str, str], tmp_path: Path) -> None:
    secret_file = tmp_path / "secret_key"
    secret_file.write_text("s" * 48 + "\n")
    both = entrypoint(
        "--check-only",
        env={**env, "KEEPDESK_SECRET_KEY_FILE": str(secret_file), "KEEPDESK_SECRET_KEY": "x" * 40},
    )
    assert both.returncode == 1
    assert "both KEEPDESK_SECRET_KEY and KEEPDESK_SECRET_KEY_FILE are set" in both.stderr
    unreadable = entrypoint(
        "--check-only", env={**env, "KEEPDESK_SECRET_KEY_FILE": str(tmp_path / "nope")}
    )
    assert unreadable.returncode == 1
    assert f"KEEPDESK_SECRET_KEY_FILE: cannot read {tmp_path / 'nope'}" in unreadable.stderr

    # Without an admin address no admin is made: `keepdesk serve` logs how to make one.
    del env["KEEPDESK_ADMIN_EMAIL"]
    result = entrypoint("--check-only", env={**env, "KEEPDESK_SECRET_KEY_FILE": str(secret_file)})
    assert result.returncode == 0, result.stderr
    # With the secret given, none is generated into the data directory.
    assert not (tmp_path / "data" / "secret_key").exists()
    assert await admins(env) == []


def test_an_unreachable_database_times_out_with_the_reason(tmp_path: Path) -> None:
    closed = processes.free_port()
    env = processes.environment(
        KEEPDESK_DATA_DIR=str(tmp_path / "data"),
        KEEPDESK_DATABASE_URL=f"postgresql://keepdesk:secret-pw@127.0.0.1:{closed}/keepdesk",
        KEEPDESK_DB_WAIT_SECONDS="5",
        KEEPDESK_ALLOW_ROOT="1",
    )
    started = time.monotonic()
    result = entrypoint("--check-only", env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "keepdesk-entrypoint: error: the database did not answer within 5s "
        "(KEEPDESK_DB_WAIT_SECONDS): database postgresql+asyncpg://keepdesk:***@127.0.0.1:"
    ), result.stderr
    assert "ConnectionRefusedError" in last
    assert "secret-pw" not in result.stderr
    # The deadline, plus at most one last attempt (5-15 s, as keepdesk takes seconds to start).
    assert elapsed < 5 + 15 + 5


@ON_SQLITE
def test_after_a_failed_migration_it_waits_for_a_person(env: dict[str, str]) -> None:
    data = Path(env["KEEPDESK_DATA_DIR"])
    data.mkdir()
    (data / "upgrade-failed").write_text("error: migration failed (boom)\n")
    result = entrypoint("--check-only", env=env)
    assert result.returncode == 1
    assert "a previous 'keepdesk upgrade' failed; it said: error: migration failed (boom)" in (
        result.stderr
    )
    assert f"then delete {data / 'upgrade-failed'}" in result.stderr
    assert not (data / "keepdesk.sqlite3").exists()


@ON_SQLITE
def test_other_commands_run_without_upgrading(env: dict[str, str]) -> None:
    result = entrypoint("check", env=env)
    assert result.returncode == 1  # `keepdesk check` itself: the schema is not there yet
    assert "FAIL  schema revision none" in result.stdout
    assert "upgraded" not in result.stderr


@ON_SQLITE
def test_it_becomes_keepdesk_serve(env: dict[str, str], tmp_path: Path) -> None:
    del env["KEEPDESK_ADMIN_EMAIL"]
    env["KEEPDESK_BACKUP_EVERY_HOURS"] = "0"
    port = processes.free_port()
    # The image listens on 0.0.0.0; a later --host wins, and a test stays on loopback.
    server = processes.start(
        [ENTRYPOINT, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log_path=tmp_path / "serve.log",
    )
    try:
        processes.wait_until_healthy(server, f"http://127.0.0.1:{port}/healthz")
        # exec: the entrypoint's own process is now keepdesk serve, so signals reach it.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline
        assert not any(b"entrypoint" in part for part in cmdline)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.json()["checks"]["migrations"] == "ok"
    finally:
        code = server.stop()
    # uvicorn ends a graceful shutdown by re-raising the SIGTERM it caught.
    assert code in (0, -15), server.log()
    assert "upgraded the database from empty" in server.log()
