"""A small IMAP client on aioimaplib that speaks only in UIDs.

It never issues a plain EXPUNGE (AC-3): removal is `UID MOVE`, or `UID EXPUNGE <uid>` where the
server has UIDPLUS; without either, mail is only flagged. Bodies are read with `BODY.PEEK[]`,
so reading never sets \\Seen (AC-2). Every call has a timeout; a dropped connection raises
`ImapError`, which the fetcher answers with a reconnect and back-off.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aioimaplib

from keepdesk.mail.servers import Security, ServerUrl

_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_UID = re.compile(rb"UID (\d+)")
_FETCH_START = re.compile(rb"\d+ FETCH \(")
_LIST_SEP = re.compile(rb'\(([^)]*)\) (?:"((?:[^"\\]|\\.)*)"|NIL) ')


class ImapError(Exception):
    """The server refused, the connection broke, or it timed out: retry later."""


class ImapSecurityError(ImapError):
    """The server would not do the TLS the mailbox asks for. Never downgraded silently."""


@dataclass(frozen=True)
class Fetched:
    uid: int
    size: int
    data: bytes


def _uid_set(uids: Sequence[int]) -> str:
    """An IMAP sequence set of UIDs: "7" or "3,5,9"."""
    if not uids:
        raise ValueError("no UIDs")
    return ",".join(str(uid) for uid in sorted(set(uids)))


def _fetch_responses(lines: Sequence[Any]) -> list[Fetched]:
    """The messages in a FETCH answer: each starts with a "n FETCH (" line; its UID and size
    may come before or after its literal (the server's choice), and an unsolicited FETCH (a
    flag change) carries neither and is skipped."""
    found: list[Fetched] = []
    text, data = b"", None

    def done() -> None:
        uid, size = _UID.search(text), _SIZE.search(text)
        if uid and size:
            found.append(Fetched(uid=int(uid.group(1)), size=int(size.group(1)), data=data or b""))

    for line in lines:
        if isinstance(line, bytearray):
            data = bytes(line)
        elif isinstance(line, bytes):
            if _FETCH_START.match(line):
                done()
                text, data = line, None
            else:
                text += b" " + line
    done()
    return found


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ok(response: Any, what: str) -> Any:
    if response.result != "OK":
        text = b" ".join(line for line in response.lines if isinstance(line, bytes | bytearray))
        raise ImapError(f"{what} refused: {text.decode(errors='replace')[:300]}")
    return response


class ImapClient:
    def __init__(self, server: ServerUrl, *, timeout: float = 30.0) -> None:
        self.server = server
        self.timeout = timeout
        self._client: aioimaplib.IMAP4 | None = None
        self.capabilities: set[str] = set()
        self.separator = "/"
        self._folders: set[str] = set()  # made sure of on this connection
        # Why the connection ended under us (the server closed it, or sent BYE and closed).
        self._lost: str | None = None

    async def __aenter__(self) -> ImapClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def client(self) -> aioimaplib.IMAP4:
        if self._client is None:
            raise ImapError("not connected")
        return self._client

    async def _call(self, coro: Any, what: str) -> Any:
        if self._lost is not None:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise ImapError(f"{what}: {self._lost}")
        try:
            result = await asyncio.wait_for(coro, self.timeout)
        except (TimeoutError, aioimaplib.CommandTimeout):
            # A late answer would be read as the answer to the next command: the connection
            # is done for (and LOGOUT would only wait for a server that is not answering).
            self._lost = f"no answer within {self.timeout:.0f}s"
            raise ImapError(f"{what}: {self._lost}") from None
        except aioimaplib.Abort as exc:
            raise ImapError(f"{what}: {exc}") from None
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ImapError(f"{what}: connection failed ({exc})") from None
        if self._lost is not None:
            raise ImapError(f"{what}: {self._lost}")
        return result

    def _connection_lost(self, exc: Exception | None) -> None:
        """aioimaplib only logs a closed connection and leaves the command waiting for its
        timeout; end the waiting command now, and every later call fails at once."""
        self._lost = "the server closed the connection" + (f" ({exc})" if exc else "")
        if self._client is None:
            return
        protocol = self._client.protocol
        for command in (protocol.pending_sync_command, *protocol.pending_async_commands.values()):
            if command is not None:
                command.close(b"connection lost", "BYE")
        protocol.idle_queue.put_nowait([b"connection lost"])

    async def connect(self) -> None:
        s = self.server
        self._folders = set()
        if s.security == Security.tls:
            self._client = aioimaplib.IMAP4_SSL(
                host=s.host,
                port=s.port,
                timeout=self.timeout,
                ssl_context=ssl.create_default_context(),
            )
        else:
            self._client = aioimaplib.IMAP4(host=s.host, port=s.port, timeout=self.timeout)
        # IMAP4_SSL does not pass conn_lost_cb on; the protocol is not connected yet.
        self._client.protocol.conn_lost_cb = self._connection_lost
        await self._call(self.client.wait_hello_from_server(), "greeting")
        if self.client.protocol.state == "LOGOUT" or self.client.protocol.transport is None:
            raise ImapError(f"cannot connect to {s.host}:{s.port}")
        await self._call(self.client.protocol.capability(), "CAPABILITY")
        if s.security == Security.starttls:
            await self._starttls()
        if s.username is None:
            raise ImapError("the IMAP URL has no user name")
        response = await self._call(self.client.login(s.username, s.password or ""), "LOGIN")
        if response.result != "OK":
            raise ImapError("LOGIN refused: check the user name and password")
        await self._call(self.client.protocol.capability(), "CAPABILITY")
        self.capabilities = set(self.client.protocol.capabilities)
        await self._learn_separator()

    async def _starttls(self) -> None:
        protocol = self.client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapSecurityError(
                f"{self.server.host} does not offer STARTTLS, which this mailbox requires"
            )
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        _ok(await self._call(protocol.execute(command), "STARTTLS"), "STARTTLS")
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                protocol.transport,
                protocol,
                ssl.create_default_context(),
                server_hostname=self.server.host,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ImapSecurityError(f"TLS with {self.server.host} failed: {exc}") from None
        protocol.transport = transport
        await self._call(protocol.capability(), "CAPABILITY")

    async def _learn_separator(self) -> None:
        response = await self._call(self.client.list('""', '""'), "LIST")
        for line in response.lines:
            if isinstance(line, bytes | bytearray) and (match := _LIST_SEP.search(bytes(line))):
                if match.group(2):
                    self.separator = match.group(2).decode(errors="replace")
                return

    def folder(self, name: str) -> str:
        """A configured folder path (`keepdesk/processed`) in the server's own hierarchy."""
        return name.replace("/", self.separator)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.protocol.state in ("AUTH", "SELECTED") and self._lost is None:
                await asyncio.wait_for(client.logout(), 5)
        except (TimeoutError, aioimaplib.Abort, OSError, ConnectionError):
            pass
        finally:
            # aioimaplib leaves its socket open after LOGOUT.
            transport = client.protocol.transport
            if transport is not None:
                transport.close()

    async def select(self, folder: str) -> int:
        """Select the folder; returns its UIDVALIDITY."""
        response = _ok(await self._call(self.client.select(_quote(folder)), "SELECT"), "SELECT")
        for line in response.lines:
            if isinstance(line, bytes | bytearray) and (match := _UIDVALIDITY.search(line)):
                return int(match.group(1))
        raise ImapError("the server did not report UIDVALIDITY")

    async def uids_after(self, last_uid: int) -> list[int]:
        response = _ok(
            await self._call(
                self.client.uid_search(f"UID {last_uid + 1}:*", charset=None), "UID SEARCH"
            ),
            "UID SEARCH",
        )
        uids: set[int] = set()
        for line in response.lines[:-1]:
            uids.update(int(x) for x in bytes(line).split() if x.isdigit())
        # "n:*" always matches the highest UID, even one below n (RFC 3501 6.4.8).
        return sorted(u for u in uids if u > last_uid)

    async def sizes_of(self, uids: Sequence[int]) -> dict[int, int]:
        """The size of each message, in one command; a UID another client expunged is
        missing from the answer."""
        response = _ok(
            await self._call(
                self.client.uid("fetch", _uid_set(uids), "(UID RFC822.SIZE)"), "UID FETCH size"
            ),
            "UID FETCH",
        )
        return {f.uid: f.size for f in _fetch_responses(response.lines[:-1])}

    async def fetch(self, uid: int, part: str = "BODY.PEEK[]") -> Fetched | None:
        """One message (`part` of it), or None when another client expunged it."""
        return (await self.fetch_many([uid], part)).get(uid)

    async def fetch_many(
        self, uids: Sequence[int], part: str = "BODY.PEEK[]"
    ) -> dict[int, Fetched]:
        """Several messages in one command, by UID; one another client expunged is missing
        from the answer."""
        response = _ok(
            await self._call(
                self.client.uid("fetch", _uid_set(uids), f"(UID RFC822.SIZE {part})"),
                "UID FETCH",
            ),
            "UID FETCH",
        )
        return {f.uid: f for f in _fetch_responses(response.lines[:-1]) if f.uid in uids}

    async def ensure_folder(self, folder: str) -> None:
        # "already exists" answers NO; either way the folder is there afterwards. Asked once
        # per connection (it was a round trip for every mail moved); a folder someone deletes
        # meanwhile fails that MOVE, and the next pass, on a new connection, creates it again.
        if folder in self._folders:
            return
        await self._call(self.client.create(_quote(folder)), "CREATE")
        self._folders.add(folder)

    async def move(self, uids: Sequence[int], folder: str) -> bool:
        """Move messages, in one command; False when the server can only flag them (no MOVE,
        no UIDPLUS)."""
        which = _uid_set(uids)
        if "MOVE" in self.capabilities:
            _ok(
                await self._call(self.client.uid("move", which, _quote(folder)), "UID MOVE"),
                "UID MOVE",
            )
            return True
        if "UIDPLUS" not in self.capabilities:
            await self.flag_seen(uids)
            return False
        _ok(
            await self._call(self.client.uid("copy", which, _quote(folder)), "UID COPY"),
            "UID COPY",
        )
        return await self.delete(uids)

    async def flag_seen(self, uids: Sequence[int]) -> None:
        _ok(
            await self._call(
                self.client.uid("store", _uid_set(uids), "+FLAGS.SILENT", r"(\Seen)"),
                "UID STORE",
            ),
            "UID STORE",
        )

    async def delete(self, uids: Sequence[int], *, before_expunge: Any = None) -> bool:
        """Delete messages by UID; False (only flagged) without UIDPLUS: never EXPUNGE all."""
        if "UIDPLUS" not in self.capabilities:
            await self.flag_seen(uids)
            return False
        which = _uid_set(uids)
        _ok(
            await self._call(
                self.client.uid("store", which, "+FLAGS.SILENT", r"(\Deleted \Seen)"),
                "UID STORE",
            ),
            "UID STORE",
        )
        if before_expunge is not None:
            before_expunge()
        _ok(await self._call(self.client.uid("expunge", which), "UID EXPUNGE"), "UID EXPUNGE")
        return True

    async def idle(self, seconds: float) -> None:
        """Wait until the server announces new mail, or `seconds` pass (IDLE, RFC 2177)."""
        if "IDLE" not in self.capabilities:
            await asyncio.sleep(seconds)
            return
        idle = await self._call(self.client.idle_start(timeout=seconds), "IDLE")
        try:
            await self.client.wait_server_push(timeout=seconds)
        except TimeoutError:
            pass
        finally:
            self.client.idle_done()
            await self._call(asyncio.wait_for(idle, self.timeout), "IDLE DONE")
