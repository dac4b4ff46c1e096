"""Mail ingest: a generated batch of new mails and replies through keepdesk's real path.

In process, the mails go the fetcher's way (`keepdesk.mail.fetcher.stage` and `record`): a
batch's raw bytes into the blob store (made durable together) while the parser's processes
parse them, then one transaction per batch of `mail_fetch_batch` mails that runs
`keepdesk.mail.ingest.ingest` for each, advances the mailbox cursor and commits. Through
IMAP, the same batch is appended to a real Dovecot and `fetch_once` takes it from there
(fetch, store, commit, then MOVE on the server). The standard library's parse of the same
batch is the same-run ceiling.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from sqlalchemy import select

from bench import people
from bench.text import TextMaker, as_html
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.mail import fetcher, mailboxes
from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.ingest import limits_for
from keepdesk.mail.models import Mailbox, MailMessage, ProcessedAction
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import Ticket, TicketStatus


@dataclass(frozen=True)
class Thread:
    number: int
    subject: str
    requester: str
    last_header: str


async def reply_targets(runtime: Runtime, count: int) -> list[Thread]:
    """Email tickets to answer: mostly active ones, some closed (those open a follow-up)."""
    from keepdesk.accounts.models import Contact

    async with runtime.db.session() as session:
        found: list[Thread] = []
        for statuses, share in (
            ((TicketStatus.open, TicketStatus.pending, TicketStatus.new), 0.8),
            ((TicketStatus.closed,), 0.2),
        ):
            rows = await session.execute(
                select(Ticket.number, Ticket.subject, Contact.email, MailMessage.header_message_id)
                .join(Contact, Contact.id == Ticket.requester_id)
                .join(MailMessage, MailMessage.ticket_id == Ticket.id)
                .where(Ticket.status.in_(statuses), Ticket.channel == "email")
                .order_by(Ticket.updated_at.desc())
                .limit(int(count * share) * 3)
            )
            seen: set[int] = set()
            for number, subject, requester, header in rows:
                if number not in seen:
                    seen.add(number)
                    found.append(Thread(number, subject, requester, header))
                if len(seen) >= int(count * share):
                    break
    return found


def make_batch(count: int, threads: list[Thread], *, seed: int) -> list[bytes]:
    """`count` mails, about 60% new requests and 40% replies; every batch is unique (its
    Message-IDs carry a fresh nonce), so nothing is skipped as already stored."""
    rng = random.Random(seed)  # noqa: S311 - made-up data, no secrets
    text = TextMaker(rng)
    nonce = uuid.uuid4().hex[:10]
    mails: list[bytes] = []
    replies = list(threads)
    rng.shuffle(replies)
    for i in range(count):
        msg = EmailMessage()
        reply = replies.pop() if replies and rng.random() < 0.4 else None
        if reply is not None:
            sender, name = reply.requester, "Customer"
            msg["Subject"] = f"Re: {reply.subject}"
            msg["In-Reply-To"] = reply.last_header
            msg["References"] = reply.last_header
        else:
            sender, name = text.person(100_000 + i % 3000)
            msg["Subject"] = text.subject()
        msg["From"] = f"{name} <{sender}>"
        msg["To"] = people.MAILBOX_ADDRESS
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid(idstring=f"{nonce}.{i}", domain=sender.rpartition("@")[2])
        body = text.body(text.length(600))
        msg.set_content(body)
        if rng.random() < 0.5:
            msg.add_alternative(f"<html><body>{as_html(body)}</body></html>", subtype="html")
        if rng.random() < 0.1:
            data = f"attachment {nonce} {i}\n".encode() + rng.randbytes(rng.randint(5_000, 80_000))
            msg.add_attachment(data, maintype="application", subtype="pdf", filename=f"doc{i}.pdf")
        mails.append(msg.as_bytes())
    return mails


def parse_ceiling(mails: list[bytes]) -> float:
    """Mails per second the standard library parses, bodies and attachments included."""
    started = time.perf_counter()
    for raw in mails:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        body = msg.get_body(preferencelist=("plain", "html"))
        if body is not None:
            body.get_content()
        for part in msg.iter_attachments():
            part.get_content()
    return len(mails) / (time.perf_counter() - started)


@dataclass
class IngestResult:
    mails: int
    seconds: float
    latencies_ms: list[float]
    outcomes: dict[str, int]
    batch: int = 1  # mails recorded in one transaction

    @property
    def rate(self) -> float:
        return self.mails / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]

    def summary(self) -> dict[str, Any]:
        return {
            "mails": self.mails,
            "seconds": round(self.seconds, 3),
            "mails_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile(50), 3) if self.latencies_ms else None,
            "p95_ms": round(self.percentile(95), 3) if self.latencies_ms else None,
            "p99_ms": round(self.percentile(99), 3) if self.latencies_ms else None,
            "outcomes": self.outcomes,
            "batch": self.batch,
        }


async def ingest_in_process(
    runtime: Runtime, mails: Sequence[bytes], *, warmup: Sequence[bytes] = ()
) -> IngestResult:
    """The fetcher's path without the IMAP round trips (`keepdesk.mail.fetcher.stage` and
    `record`): each batch's raw bytes into the blob store (made durable together) while the
    parser's worker processes parse them, then each batch of `mail_fetch_batch` mails recorded
    in one transaction that also moves the mailbox cursor, committed before the next batch is
    staged. A mail's latency runs from its staging to its batch's commit.

    The `warmup` mails go the same way first, unmeasured, as the HTTP scenarios' warm-up
    requests do: a running fetcher has its parser processes started and its statements
    compiled already."""
    limits = limits_for(runtime)
    async with runtime.db.session() as session:
        own = await mailboxes.own_addresses(session)  # the fetcher reads them once a pass
        mailbox = await session.get(Mailbox, 1)
    assert mailbox is not None, "the data set has mailbox 1"
    uidvalidity = int(time.time()) % 1_000_000_000
    if warmup:
        await _record_all(fetcher.Recorder(runtime, mailbox, uidvalidity + 1, limits, own), warmup)
    recorder = fetcher.Recorder(runtime, mailbox, uidvalidity, limits, own)
    started = time.perf_counter()
    latencies, outcomes = await _record_all(recorder, mails)
    seconds = time.perf_counter() - started
    return IngestResult(len(mails), seconds, latencies, outcomes, runtime.settings.mail_fetch_batch)


async def _record_all(
    recorder: fetcher.Recorder, mails: Sequence[bytes]
) -> tuple[list[float], dict[str, int]]:
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    size = recorder.runtime.settings.mail_fetch_batch
    for first in range(0, len(mails), size):
        staged_at: list[float] = []
        batch = []
        for uid, raw in enumerate(mails[first : first + size], start=first + 1):
            staged_at.append(time.perf_counter())
            batch.append(fetcher.stage(recorder, uid, raw))
        results = await fetcher.record(recorder, batch)
        done = time.perf_counter()
        latencies.extend((done - t) * 1000 for t in staged_at)
        for outcome in results:
            name = outcome.value if outcome is not None else "taken by another fetcher"
            outcomes[name] = outcomes.get(name, 0) + 1
    return latencies, outcomes


async def ingest_over_imap(runtime: Runtime, mails: list[bytes]) -> IngestResult | str:
    """The same through a real Dovecot; a reason string when Dovecot is not installed."""
    from tests.support.dovecot import PASSWORD, find_dovecot, start_dovecot

    binary = find_dovecot()
    if binary is None:
        return "Dovecot is not installed (apt install dovecot-imapd)"
    server = await asyncio.to_thread(start_dovecot, binary)
    try:
        user = f"bench{uuid.uuid4().hex[:8]}@example.com"
        await _append_all(server.host, server.port, user, PASSWORD, mails)
        async with runtime.db.session(write=True) as session:
            box = await mailboxes.add_mailbox(
                session,
                by=COMMAND_LINE,
                address=f"imap-{uuid.uuid4().hex[:8]}@bench.keepdesk.test",
                imap_url=server.url(user),
                smtp_url="smtp://127.0.0.1:9/",
                secret=runtime.secret,
                now=runtime.clock.now(),
                team_id=1,
                processed_action=ProcessedAction.move,
            )
            await session.commit()
            box_id = box.id
        started = time.perf_counter()
        report = await fetch_once(runtime, box_id, max_messages=len(mails))
        seconds = time.perf_counter() - started
        if report.errors:
            return f"fetch failed: {report.errors[0]}"
        outcomes = {
            "ingested": report.ingested,
            "duplicate": report.duplicates,
            "quarantined": report.quarantined,
        }
        return IngestResult(report.fetched, seconds, [], outcomes)
    finally:
        await asyncio.to_thread(server.stop)


async def _append_all(host: str, port: int, user: str, password: str, mails: list[bytes]) -> None:
    import aioimaplib

    client = aioimaplib.IMAP4(host=host, port=port, timeout=30)
    await client.wait_hello_from_server()
    await client.login(user, password)
    try:
        for raw in mails:
            crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            response = await client.append(crlf, mailbox="INBOX")
            if response.result != "OK":
                raise RuntimeError(f"APPEND failed: {response}")
    finally:
        await client.logout()
        if client.protocol.transport is not None:
            client.protocol.transport.close()
