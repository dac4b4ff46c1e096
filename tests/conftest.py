"""Fixtures every test shares: a migrated database (SQLite file or PostgreSQL, each test runs on
both), the app with a fake clock, and the named users of STYLE.md.

Set KEEPDESK_TEST_DATABASES=sqlite to run on SQLite only; KEEPDESK_TEST_POSTGRES_URL to use an
existing PostgreSQL server instead of a throwaway one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from keepdesk import schema
from keepdesk.accounts import auth, secrets
from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import AgentRole
from keepdesk.app import create_app
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.config import Settings, load_settings
from keepdesk.metadata import metadata
from keepdesk.runtime import Runtime
from tests.support import postgres
from tests.support.clock import FakeClock
from tests.support.services import missing


def _databases() -> list[str]:
    wanted = os.environ.get("KEEPDESK_TEST_DATABASES", "sqlite,postgres")
    return [d.strip() for d in wanted.split(",") if d.strip()]


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """argon2id at test-sized cost: the algorithm, code path and `$argon2id$` format stay the
    same (as Django's test settings swap in a fast hasher); a real hash costs ~0.4 s here."""
    monkeypatch.setattr(
        secrets, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )
    secrets._dummy_hash.cache_clear()
    yield
    secrets._dummy_hash.cache_clear()


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own KEEPDESK_* settings must not leak into tests."""
    for name in list(os.environ):
        if name.startswith("KEEPDESK_") and not name.startswith("KEEPDESK_TEST_"):
            monkeypatch.delenv(name)


# --- databases --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "keepdesk.sqlite3"
    _in_thread(schema.upgrade, f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[postgres.PostgresServer | None]:
    server = postgres.from_environment()
    if server is not None:
        yield server
        return
    try:
        server = postgres.start_throwaway()
    except (FileNotFoundError, OSError, subprocess.CalledProcessError):
        yield None
        return
    try:
        yield server
    finally:
        server.stop()


def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking set-up (it may start its own event loop) from inside a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def _create_database(server: postgres.PostgresServer, name: str) -> None:
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pg_database(pg_server: postgres.PostgresServer | None) -> str | None:
    """A migrated database for the whole run; tests empty its tables before they start."""
    if pg_server is None:
        return None
    name = f"keepdesk_test_{os.getpid()}"
    _create_database(pg_server, name)
    url = pg_server.url(name)
    _in_thread(schema.upgrade, url)
    return url


@pytest.fixture
def fresh_pg_url(pg_server: postgres.PostgresServer | None) -> str:
    """An empty PostgreSQL database of the test's own (for migration tests)."""
    if pg_server is None:
        missing("no PostgreSQL: set KEEPDESK_TEST_POSTGRES_URL or apt install postgresql")
    assert pg_server is not None
    name = f"keepdesk_t_{uuid.uuid4().hex[:12]}"
    _create_database(pg_server, name)
    return pg_server.url(name)


async def _empty_tables(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(params=_databases())
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> str:
    if request.param == "sqlite":
        path = tmp_path / "keepdesk.sqlite3"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite+aiosqlite:///{path}"
    url = request.getfixturevalue("pg_database")
    if url is None:
        missing("no PostgreSQL: set KEEPDESK_TEST_POSTGRES_URL or apt install postgresql")
    await _empty_tables(url)
    return str(url)


# --- the app ----------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="test-secret-" + "x" * 32,
    )


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, start_workers=False, clock=clock)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    rt: Runtime = app.state.runtime
    return rt


@pytest.fixture
async def anonymous(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keepdesk.test"
    ) as client:
        yield client


@dataclass
class World:
    """The named people of every story: alice (admin), bob (Billing), dave (Support), carol
    (a customer), and the teams Billing and Support."""

    app: FastAPI
    ids: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    _clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, name: str) -> httpx.AsyncClient:
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://keepdesk.test",
            headers={"Authorization": f"Bearer {self.tokens[name]}"},
        )
        self._clients.append(c)
        return c

    async def close(self) -> None:
        for c in self._clients:
            await c.aclose()


PASSWORD = "correct horse battery staple"


@pytest.fixture
async def world(app: FastAPI, runtime: Runtime) -> AsyncIterator[World]:
    w = World(app=app)
    now = runtime.clock.now()
    async with runtime.db.session(write=True) as session:
        billing = await accounts.create_team(session, actor=None, name="Billing", now=now)
        support = await accounts.create_team(session, actor=None, name="Support", now=now)
        people: list[tuple[str, str, AgentRole, list[int]]] = [
            ("alice", "Alice Admin", AgentRole.admin, []),
            ("bob", "Bob Billing", AgentRole.agent, [billing.id]),
            ("dave", "Dave Support", AgentRole.agent, [support.id]),
        ]
        for key, name, role, teams in people:
            agent = await accounts.create_agent(
                session,
                by=COMMAND_LINE,
                email=f"{key}@keepdesk.test",
                name=name,
                role=role,
                team_ids=teams,
                password=PASSWORD,
                now=now,
            )
            _, raw = await auth.create_api_token(
                session, by=COMMAND_LINE, agent_id=agent.id, name="tests", now=now
            )
            w.ids[key], w.tokens[key] = agent.id, raw
        carol = await accounts.create_contact(
            session, email="carol@customer.test", name="Carol Customer", now=now
        )
        w.ids.update(carol=carol.id, billing=billing.id, support=support.id)
        await session.commit()
    try:
        yield w
    finally:
        await w.close()


async def open_ticket(
    client: httpx.AsyncClient, *, team: int | None = None, **fields: Any
) -> dict[str, Any]:
    """Open a ticket through the API as `client`; returns the ticket JSON."""
    body: dict[str, Any] = {
        "subject": "Printer on fire",
        "body": "It started smoking after the update.",
        "requester": {"email": "carol@customer.test", "name": "Carol Customer"},
    }
    if team is not None:
        body["team_id"] = team
    body.update(fields)
    response = await client.post("/api/v1/tickets", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result
