"""Fixtures for delivering corpus mail through real IMAP and the production fetcher.

One keepdesk instance per test module and database (its app, engine and migrated schema), with
every row emptied before each test, so each case starts from nothing without paying ~1 s of app
start-up, route building and statement compiling ~140 times. On it, a `Desk`: support@example.com
with auto-acknowledgements on, a fresh IMAP account, and alice (admin) on the REST API. The
instance's own MX is `mx.example.com`, the host every corpus mail names in its Received lines,
so the Authentication-Results it writes are trusted (corpus 307, 323).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select, text

from keepdesk.accounts import auth
from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import AgentRole
from keepdesk.app import create_app
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.config import load_settings
from keepdesk.mail import mailboxes
from keepdesk.mail.fetcher import FetchReport, fetch_once
from keepdesk.mail.models import Mailbox, MailMessage, MailReceipt, ProcessedAction
from keepdesk.metadata import metadata
from keepdesk.outbox.models import OutboxKind, OutboxMessage
from keepdesk.runtime import Runtime
from tests.mail_fetch import conftest as mail_fetch
from tests.mail_fetch.conftest import ImapAccount
from tests.support.clock import FakeClock
from tests.support.dovecot import DovecotServer
from tests.support.services import missing

# The fetcher tests' Dovecot fixtures (one server a session, skipped or failed when missing).
dovecot_server = mail_fetch.dovecot_server
dovecot = mail_fetch.dovecot

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
OUR_MX = "mx.example.com"
SUPPORT = "support@example.com"
PROCESSED_FOLDER = "keepdesk/processed"
QUARANTINE_FOLDER = "keepdesk/quarantine"


def corpus_path(number: str) -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the shared corpus is not at {CORPUS} (CI has it)")
    [path] = CORPUS.glob(f"{number}-*.eml")
    return path


def corpus_mail(number: str) -> bytes:
    return corpus_path(number).read_bytes()


def as_stored(raw: bytes) -> bytes:
    """What Dovecot hands back for mail `ImapAccount.append` sent: CRLF line ends, and NUL
    (not allowed in an IMAP literal) replaced by 0x80, which is what Dovecot does (606)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").replace(b"\x00", b"\x80")


def _databases() -> list[str]:
    wanted = os.environ.get("KEEPDESK_TEST_DATABASES", "sqlite,postgres")
    return [d.strip() for d in wanted.split(",") if d.strip()]


@dataclass
class Instance:
    app: FastAPI
    clock: FakeClock

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=_databases())
async def instance(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> AsyncIterator[Instance]:
    root = tmp_path_factory.mktemp("instance")
    if request.param == "sqlite":
        shutil.copyfile(sqlite_template, root / "keepdesk.sqlite3")
        url = f"sqlite+aiosqlite:///{root / 'keepdesk.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_database")
        if url is None:
            missing("no PostgreSQL: set KEEPDESK_TEST_POSTGRES_URL or apt install postgresql")
    with pytest.MonkeyPatch.context() as env:
        # As tests/conftest.py does per test: the developer's own settings must not leak in.
        for name in list(os.environ):
            if name.startswith("KEEPDESK_") and not name.startswith("KEEPDESK_TEST_"):
                env.delenv(name)
        settings = load_settings(
            data_dir=root / "data",
            database_url=url,
            secret_key="test-secret-" + "x" * 32,
            mail_authserv_id=OUR_MX,
        )
    clock = FakeClock()
    app = create_app(settings, start_workers=False, clock=clock)
    async with LifespanManager(app):
        yield Instance(app=app, clock=clock)


async def _empty_tables(runtime: Runtime) -> None:
    async with runtime.db.session(write=True) as session:
        if session.get_bind().dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            await session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(metadata.sorted_tables):
                await session.execute(table.delete())
        await session.commit()


@dataclass
class Desk:
    """support@example.com on a fresh IMAP account, and what keepdesk made of its mail."""

    instance: Instance
    imap: ImapAccount
    mailbox: Mailbox
    alice: httpx.AsyncClient

    @property
    def runtime(self) -> Runtime:
        return self.instance.runtime

    async def deliver(self, raw: bytes) -> bytes:
        """APPEND `raw` to the INBOX; returns the bytes the server now holds."""
        await self.imap.append(raw)
        return as_stored(raw)

    async def fetch(self) -> FetchReport:
        report = await fetch_once(self.runtime, self.mailbox.id)
        assert report.errors == [], report.errors
        return report

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.alice.get(f"/api/v1{path}", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def tickets(self) -> list[dict[str, Any]]:
        """Every ticket, oldest first."""
        page = await self.get("/tickets", sort="created_at", limit=1000)
        items: list[dict[str, Any]] = page["items"]
        return items

    async def ticket(self, number: int) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(f"/tickets/{number}")
        return result

    async def messages(self, number: int) -> list[dict[str, Any]]:
        page = await self.get(f"/tickets/{number}/messages", limit=1000)
        items: list[dict[str, Any]] = page["items"]
        return items

    async def quarantine(self) -> list[dict[str, Any]]:
        page = await self.get("/quarantine", limit=500)
        items: list[dict[str, Any]] = page["items"]
        return items

    async def in_folder(self, name: str) -> int:
        """Mail in a configured folder such as `keepdesk/processed`; Dovecot's Maildir++ names
        it `keepdesk.processed`."""
        return await self.imap.count(name.replace("/", "."))

    async def outbox(self, kind: OutboxKind | None = None) -> list[OutboxMessage]:
        async with self.runtime.db.session() as session:
            query = select(OutboxMessage).order_by(OutboxMessage.id)
            if kind is not None:
                query = query.where(OutboxMessage.kind == kind)
            return list((await session.scalars(query)).all())

    async def receipts(self) -> list[MailReceipt]:
        async with self.runtime.db.session() as session:
            query = select(MailReceipt).order_by(MailReceipt.id)
            return list((await session.scalars(query)).all())

    async def mail_messages(self) -> list[MailMessage]:
        async with self.runtime.db.session() as session:
            query = select(MailMessage).order_by(MailMessage.id)
            return list((await session.scalars(query)).all())

    def assert_raw_kept(self, receipt: MailReceipt, stored: bytes) -> None:
        """AC-9: the raw bytes are in the blob store exactly as the IMAP server returned them
        (the store is content-addressed, so the receipt's hash is the blob's key)."""
        assert receipt.content_sha256 == hashlib.sha256(stored).hexdigest()
        assert self.runtime.blobs.get(receipt.content_sha256) == stored


async def add_agent(
    runtime: Runtime, email: str, name: str, role: AgentRole = AgentRole.admin
) -> str:
    """An agent without a password (hashing one costs ~0.4 s); returns an API token."""
    now = runtime.clock.now()
    async with runtime.db.session(write=True) as session:
        agent = await accounts.create_agent(
            session, by=COMMAND_LINE, email=email, name=name, role=role, now=now
        )
        _, token = await auth.create_api_token(
            session, by=COMMAND_LINE, agent_id=agent.id, name="tests", now=now
        )
        await session.commit()
    return token


async def add_mailbox(runtime: Runtime, address: str, imap: ImapAccount) -> Mailbox:
    async with runtime.db.session(write=True) as session:
        box = await mailboxes.add_mailbox(
            session,
            by=COMMAND_LINE,
            address=address,
            imap_url=imap.url,
            smtp_url="smtp://127.0.0.1:9/",
            secret=runtime.secret,
            now=runtime.clock.now(),
            processed_action=ProcessedAction.move,
            processed_folder=PROCESSED_FOLDER,
            quarantine_folder=QUARANTINE_FOLDER,
            auto_ack=True,
        )
        await session.commit()
        return box


def new_imap_account(server: DovecotServer) -> ImapAccount:
    return ImapAccount(server=server, user=f"u{uuid.uuid4().hex[:12]}@example.com")


@pytest_asyncio.fixture(loop_scope="module")
async def desk(instance: Instance, dovecot: DovecotServer) -> AsyncIterator[Desk]:
    imap_account = new_imap_account(dovecot)
    runtime = instance.runtime
    await _empty_tables(runtime)
    token = await add_agent(runtime, "alice@keepdesk.test", "Alice Admin")
    mailbox = await add_mailbox(runtime, SUPPORT, imap_account)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app),
        base_url="http://keepdesk.test",
        headers={"Authorization": f"Bearer {token}"},
    ) as alice:
        yield Desk(instance=instance, imap=imap_account, mailbox=mailbox, alice=alice)


# --- ticket #1234 of the thread fixtures -------------------------------------------------------

# MANIFEST: "pretend keepdesk sent <kd-1234-out-1@example.com> … <kd-1234-out-5@example.com>".
_FAKE_SENT = re.compile(rb"<kd-1234-out-([1-5])@example\.com>")


@dataclass
class Thread:
    """Ticket #1234 as the MANIFEST sets it up: opened by 301 from alice@example.com, then five
    replies keepdesk sent her, each with a real, signed Message-ID."""

    number: int
    sent: list[str]  # the Message-IDs of out-1 … out-5

    def rewrite(self, raw: bytes) -> bytes:
        """A corpus mail as it would read had keepdesk really sent out-1 … out-5."""
        raw = _FAKE_SENT.sub(lambda m: self.sent[int(m.group(1)) - 1].encode(), raw)
        return raw.replace(b"[#1234]", f"[#{self.number}]".encode())


async def open_thread(desk: Desk) -> Thread:
    await desk.deliver(corpus_mail("301"))
    assert (await desk.fetch()).ingested == 1
    [ticket] = await desk.tickets()
    assert ticket["requester"]["email"] == "alice@example.com"
    number = ticket["number"]
    for n in range(1, 6):
        response = await desk.alice.post(
            f"/api/v1/tickets/{number}/messages", json={"kind": "reply", "body": f"Reply {n}."}
        )
        assert response.status_code == 201, response.text
    sent = [row.message_id_header for row in await desk.outbox(OutboxKind.reply)]
    assert len(sent) == 5
    return Thread(number=number, sent=sent)
