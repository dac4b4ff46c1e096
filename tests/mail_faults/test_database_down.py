"""The database goes away while the fetcher works: SQLite locked by another writer, PostgreSQL
refusing every connection. The pass ends with an error and does nothing more on the IMAP
server; once the database is back, the next pass brings every mail in once (RELIABILITY.md F7,
AC-24)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.models import ProcessedAction
from keepdesk.runtime import Runtime
from tests.mail_faults.conftest import (
    add_box,
    assert_each_mail_once,
    assert_nothing_lost_or_doubled,
    deliver,
    proxied_url,
    server_mail,
)
from tests.mail_faults.proxy import ImapProxy
from tests.mail_fetch.conftest import ImapAccount
from tests.support.clock import FakeClock
from tests.support.postgres import PostgresServer

DESTRUCTIVE = {b"STORE", b"MOVE", b"COPY", b"EXPUNGE", b"CLOSE"}


class Outage:
    """SQLite: another connection holds the write lock (BEGIN EXCLUSIVE). PostgreSQL: the
    database accepts no connections (ALLOW_CONNECTIONS false) and its sessions are ended."""

    def __init__(self, url: str, pg_server: PostgresServer | None) -> None:
        self.url = make_url(url)
        self.pg_server = pg_server
        self.locker: sqlite3.Connection | None = None
        self.active = False

    def begin(self) -> None:
        if self.active:
            return
        self.active = True
        if self.pg_server is None:
            self.locker = sqlite3.connect(self.url.database or "", isolation_level=None, timeout=5)
            self.locker.execute("BEGIN EXCLUSIVE")
            return
        name = self.url.database
        with psycopg.connect(self.pg_server.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

    def end(self) -> None:
        if not self.active:
            return
        self.active = False
        if self.locker is not None:
            self.locker.execute("ROLLBACK")
            self.locker.close()
            self.locker = None
            return
        assert self.pg_server is not None
        with psycopg.connect(self.pg_server.dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{self.url.database}" ALLOW_CONNECTIONS true')


@pytest.fixture
async def impatient(runtime: Runtime, clock: FakeClock) -> AsyncIterator[Runtime]:
    """The test's instance, but a SQLite writer gives up on the lock after 200 ms, and the
    fetcher records two mails to a transaction: the first two are done before the third."""
    settings = runtime.settings.model_copy(
        update={"database_busy_timeout_ms": 200, "mail_fetch_batch": 2}
    )
    async with Runtime.from_settings(settings, clock=clock) as fetcher:
        yield fetcher


@pytest.fixture
def outage(request: pytest.FixtureRequest, runtime: Runtime) -> Iterator[Outage]:
    pg = request.getfixturevalue("pg_server") if runtime.db.dialect == "postgresql" else None
    down = Outage(runtime.settings.effective_database_url, pg)
    try:
        yield down
    finally:
        down.end()


@pytest.mark.parametrize("at", ["select", "third body"])
async def test_with_the_database_down_the_fetcher_touches_nothing_on_the_server(
    runtime: Runtime,
    impatient: Runtime,
    imap_account: ImapAccount,
    proxy: ImapProxy,
    outage: Outage,
    at: str,
) -> None:
    expected = await deliver(imap_account, "f7", 5)
    box = await add_box(
        runtime,
        address="support@example.com",
        imap_url=proxied_url(proxy, imap_account),
        action=ProcessedAction.delete,
    )
    down_from: list[int] = []

    def when() -> None:
        if not outage.active:
            down_from.append(len(proxy.commands))
            outage.begin()

    if at == "select":
        # The first pass ever: its first write (the UIDVALIDITY) is the one that fails.
        proxy.on_command = lambda line: when() if b" SELECT " in line else None
    else:
        proxy.on_body = lambda n: when() if n == 3 else None
    first_kept = 0 if at == "select" else 2

    report = await fetch_once(impatient, box.id)

    assert outage.active and report.errors != [] and report.ingested == first_kept
    assert "database" in report.errors[0]
    server = await server_mail(imap_account)
    assert sorted(h.message_id for h in server) == sorted(expected[first_kept:])
    assert all(h.folder == "INBOX" and not h.flags for h in server), "touched while down"
    since = [c.split(b" ", 2)[1:] for c in proxy.commands[down_from[0] :]]
    assert [c for c in since if c[-1].split(b" ")[0] in DESTRUCTIVE] == []

    outage.end()
    proxy.on_command = proxy.on_body = None
    db, _ = await assert_nothing_lost_or_doubled(runtime, imap_account, box.id, expected)
    assert sorted(db.receipts) == sorted(expected[:first_kept]), "a partial row"
    again = await fetch_once(impatient, box.id)
    assert again.errors == [] and again.ingested == 5 - first_kept
    await assert_each_mail_once(runtime, imap_account, box, expected)
