"""What the delivery stories share: a real SMTP server (aiosmtpd on 127.0.0.1) that can be told
to misbehave, a throwaway TLS certificate, and helpers to set up a mailbox and read what arrived.

The sink runs in its own thread and event loop. A mail is in `sink.received` before the server
answers DATA, so once a send returns, what arrived is already there: no waiting needed.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keepdesk.audit.service import COMMAND_LINE
from keepdesk.config import Settings
from keepdesk.mail import delivery, mailboxes
from keepdesk.mail.models import Mailbox
from keepdesk.runtime import Runtime

Stage = Literal["rcpt", "data"]
Action = Literal["reply", "hang", "drop", "delay"]


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Rule:
    stage: Stage
    action: Action
    reply: str = ""
    address: str | None = None  # None: any recipient
    times: int | None = None  # None: every time
    seconds: float = 0.0


@dataclass
class _Handler:
    """aiosmtpd hooks that follow the rules a test set, first matching rule first."""

    received: list[Received] = field(default_factory=list)
    rules: list[_Rule] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _take(self, stage: Stage, address: str) -> _Rule | None:
        with self.lock:
            for rule in self.rules:
                if rule.stage != stage or rule.address not in (None, address):
                    continue
                if rule.times is not None:
                    if rule.times == 0:
                        continue
                    rule.times -= 1
                return rule
        return None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        rule = self._take("rcpt", address)
        if rule is not None:
            if rule.action == "reply":
                return rule.reply
            if rule.action == "hang":
                await asyncio.Future()  # until the client gives up and the connection closes
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rule = self._take("data", envelope.rcpt_tos[0])
        if rule is not None and rule.action == "reply":
            return rule.reply
        content = envelope.original_content or b""
        with self.lock:
            self.received.append(
                Received(str(envelope.mail_from), list(envelope.rcpt_tos), bytes(content))
            )
        if rule is not None and rule.action == "delay":
            await asyncio.sleep(rule.seconds)
        elif rule is not None and rule.action == "hang":
            await asyncio.Future()
        elif rule is not None and rule.action == "drop":
            # The message is in, the answer never comes: RFC 5321 calls that "maybe delivered".
            assert server.transport is not None
            server.transport.close()
            await asyncio.Future()
        return "250 2.0.0 OK queued"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Sink:
    """An SMTP server on 127.0.0.1 whose answers a test switches while it runs."""

    def __init__(
        self,
        port: int | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        # Controller(port=0) cannot work: start() checks readiness by connecting to the port.
        self.port = port or free_port()
        self.handler = _Handler()
        kwargs: dict[str, Any] = {}
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=True)
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            ready_timeout=10,
            ssl_context=implicit_tls,
            **kwargs,
        )
        self.running = False

    def start(self) -> Sink:
        self._controller.start()
        self.running = True
        return self

    def stop(self) -> None:
        if self.running:
            self._controller.stop()
            self.running = False

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def received_by(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]

    def _add(self, rule: _Rule) -> None:
        with self.handler.lock:
            self.handler.rules.append(rule)

    def reply_at_rcpt(
        self, reply: str, *, address: str | None = None, times: int | None = None
    ) -> None:
        self._add(_Rule("rcpt", "reply", reply=reply, address=address, times=times))

    def reply_at_data(
        self, reply: str, *, address: str | None = None, times: int | None = None
    ) -> None:
        self._add(_Rule("data", "reply", reply=reply, address=address, times=times))

    def hang_at_rcpt(self, *, address: str | None = None, times: int | None = None) -> None:
        self._add(_Rule("rcpt", "hang", address=address, times=times))

    def hang_after_data(self, *, address: str | None = None, times: int | None = None) -> None:
        self._add(_Rule("data", "hang", address=address, times=times))

    def drop_after_data(self, *, address: str | None = None, times: int | None = None) -> None:
        self._add(_Rule("data", "drop", address=address, times=times))

    def delay_data(self, seconds: float, *, times: int | None = None) -> None:
        self._add(_Rule("data", "delay", seconds=seconds, times=times))


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink().start()
    try:
        yield server
    finally:
        server.stop()


# --- TLS --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts the throwaway certificate, and nothing else


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return Tls(server=server, client=ssl.create_default_context(cafile=str(cert_path)))


# --- keepdesk side ----------------------------------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The smallest timeout the setting allows keeps the hanging-server stories short.
    return settings.model_copy(update={"mail_send_timeout_seconds": 1.0})


async def add_mailbox(
    runtime: Runtime,
    *,
    port: int,
    address: str = "help@acme.example",
    display_name: str = "Acme Help",
    team_id: int | None = None,
    scheme: str = "smtp",
) -> Mailbox:
    async with runtime.db.session(write=True) as session:
        mailbox = await mailboxes.add_mailbox(
            session,
            by=COMMAND_LINE,
            address=address,
            imap_url="imap://u:p@127.0.0.1:1/INBOX",
            smtp_url=f"{scheme}://127.0.0.1:{port}",
            secret=runtime.secret,
            now=runtime.clock.now(),
            team_id=team_id,
            display_name=display_name,
        )
        await session.commit()
    return mailbox


async def send_due(runtime: Runtime, holder: str = "test-sender") -> int:
    return await delivery.send_due(runtime, holder=holder)
