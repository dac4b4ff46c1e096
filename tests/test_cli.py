"""The `keepdesk` command as a sysadmin runs it: the real console script in a child process.

Every mistake is one `error: ...` line and a non-zero exit, never a traceback. Independent runs
go through a small process pool, since each start of the command costs a second or two.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main
from alembic.script import ScriptDirectory
from asgi_lifespan import LifespanManager
from typer.testing import CliRunner

from keepdesk import __version__ as keepdesk_version
from keepdesk import cli, schema
from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import AgentRole
from keepdesk.app import create_app
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.backup import service as backups
from keepdesk.config import load_settings
from keepdesk.db import Database
from keepdesk.runtime import Runtime
from tests.support.processes import KEEPDESK, Result, keepdesk, ok

HEAD = schema.head_revision()
PASSWORD = "correct horse battery staple\n"


def cli_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPDESK_")}
    # Wide, plain help output; warnings are errors here as in the tests themselves.
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb", PYTHONWARNINGS="error")
    env["KEEPDESK_DATA_DIR"] = str(data_dir)
    env.update(settings)
    return env


def assert_one_error_line(result: Result, exit_code: int, *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert result.returncode == exit_code, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


def test_the_console_script_is_installed() -> None:
    assert KEEPDESK.is_file(), f"{KEEPDESK} is missing: pip install -e '.[dev]'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{data_dir / 'keepdesk.sqlite3'}"


async def create_agent(data_dir: Path, email: str, *, role: AgentRole = AgentRole.admin) -> None:
    async with (
        Runtime.from_settings(load_settings(data_dir=data_dir)) as runtime,
        runtime.db.session(write=True) as session,
    ):
        await accounts.create_agent(
            session, by=COMMAND_LINE, email=email, name="Ada", role=role, now=runtime.clock.now()
        )
        await session.commit()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory, migrated, with one admin (ada@example.org) and no teams."""
    data_dir = tmp_path_factory.mktemp("installed")
    schema.upgrade(sqlite_url(data_dir))
    asyncio.run(create_agent(data_dir, "ada@example.org"))
    return data_dir


# --- help ---------------------------------------------------------------------------------------


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


# Every command and command group keepdesk has, with the options it declares.
COMMANDS = {
    path: sorted(
        opt
        for p in command.params
        if getattr(p, "param_type_name", "") == "option"
        for opt in p.opts
        if opt.startswith("--")
    )
    for path, command in _commands(typer.main.get_command(cli.app))
}


def test_the_console_script_answers_help_and_version(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    with ThreadPoolExecutor(max_workers=3) as pool:
        root, serve, version = pool.map(
            lambda args: keepdesk(*args, env=env),
            [("--help",), ("serve", "--help"), ("--version",)],
        )
    for command in ("serve", "worker", "upgrade", "check", "user", "token", "team"):
        assert command in ok(root)
    for option in ("--host", "--port", "--no-workers"):
        assert option in ok(serve)
    assert ok(version).strip() == f"keepdesk {keepdesk_version}"


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "keepdesk")
def test_every_command_explains_itself_and_its_options(path: tuple[str, ...]) -> None:
    # In this process: one start of the console script costs 1-2 s, and the script itself is
    # proven by every other test here. The command tree and its rendering are the same.
    result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "Usage: keepdesk" in result.output
    help_text = " ".join(result.output.split())
    command = typer.main.get_command(cli.app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    summary = (command.help or "").split("\n")[0].strip()
    assert summary, f"'keepdesk {' '.join(path)}' has no help text"
    assert " ".join(summary.split()) in help_text
    for option in [*COMMANDS[path], "--help"]:
        assert option in result.output, f"{option} is missing from the help"


def test_the_design_documents_commands_exist() -> None:
    for path in [
        ("serve",),
        ("worker",),
        ("upgrade",),
        ("check",),
        ("user", "create"),
        ("token", "create"),
        ("mailbox", "add"),
        ("mail", "fetch-once"),
        ("backup",),
        ("backup", "verify"),
        ("restore",),
        ("import", "mbox"),
        ("import", "maildir"),
    ]:
        assert path in COMMANDS, f"'keepdesk {' '.join(path)}' is named in DESIGN.md"
    assert {"--host", "--port", "--no-workers"} <= set(COMMANDS[("serve",)])
    assert {"--name", "--role", "--password-stdin", "--team"} <= set(COMMANDS[("user", "create")])
    assert "--no-backup" in COMMANDS[("upgrade",)]


# --- the first install --------------------------------------------------------------------------


async def test_a_first_install_from_upgrade_to_a_working_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = cli_env(data_dir)

    before = keepdesk("check", env=env)
    assert before.returncode == 1
    assert "FAIL  schema revision none" in before.stdout
    assert "run keepdesk upgrade" in before.stdout

    assert ok(keepdesk("upgrade", env=env)).strip() == f"upgraded the database from empty to {HEAD}"
    assert not (data_dir / "backups").exists()  # nothing to keep a copy of
    assert "created team 'Billing'" in ok(keepdesk("team", "create", "Billing", env=env))
    created = ok(
        keepdesk(
            "user",
            "create",
            "Ada@Example.org",
            "--name",
            "Ada Lovelace",
            "--role",
            "admin",
            "--team",
            "billing",
            "--password-stdin",
            env=env,
            stdin=PASSWORD,
        )
    )
    assert created.startswith("created admin ada@example.org (id ")
    assert "no password set" not in created
    token = ok(keepdesk("token", "create", "ada@example.org", "--name", "ci", env=env)).strip()
    assert token.startswith("kd_")
    assert "\n" not in token

    after = keepdesk("check", env=env)
    assert after.returncode == 0, after.stdout
    assert "FAIL" not in after.stdout
    assert "1 administrator(s)" in after.stdout

    app = create_app(load_settings(data_dir=data_dir), start_workers=False)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://keepdesk.test",
            headers={"Authorization": f"Bearer {token}"},
        ) as client,
    ):
        me = (await client.get("/api/v1/agents/me")).json()
        teams = (await client.get("/api/v1/teams")).json()["items"]
    assert (me["email"], me["name"], me["role"]) == ("ada@example.org", "Ada Lovelace", "admin")
    assert me["team_ids"] == [t["id"] for t in teams if t["name"] == "Billing"]


# --- mistakes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mistake:
    name: str
    args: tuple[str, ...]
    exit_code: int
    says: tuple[str, ...]
    on: str = "installed"  # or "fresh": a data directory that was never upgraded
    settings: dict[str, str] = field(default_factory=dict)


MISTAKES = [
    Mistake(
        "bad setting value",
        ("check",),
        2,
        ("bad setting [server] port (env KEEPDESK_SERVER_PORT)",),
        settings={"KEEPDESK_SERVER_PORT": "eighty"},
    ),
    Mistake(
        "unsupported database",
        ("upgrade",),
        2,
        ("bad setting [database] url", "unsupported database 'mysql'"),
        settings={"KEEPDESK_DATABASE_URL": "mysql://kd@db/keepdesk"},
    ),
    Mistake(
        "serve on a bad port (flag)",
        ("serve", "--port", "70000"),
        2,
        ("bad setting [server] port (env KEEPDESK_SERVER_PORT)",),
        on="fresh",
    ),
    Mistake(
        "bad email",
        ("user", "create", "not-an-address", "--name", "Bo"),
        1,
        ("'not-an-address' is not a valid email address",),
    ),
    Mistake(
        "duplicate user",
        ("user", "create", "ADA@example.org", "--name", "Ada Again"),
        1,
        ("an agent with the address ada@example.org exists already",),
    ),
    Mistake(
        "unknown team",
        ("user", "create", "bo@example.org", "--name", "Bo", "--team", "Nope"),
        1,
        ("no team named 'Nope'", "keepdesk team create"),
    ),
    Mistake(
        "token for an unknown user",
        ("token", "create", "nobody@example.org"),
        1,
        ("no active agent with the address nobody@example.org",),
    ),
    Mistake(
        "user create before upgrade",
        ("user", "create", "ada@example.org", "--name", "Ada"),
        1,
        ("run 'keepdesk upgrade'",),
        on="fresh",
    ),
    Mistake(
        "database server down",
        ("upgrade",),
        1,
        ("cannot reach the database server",),
        settings={"KEEPDESK_DATABASE_URL": f"postgresql://kd:pw@127.0.0.1:{free_port()}/kd"},
    ),
]


@pytest.fixture(scope="module")
def mistakes(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    def attempt(mistake: Mistake) -> Result:
        data_dir = tmp_path_factory.mktemp("fresh") if mistake.on == "fresh" else installed
        env = cli_env(data_dir, **mistake.settings)
        return keepdesk(*mistake.args, env=env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {m.name: pool.submit(attempt, m) for m in MISTAKES}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_a_mistake_is_one_error_line(mistakes: dict[str, Result], mistake: Mistake) -> None:
    assert_one_error_line(mistakes[mistake.name], mistake.exit_code, *mistake.says)


def test_mistakes_changed_nothing(mistakes: dict[str, Result], installed: Path) -> None:
    with sqlite3.connect(installed / "keepdesk.sqlite3") as db:
        emails = [row[0] for row in db.execute("SELECT email FROM agents")]
        tokens = db.execute("SELECT count(*) FROM api_tokens").fetchone()[0]
    assert (emails, tokens) == (["ada@example.org"], 0)


# --- upgrade and its safety copy ----------------------------------------------------------------


async def test_an_older_keepdesk_on_a_newer_database_refuses_in_one_line(
    tmp_path: Path,
) -> None:
    """The database was upgraded by a newer keepdesk (revision 9999), then the software was
    rolled back: upgrade and serve both say so in one line and touch nothing."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    await schema.upgrade_async(sqlite_url(data_dir))
    await create_agent(data_dir, "ada@example.org")
    with sqlite3.connect(data_dir / "keepdesk.sqlite3") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
        original = db.execute("SELECT id, email, role FROM agents ORDER BY id").fetchall()

    for command in ("upgrade", "check"):
        result = keepdesk(command, env=cli_env(data_dir))
        if command == "upgrade":
            assert_one_error_line(result, 1, "newer keepdesk", "9999")
    assert not (data_dir / "backups").exists()
    with sqlite3.connect(data_dir / "keepdesk.sqlite3") as db:
        assert db.execute("SELECT id, email, role FROM agents ORDER BY id").fetchall() == original


async def test_upgrade_of_a_database_with_data_takes_a_verified_backup_first(
    tmp_path: Path,
) -> None:
    script = ScriptDirectory.from_config(schema.alembic_config("sqlite://"))
    previous = script.get_revision(schema.head_revision()).down_revision
    if previous is None:
        pytest.skip("only one migration exists yet: no older schema to upgrade from")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    await schema.upgrade_async(sqlite_url(data_dir))
    await create_agent(data_dir, "ada@example.org")
    await schema.downgrade_async(sqlite_url(data_dir), str(previous))

    result = keepdesk("upgrade", env=cli_env(data_dir))

    assert result.returncode == 0, result.stderr
    (copy,) = (data_dir / "backups").iterdir()
    assert copy.name.startswith(f"pre-upgrade-{previous}-") and copy.suffix == ".tar"
    assert f"verified backup taken first: {copy}" in result.stdout
    manifest = backups.verify_archive(copy)
    assert manifest is not None
    assert (manifest.schema_revision, manifest.counts["agents"]) == (previous, 1)
    with tarfile.open(copy) as archive:
        member = archive.extractfile("db/agents.jsonl")
        assert member is not None
        saved = [json.loads(line) for line in member.read().splitlines()]
    assert [a["email"] for a in saved] == ["ada@example.org"]


def test_upgrade_beside_another_programs_tables_leaves_them_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "keepdesk.sqlite3") as db:
        db.execute("CREATE TABLE inventory (item TEXT, amount INTEGER)")
        db.executemany("INSERT INTO inventory VALUES (?, ?)", [("toner", 3), ("paper", 500)])

    out = ok(keepdesk("upgrade", env=cli_env(data_dir)))

    assert out.strip() == f"upgraded the database from empty to {HEAD}"
    assert not (data_dir / "backups").exists()  # no keepdesk data yet, so nothing to back up
    with sqlite3.connect(data_dir / "keepdesk.sqlite3") as db:
        assert db.execute("SELECT * FROM inventory ORDER BY item").fetchall() == [
            ("paper", 500),
            ("toner", 3),
        ]
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)


async def test_upgrade_builds_the_schema_on_postgresql(fresh_pg_url: str, tmp_path: Path) -> None:
    plain_url = fresh_pg_url.replace("postgresql+asyncpg://", "postgresql://")
    env = cli_env(tmp_path / "data", KEEPDESK_DATABASE_URL=plain_url)

    out = ok(keepdesk("upgrade", env=env))

    assert out.strip() == f"upgraded the database from empty to {HEAD}"
    db = Database(fresh_pg_url)
    try:
        assert await schema.current_revision(db) == HEAD
    finally:
        await db.dispose()


# --- serve --------------------------------------------------------------------------------------


def wait_until_healthy(process: subprocess.Popen[bytes], port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        # Paces the loop, and stops it early if the server died.
        try:
            process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"keepdesk serve exited with {process.returncode}")
    raise AssertionError(f"keepdesk serve did not answer /healthz within {seconds} s")


def test_serve_on_a_fresh_data_dir_creates_the_schema_serves_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(KEEPDESK), "serve", "--port", str(port)],
            env=cli_env(tmp_path / "data"),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_healthy(process, port, seconds=30)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.headers["x-content-type-options"] == "nosniff"
    finally:
        process.terminate()
        try:
            exit_code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    log = log_path.read_text()
    # uvicorn shuts down gracefully, then re-raises the signal it caught so a supervisor sees
    # how the process ended; systemd and container runtimes count that as a clean stop.
    assert exit_code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log
    assert "Traceback" not in log
    assert "no administrator yet. Create one with: keepdesk user create" in log
    assert f"on http://127.0.0.1:{port}" in log
    with sqlite3.connect(tmp_path / "data" / "keepdesk.sqlite3") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)


def test_a_misspelt_setting_in_the_environment_is_pointed_out(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data", KEEPDESK_SERVR_PORT="9000")
    result = keepdesk("check", env=env)
    assert "warning: KEEPDESK_SERVR_PORT is not a keepdesk setting and is ignored" in (
        result.stderr
    )
