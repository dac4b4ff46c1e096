"""Fixtures for fetching over real IMAP: a session-wide Dovecot, a fresh account per test, and
a keepdesk mailbox pointing at it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import aioimaplib
import pytest

from keepdesk.audit.service import COMMAND_LINE
from keepdesk.mail import mailboxes
from keepdesk.mail.models import Mailbox, ProcessedAction
from keepdesk.runtime import Runtime
from tests.support.dovecot import PASSWORD, DovecotServer, find_dovecot, start_dovecot
from tests.support.services import missing


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer | None]:
    binary = find_dovecot()
    if binary is None:
        yield None
        return
    server = start_dovecot(binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dovecot(dovecot_server: DovecotServer | None) -> DovecotServer:
    if dovecot_server is None:
        missing("Dovecot is not installed (apt install dovecot-imapd)")
    assert dovecot_server is not None
    return dovecot_server


@dataclass
class ImapAccount:
    server: DovecotServer
    user: str

    @property
    def url(self) -> str:
        return self.server.url(self.user)

    async def _client(self) -> aioimaplib.IMAP4:
        client = aioimaplib.IMAP4(host=self.server.host, port=self.server.port, timeout=10)
        await client.wait_hello_from_server()
        assert (await client.login(self.user, PASSWORD)).result == "OK"
        return client

    @staticmethod
    async def _close(client: aioimaplib.IMAP4) -> None:
        await client.logout()
        if client.protocol.transport is not None:
            client.protocol.transport.close()

    async def append(self, raw: bytes, folder: str = "INBOX") -> None:
        client = await self._client()
        try:
            crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            response = await client.append(crlf, mailbox=folder)
            assert response.result == "OK", response
        finally:
            await self._close(client)

    async def count(self, folder: str = "INBOX") -> int:
        client = await self._client()
        try:
            response = await client.select(folder)
            if response.result != "OK":
                return 0
            for line in response.lines:
                parts = bytes(line).split()
                if len(parts) == 2 and parts[1] == b"EXISTS":
                    return int(parts[0])
            return 0
        finally:
            await self._close(client)

    async def flags(self, folder: str = "INBOX") -> list[bytes]:
        client = await self._client()
        try:
            await client.select(folder)
            response = await client.fetch("1:*", "(FLAGS)")
            return [bytes(line) for line in response.lines if b"FLAGS" in bytes(line)]
        finally:
            await self._close(client)

    def renumber(self, shift: int = 100) -> None:
        """What a server restore or migration does: a new UIDVALIDITY, every UID different.

        Dovecot keeps both in its Maildir's dovecot-uidlist; rewrite it and drop the index."""
        local, domain = self.user.split("@")
        maildir = self.server.root / "mail" / domain / local / "Maildir"
        uidlist = maildir / "dovecot-uidlist"
        head, *entries = uidlist.read_text().splitlines()
        head = re.sub(r" V(\d+)", lambda m: f" V{int(m.group(1)) + 1000}", head)
        head = re.sub(r" N(\d+)", lambda m: f" N{int(m.group(1)) + shift}", head)
        entries = [re.sub(r"^(\d+)", lambda m: str(int(m.group(1)) + shift), e) for e in entries]
        uidlist.write_text("\n".join([head, *entries]) + "\n")
        for index in maildir.glob("dovecot.index*"):
            index.unlink()


@pytest.fixture
def imap_account(dovecot: DovecotServer) -> ImapAccount:
    return ImapAccount(server=dovecot, user=f"u{uuid.uuid4().hex[:12]}@example.com")


@pytest.fixture
async def mailbox(runtime: Runtime, imap_account: ImapAccount) -> Mailbox:
    async with runtime.db.session(write=True) as session:
        box = await mailboxes.add_mailbox(
            session,
            by=COMMAND_LINE,
            address="support@example.com",
            imap_url=imap_account.url,
            smtp_url="smtp://127.0.0.1:9/",
            secret=runtime.secret,
            now=runtime.clock.now(),
            processed_action=ProcessedAction.move,
            auto_ack=True,
        )
        await session.commit()
        return box
