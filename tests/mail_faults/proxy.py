"""A small IMAP-aware TCP proxy on loopback, between keepdesk and the real Dovecot.

It forwards both directions line by line (and literal by literal), records every command the
client sends, and can disturb the server's answer once a `BODY[]` literal starts:

* `cut`   - forward `cut_after` bytes of the literal, then close both connections (F2);
* `bye`   - send `* BYE` instead of the literal, then close (F2);
* `stall` - stop forwarding; the client's read timeout has to fire (F2);
* `short` - announce and send fewer bytes than the message has, so the literal is shorter
            than RFC822.SIZE (`short_to` bytes; 0 announces `{0}`) (F3).

The fault starts at the `first`-th BODY[] literal the proxy sees and lasts for `times` of them
(None: for good); the others pass through. With `uid`, only the literals of that message count
and are disturbed (keepdesk fetches a batch's bodies in one command).

`hide_capabilities` removes names (MOVE, UIDPLUS) from every CAPABILITY the server announces
(F6). `on_command` is called with each command line before it is forwarded, and `on_body` with
the running count of BODY[] literals before each is forwarded: a test can change the world at
an exact point of a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "cut", "bye", "stall", "short"]

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_BODY_LITERAL = re.compile(rb"BODY\[\] \{(\d+)\}\r\n$")


@dataclass
class ImapProxy:
    upstream_host: str
    upstream_port: int
    mode: Mode = "pass"
    first: int = 1
    times: int | None = None
    cut_after: int = 64
    short_to: int = 0
    hide_capabilities: frozenset[bytes] = frozenset()
    on_command: Callable[[bytes], None] | None = None
    on_body: Callable[[int], None] | None = None
    uid: int | None = None

    host: str = "127.0.0.1"
    port: int = 0
    commands: list[bytes] = field(default_factory=list)
    connections: int = 0
    bodies: int = 0
    disturbed: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, user: str, password: str, folder: str = "INBOX") -> str:
        return f"imap://{user}:{password}@{self.host}:{self.port}/{folder}"

    def set(
        self, mode: Mode, *, first: int = 1, times: int | None = None, uid: int | None = None
    ) -> None:
        """Disturb from the `first`-th BODY[] literal on (counted from now), `times` of them;
        with `uid`, of that message's literals only."""
        self.mode, self.first, self.times = mode, self.bodies + first, times
        self.disturbed = 0
        self.uid = uid

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        self.connections += 1
        server_w: asyncio.StreamWriter | None = None
        try:
            server_r, server_w = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
            self._writers.add(server_w)
            pumps = [
                asyncio.create_task(self._client_to_server(client_r, server_w)),
                asyncio.create_task(self._server_to_client(server_r, client_w)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                for pump in pumps:
                    with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                        await pump
        except (OSError, ConnectionError):
            pass
        finally:
            for writer in (client_w, server_w):
                if writer is not None:
                    writer.close()
                    self._writers.discard(writer)
                    with contextlib.suppress(OSError, ConnectionError):
                        await writer.wait_closed()
            self._tasks.discard(task)

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while line := await reader.readline():
            self.commands.append(line.rstrip(b"\r\n"))
            if self.on_command is not None:
                self.on_command(self.commands[-1])
            writer.write(line)
            if match := _LITERAL.search(line):
                writer.write(await reader.readexactly(int(match.group(1))))
            await writer.drain()

    def _hide(self, line: bytes) -> bytes:
        if b"CAPABILITY" not in line or not self.hide_capabilities:
            return line
        words = line.rstrip(b"\r\n").split(b" ")
        kept = [w for w in words if w.rstrip(b"]") not in self.hide_capabilities]
        if words and words[-1].endswith(b"]") and not kept[-1].endswith(b"]"):
            kept[-1] += b"]"
        return b" ".join(kept) + b"\r\n"

    async def _server_to_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while line := await reader.readline():
            literal = _LITERAL.search(line)
            data = await reader.readexactly(int(literal.group(1))) if literal else b""
            if _BODY_LITERAL.search(line) and (
                self.uid is None or re.search(rb"\bUID %d\b" % self.uid, line)
            ):
                self.bodies += 1
                if self.on_body is not None:
                    self.on_body(self.bodies)
                if (
                    self.mode != "pass"
                    and self.bodies >= self.first
                    and (self.times is None or self.disturbed < self.times)
                ):
                    self.disturbed += 1
                    if not await self._disturb(line, data, writer):
                        return
                    continue
            writer.write(self._hide(line) + data)
            await writer.drain()

    async def _disturb(self, line: bytes, data: bytes, writer: asyncio.StreamWriter) -> bool:
        """Forward a disturbed BODY[] literal; False when the connection is to end here."""
        if self.mode == "short":
            size = min(self.short_to, len(data))
            writer.write(_BODY_LITERAL.sub(b"BODY[] {%d}\r\n" % size, line) + data[:size])
            await writer.drain()
            return True
        if self.mode == "cut":
            writer.write(line + data[: self.cut_after])
            await writer.drain()
            return False
        if self.mode == "bye":
            writer.write(b"* BYE the server is going away\r\n")
            await writer.drain()
            return False
        # stall: hold everything until the client gives up and closes its side.
        await asyncio.Event().wait()
        return False
