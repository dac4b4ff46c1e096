"""Two keepdesk instances on one PostgreSQL, as behind a load balancer: two real `keepdesk serve`
processes, each with its background work, one mailbox on a real Dovecot, a real SMTP server.

500 mails arrive while both run: 500 tickets, none twice (receipts by UID, tickets by
Message-ID). 200 replies are posted, half to each instance: the SMTP server receives each
exactly once (by Message-ID). Database leases and `FOR UPDATE SKIP LOCKED` are what make it so
(issue 5, item 6; RELIABILITY.md F17).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aioimaplib
import httpx
import pytest
from sqlalchemy import func, select

from keepdesk import schema
from keepdesk.accounts import auth
from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import AgentRole
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.config import load_settings
from keepdesk.leases import Lease
from keepdesk.mail import mailboxes
from keepdesk.mail.models import Direction, MailMessage, MailReceipt, ProcessedAction
from keepdesk.outbox.models import DeliveryStatus, OutboxKind, OutboxMessage
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import Ticket
from tests.mail_delivery.conftest import Sink
from tests.support import processes
from tests.support.dovecot import PASSWORD, DovecotServer

MAILS = 500
REPLIES = 200
SECRET = "shared-by-every-instance-" + "s" * 32
# On a quiet two-core machine the whole story takes about a minute; the deadline only says
# when waiting longer is pointless (a machine busy with other work can be several times slower).
DEADLINE = 240


def _mail(n: int) -> bytes:
    return (
        f"From: Customer {n} <customer{n}@customer.test>\r\n"
        "To: support@acme.example\r\n"
        f"Subject: Request number {n}\r\n"
        f"Message-ID: <request-{n}@customer.test>\r\n"
        "Date: Mon, 02 Mar 2026 09:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Hello, this is request {n}.\r\n"
    ).encode()


async def _append_all(server: DovecotServer, user: str, count: int) -> None:
    """APPEND `count` mails over one connection, as a busy MX would deliver them."""
    client = aioimaplib.IMAP4(host=server.host, port=server.port, timeout=30)
    await client.wait_hello_from_server()
    assert (await client.login(user, PASSWORD)).result == "OK"
    try:
        for n in range(count):
            response = await client.append(_mail(n), mailbox="INBOX")
            assert response.result == "OK", response
    finally:
        await client.logout()


async def _poll(
    what: str, seconds: float, done: Callable[[], Awaitable[bool]], logs: Callable[[], str]
) -> None:
    deadline = time.monotonic() + seconds
    while not await done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds:.0f}s\n{logs()}")
        await asyncio.sleep(0.2)  # polling, bounded by the deadline


@dataclass
class Instance:
    running: processes.Running
    base_url: str

    @property
    def holder(self) -> str:
        # What keepdesk.leases.holder_name() says inside that process.
        return f"{socket.gethostname()}:{self.running.pid}"[:100]


@pytest.fixture
def pg_url(fresh_pg_url: str) -> str:
    if "postgres" not in os.environ.get("KEEPDESK_TEST_DATABASES", "postgres"):
        pytest.skip("KEEPDESK_TEST_DATABASES leaves PostgreSQL out")
    return fresh_pg_url


@pytest.fixture
async def instances(pg_url: str, tmp_path: Path) -> AsyncIterator[list[Instance]]:
    """Two `keepdesk serve` processes with their background work, on one database, one
    attachments directory (as docs/operations.md asks) and one secret."""
    await schema.upgrade_async(pg_url)  # `keepdesk upgrade`, run once before the instances
    started: list[Instance] = []
    try:
        for name in ("a", "b"):
            port = processes.free_port()
            env = processes.environment(
                KEEPDESK_DATABASE_URL=pg_url,
                KEEPDESK_DATA_DIR=str(tmp_path / "data"),
                KEEPDESK_SECRET_KEY=SECRET,
                KEEPDESK_BACKUP_EVERY_HOURS="0",
            )
            running = processes.start(
                [processes.KEEPDESK, "serve", "--port", str(port), "--log-format", "json"],
                env=env,
                log_path=tmp_path / f"{name}.log",
            )
            started.append(Instance(running, f"http://127.0.0.1:{port}"))
        for instance in started:
            await asyncio.to_thread(
                processes.wait_until_healthy, instance.running, f"{instance.base_url}/healthz"
            )
        yield started
    finally:
        processes.stop_all([i.running for i in started])


def _logs(instances: list[Instance]) -> str:
    return "\n".join(f"--- {i.base_url}\n{i.running.log()[-6000:]}" for i in instances)


async def test_two_instances_fetch_each_mail_once_and_send_each_reply_once(
    instances: list[Instance], pg_url: str, tmp_path: Path, dovecot: DovecotServer, sink: Sink
) -> None:
    user = f"scale{os.getpid()}@acme.example"
    settings = load_settings(data_dir=tmp_path / "data", database_url=pg_url, secret_key=SECRET)
    async with Runtime.from_settings(settings) as runtime:
        async with runtime.db.session(write=True) as session:
            box = await mailboxes.add_mailbox(
                session,
                by=COMMAND_LINE,
                address="support@acme.example",
                imap_url=dovecot.url(user),
                smtp_url=f"smtp://127.0.0.1:{sink.port}",
                secret=runtime.secret,
                now=runtime.clock.now(),
                processed_action=ProcessedAction.move,
            )
            agent = await accounts.create_agent(
                session,
                by=COMMAND_LINE,
                email="alice@acme.example",
                name="Alice Admin",
                role=AgentRole.admin,
                team_ids=[],
                password=None,
                now=runtime.clock.now(),
            )
            _, token = await auth.create_api_token(
                session, by=COMMAND_LINE, agent_id=agent.id, name="scale", now=runtime.clock.now()
            )
            await session.commit()

        async def count(query: object) -> int:
            async with runtime.db.session() as session:
                return int(await session.scalar(query) or 0)  # type: ignore[call-overload]

        # --- 500 mails arrive; agents answer the first 200 tickets as they appear -----------
        deadline = time.monotonic() + DEADLINE
        await _append_all(dovecot, user, MAILS)
        replied: list[int] = []
        gate = asyncio.Semaphore(8)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:

            async def reply(k: int, number: int) -> None:
                instance = instances[k % 2]  # the load balancer sends them to both in turn
                async with gate:
                    response = await client.post(
                        f"{instance.base_url}/api/v1/tickets/{number}/messages",
                        json={"kind": "reply", "body": f"Answer {k}: we are on it."},
                    )
                assert response.status_code == 201, response.text

            while len(replied) < REPLIES:
                async with runtime.db.session() as session:
                    new = list(
                        (
                            await session.scalars(
                                select(Ticket.number)
                                .order_by(Ticket.number)
                                .offset(len(replied))
                                .limit(REPLIES - len(replied))
                            )
                        ).all()
                    )
                await asyncio.gather(*(reply(len(replied) + k, n) for k, n in enumerate(new)))
                replied += new
                if not new:
                    assert time.monotonic() < deadline, f"no new tickets\n{_logs(instances)}"
                    await asyncio.sleep(0.2)  # polling, bounded by the deadline

        receipts = select(func.count()).select_from(MailReceipt)
        replies = select(func.count()).select_from(OutboxMessage)
        replies = replies.where(OutboxMessage.kind == OutboxKind.reply)
        sent = replies.where(OutboxMessage.status == DeliveryStatus.sent)

        async def all_done() -> bool:
            return await count(receipts) >= MAILS and await count(sent) >= REPLIES

        await _poll(
            f"{MAILS} mails fetched and {REPLIES} replies sent",
            deadline - time.monotonic(),
            all_done,
            lambda: _logs(instances),
        )

        assert await count(receipts) == MAILS
        assert await count(select(func.count(func.distinct(MailReceipt.uid)))) == MAILS
        assert await count(select(func.count()).select_from(Ticket)) == MAILS
        inbound = MailMessage.direction == Direction.inbound
        assert await count(select(func.count()).select_from(MailMessage).where(inbound)) == MAILS
        async with runtime.db.session() as session:
            ids = list(
                (await session.scalars(select(MailMessage.header_message_id).where(inbound))).all()
            )
            fetch_lease = await session.get(Lease, f"mailbox:{box.id}")
            expected = list(
                (
                    await session.scalars(
                        select(OutboxMessage.message_id_header).where(
                            OutboxMessage.kind == OutboxKind.reply
                        )
                    )
                ).all()
            )
            statuses = set((await session.scalars(select(OutboxMessage.status).distinct())).all())
    assert sorted(ids) == sorted(f"<request-{n}@customer.test>" for n in range(MAILS))
    assert fetch_lease is not None and fetch_lease.holder in {i.holder for i in instances}
    assert len(expected) == len(set(expected)) == REPLIES
    assert statuses == {DeliveryStatus.sent}

    # Both instances stop cleanly, and only then the mail server's count is final.
    codes = processes.stop_all([i.running for i in instances])
    received = collections.Counter(r.message["Message-ID"] for r in sink.received)
    assert set(received) == set(expected), "every reply arrived"
    assert max(received.values()) == 1, [m for m, n in received.items() if n > 1]
    assert sum(received.values()) == REPLIES
    # uvicorn ends a graceful shutdown by re-raising the SIGTERM it caught.
    assert all(code in (0, -15) for code in codes), _logs(instances)

    # Both did background work, every log line is JSON, and nothing went wrong on the way.
    for instance in instances:
        entries = [json.loads(line) for line in instance.running.log().splitlines() if line]
        messages = [e["message"] for e in entries]
        assert any(m.startswith("background tasks started: ") for m in messages)
        errors = [e for e in entries if e["level"] in ("error", "critical")]
        assert errors == [], errors
