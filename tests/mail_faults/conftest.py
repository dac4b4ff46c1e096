"""Fault tests of the email fetcher: helpers that build mail, add mailboxes, run the real
`keepdesk` console script, look at what the IMAP server holds, and check the one promise every
fault test makes (RELIABILITY.md F1, AC-1, AC-5):

* every mail is on the server or committed in the database, never neither;
* no mail is moved, flagged or deleted on the server without a committed receipt;
* no mail has two receipts, two tickets or two quarantine records;
* every attachment, raw-mail and quarantine row has its blob file.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from keepdesk.audit.service import COMMAND_LINE
from keepdesk.config import Settings
from keepdesk.mail import mailboxes
from keepdesk.mail.models import (
    Mailbox,
    MailMessage,
    MailReceipt,
    ProcessedAction,
    QuarantinedMail,
    ReceiptOutcome,
)
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import Attachment
from tests.mail_faults.proxy import ImapProxy
from tests.mail_fetch.conftest import (  # noqa: F401 (fixtures shared with the fetch tests)
    ImapAccount,
    dovecot,
    dovecot_server,
    imap_account,
)
from tests.support.dovecot import PASSWORD, DovecotServer

KEEPDESK = Path(sys.executable).parent / "keepdesk"
SUBPROCESS_TIMEOUT = 90.0
_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]*>)")
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_UID = re.compile(rb"UID (\d+)")
_LIST = re.compile(rb'^\([^)]*\) (?:"(?:[^"\\]|\\.)*"|NIL) (.+)$')


# --- mail --------------------------------------------------------------------------------------


def message_id(tag: str, n: int) -> str:
    return f"<{tag}-{n}@customer.test>"


def customer_mail(tag: str, n: int, *, attachment: bool = True) -> bytes:
    """A new request from its own customer, with a small attachment of its own."""
    head = (
        f"From: Customer {n} <c{n}-{tag}@customer.test>\r\n"
        "To: support@example.com\r\n"
        f"Subject: Request {n} of {tag}\r\n"
        f"Message-ID: {message_id(tag, n)}\r\n"
        f"Date: Mon, 02 Mar 2026 09:{n % 60:02d}:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
    )
    text = f"Hello, this is request {n} of {tag}.\r\n"
    if not attachment:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text).encode()
    data = base64.encodebytes(f"log line of {tag} request {n}\n".encode() * 12).decode()
    return (
        head + f'Content-Type: multipart/mixed; boundary="b-{tag}-{n}"\r\n\r\n'
        f"--b-{tag}-{n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}"
        f"--b-{tag}-{n}\r\nContent-Type: text/plain; name=log-{n}.txt\r\n"
        f"Content-Disposition: attachment; filename=log-{n}.txt\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{data.replace(chr(10), chr(13) + chr(10))}"
        f"--b-{tag}-{n}--\r\n"
    ).encode()


def header_message_id(raw: bytes) -> str | None:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    return match.group(1).decode() if match else None


async def deliver(account: ImapAccount, tag: str, count: int) -> list[str]:
    """Put `count` customer mails in the account's INBOX; their Message-IDs, in order."""
    for n in range(1, count + 1):
        await account.append(customer_mail(tag, n))
    return [message_id(tag, n) for n in range(1, count + 1)]


# --- keepdesk ------------------------------------------------------------------------------------


async def add_box(
    runtime: Runtime,
    *,
    address: str,
    imap_url: str,
    action: ProcessedAction = ProcessedAction.move,
) -> Mailbox:
    async with runtime.db.session(write=True) as session:
        box = await mailboxes.add_mailbox(
            session,
            by=COMMAND_LINE,
            address=address,
            imap_url=imap_url,
            smtp_url="smtp://127.0.0.1:9/",
            secret=runtime.secret,
            now=runtime.clock.now(),
            processed_action=action,
            auto_ack=True,
        )
        await session.commit()
        return box


@dataclass(frozen=True)
class Finished:
    returncode: int
    output: str


async def start_keepdesk(
    settings: Settings,
    *args: str,
    fault: str | None = None,
    after: int = 1,
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start the real console script against the test's instance (plus `env`); with `fault`,
    armed to be killed at that crash point the `after`-th time it is reached."""
    assert settings.secret_key is not None
    env = (env or {}) | {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KEEPDESK_DATA_DIR": str(settings.data_dir),
        "KEEPDESK_DATABASE_URL": settings.effective_database_url,
        "KEEPDESK_SECRET_KEY": settings.secret_key.get_secret_value(),
    }
    if fault is not None:
        env |= {
            "KEEPDESK_FAULTS_ENABLED": "1",
            "KEEPDESK_FAULT": fault,
            "KEEPDESK_FAULT_AFTER": str(after),
        }
    return await asyncio.create_subprocess_exec(
        str(KEEPDESK),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def keepdesk(
    settings: Settings,
    *args: str,
    fault: str | None = None,
    after: int = 1,
    env: dict[str, str] | None = None,
) -> Finished:
    """Run the real console script to its end (or its crash point)."""
    process = await start_keepdesk(settings, *args, fault=fault, after=after, env=env)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), SUBPROCESS_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(errors="replace"))


def killed(finished: Finished) -> bool:
    return finished.returncode == -signal.SIGKILL


# --- the IMAP server, as another client sees it -------------------------------------------------


@dataclass(frozen=True)
class Held:
    folder: str
    uid: int
    message_id: str  # "uid N in FOLDER" for a mail without one
    flags: frozenset[str]

    @property
    def touched(self) -> bool:
        """Moved out of the INBOX, or flagged by keepdesk."""
        return self.folder != "INBOX" or bool(self.flags & {"\\Seen", "\\Deleted"})


async def server_mail(account: ImapAccount) -> list[Held]:
    """Every message in every folder of the account, read with BODY.PEEK (no flag changes)."""
    client = await account._client()
    held: list[Held] = []
    try:
        listed = await client.list('""', "*")
        folders = []
        for line in listed.lines:
            if isinstance(line, bytes) and (match := _LIST.match(line)):
                folders.append(match.group(1).decode().strip('"'))
        for folder in folders:
            # SELECT only clears \Recent, which keepdesk never reads; flags stay as they are.
            selected = await client.select(f'"{folder}"')
            if selected.result != "OK" or any(
                bytes(line).split()[:2] == [b"0", b"EXISTS"] for line in selected.lines
            ):
                continue
            response = await client.uid(
                "fetch", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
            )
            assert response.result == "OK", response
            held.extend(_parse_fetch(folder, response.lines))
    finally:
        await account._close(client)
    return held


def _parse_fetch(folder: str, lines: Iterable[bytes | bytearray]) -> list[Held]:
    found: list[Held] = []
    uid: int | None = None
    flags: frozenset[str] = frozenset()
    mid: str | None = None

    def flush() -> None:
        if uid is not None:
            found.append(Held(folder, uid, mid or f"uid {uid} in {folder}", flags))

    for line in lines:
        if isinstance(line, bytearray):
            mid = header_message_id(bytes(line) + b"\r\n\r\n")
            continue
        if re.match(rb"\d+ FETCH ", line):
            flush()
            uid, flags, mid = None, frozenset(), None
        if match := _UID.search(line):
            uid = int(match.group(1))
        if match := _FLAGS.search(line):
            flags = frozenset(match.group(1).decode().split())
    flush()
    return found


# --- the database --------------------------------------------------------------------------------


@dataclass
class Committed:
    """What the database holds for one mailbox, keyed by the mails' Message-IDs."""

    receipts: dict[str, list[MailReceipt]] = field(default_factory=dict)
    messages: Counter[str] = field(default_factory=Counter)
    tickets: Counter[str] = field(default_factory=Counter)
    quarantined: dict[str, list[QuarantinedMail]] = field(default_factory=dict)
    missing_blobs: list[str] = field(default_factory=list)

    def outcomes(self) -> dict[str, list[ReceiptOutcome]]:
        return {mid: [r.outcome for r in rs] for mid, rs in self.receipts.items()}


async def committed(runtime: Runtime, mailbox_id: int) -> Committed:
    found = Committed()
    async with runtime.db.session() as session:
        receipts = (
            await session.scalars(select(MailReceipt).where(MailReceipt.mailbox_id == mailbox_id))
        ).all()
        mail = (
            await session.scalars(select(MailMessage).where(MailMessage.mailbox_id == mailbox_id))
        ).all()
        held = (
            await session.scalars(
                select(QuarantinedMail).where(QuarantinedMail.mailbox_id == mailbox_id)
            )
        ).all()
        attachments = (await session.scalars(select(Attachment))).all()
    by_message = {m.message_id: m for m in mail}
    by_quarantine = {q.id: q for q in held}
    seen_tickets: dict[str, set[int]] = {}
    for m in mail:
        found.messages[m.header_message_id] += 1
        seen_tickets.setdefault(m.header_message_id, set()).add(m.ticket_id)
    for mid, tickets in seen_tickets.items():
        found.tickets[mid] = len(tickets)
    for q in held:
        mid = header_message_id(runtime.blobs.get(q.blob_key)) or f"quarantine:{q.id}"
        found.quarantined.setdefault(mid, []).append(q)
    for receipt in receipts:
        key = f"receipt:{receipt.id}"
        if receipt.header_message_id:
            key = receipt.header_message_id
        if receipt.ticket_message_id is not None and receipt.ticket_message_id in by_message:
            key = by_message[receipt.ticket_message_id].header_message_id
        if receipt.quarantine_id is not None and receipt.quarantine_id in by_quarantine:
            item = by_quarantine[receipt.quarantine_id]
            key = header_message_id(runtime.blobs.get(item.blob_key)) or f"quarantine:{item.id}"
        found.receipts.setdefault(key, []).append(receipt)
    keys = [("attachment", a.id, a.blob_key) for a in attachments]
    keys += [("raw mail", m.id, m.raw_blob_key) for m in mail if m.raw_blob_key]
    keys += [("quarantined mail", q.id, q.blob_key) for q in held]
    found.missing_blobs = [f"{kind} {i}" for kind, i, key in keys if not runtime.blobs.exists(key)]
    return found


# --- the promise ---------------------------------------------------------------------------------


async def assert_nothing_lost_or_doubled(
    runtime: Runtime, account: ImapAccount, mailbox_id: int, expected: Iterable[str]
) -> tuple[Committed, list[Held]]:
    """The invariants that hold at any moment, even right after a SIGKILL."""
    db = await committed(runtime, mailbox_id)
    server = await server_mail(account)
    assert db.missing_blobs == [], "rows whose blob file is missing"
    doubled = {mid: n for mid, n in db.outcomes().items() if len(n) > 1}
    assert doubled == {}, "a mail was committed twice"
    assert {mid: n for mid, n in db.messages.items() if n > 1} == {}, "a mail became two messages"
    assert {mid: n for mid, n in db.tickets.items() if n > 1} == {}, "a mail made two tickets"
    assert {mid: len(q) for mid, q in db.quarantined.items() if len(q) > 1} == {}
    touched = {h.message_id for h in server if h.touched}
    assert touched <= set(db.receipts), "touched on the server without a committed receipt"
    on_server = {h.message_id for h in server}
    lost = [mid for mid in expected if mid not in on_server and mid not in db.receipts]
    assert lost == [], "mail neither on the server nor in the database"
    return db, server


async def assert_each_mail_once(
    runtime: Runtime,
    account: ImapAccount,
    mailbox: Mailbox,
    expected: list[str],
    *,
    quarantined: Iterable[str] = (),
) -> Committed:
    """After recovery: every mail has exactly one receipt, and one ticket or one quarantine
    record; every server action is done and nothing is left behind in the INBOX."""
    db, server = await assert_nothing_lost_or_doubled(runtime, account, mailbox.id, expected)
    held_back = set(quarantined)
    assert sorted(db.receipts) == sorted(expected)
    for mid in expected:
        if mid in held_back:
            assert db.outcomes()[mid] == [ReceiptOutcome.quarantined], mid
            assert len(db.quarantined.get(mid, [])) == 1, mid
            assert (db.messages[mid], db.tickets[mid]) == (0, 0), mid
        else:
            assert db.outcomes()[mid] == [ReceiptOutcome.ingested], mid
            assert (db.messages[mid], db.tickets[mid]) == (1, 1), mid
            assert mid not in db.quarantined, mid
    assert all(r.imap_done for rs in db.receipts.values() for r in rs)
    folders = {h.message_id: h.folder for h in server}
    assert [h for h in server if h.folder == "INBOX"] == [], "mail left in the INBOX"
    assert {mid for mid, f in folders.items() if "quarantine" in f} == held_back
    kept = {mid for mid, f in folders.items() if "processed" in f}
    if mailbox.processed_action == ProcessedAction.delete:
        assert kept == set()
    else:
        assert kept == set(expected) - held_back
    assert len(server) == len({h.message_id for h in server}), "a mail is on the server twice"
    return db


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def proxy(dovecot: DovecotServer) -> AsyncIterator[ImapProxy]:  # noqa: F811
    p = ImapProxy(dovecot.host, dovecot.port)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def proxied_url(proxy: ImapProxy, account: ImapAccount) -> str:
    return proxy.url(account.user, PASSWORD)
