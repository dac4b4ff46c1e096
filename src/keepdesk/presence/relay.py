"""Presence across processes: the relays that carry one hub's heartbeats to the others.

On PostgreSQL (`PostgresRelay`) every heartbeat is published with
`NOTIFY keepdesk_presence, '<json>'`, and every instance LISTENs on a connection of its own, so
instances on several hosts see each other. The connection is asyncpg's, opened by the app's
lifespan and closed at shutdown.

On SQLite every process that serves pages shares one host and one data directory
(`keepdesk serve --processes N`, or two `serve`s on one data directory): `SocketRelay` gives
each hub a Unix datagram socket in `<data_dir>/presence/`, and a heartbeat is sent to every
other socket there.

Presence is a courtesy, never a reason to fail a page: what cannot be delivered is logged and
dropped, and the next heartbeat comes 2 s later; each process always sees its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from keepdesk.db import Database
from keepdesk.presence.hub import Presence

log = logging.getLogger("keepdesk.presence")

CHANNEL = "keepdesk_presence"
REOPEN_AFTER = 5.0
# A heartbeat waits this long for the database, then is dropped: the next one comes in 2 s.
PUBLISH_TIMEOUT = 2.0


class PostgresRelay:
    def __init__(self, hub: Presence, connect_args: dict[str, Any]) -> None:
        self.hub = hub
        self._connect_args = connect_args
        self._conn: Any = None
        # One asyncpg connection runs one query at a time; heartbeats queue for it.
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None

    @classmethod
    async def open(cls, hub: Presence, db: Database) -> PostgresRelay:
        """LISTEN with the database's own connection settings. A database that is down at
        start-up must not keep keepdesk from starting (it answers 503 until the database is
        back): the relay then connects on a later heartbeat."""
        _, connect_args = db.engine.dialect.create_connect_args(db.engine.url)
        relay = cls(hub, dict(connect_args))
        try:
            await asyncio.wait_for(relay._connect(), PUBLISH_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("presence: cannot listen on PostgreSQL yet (%s); retrying later", exc)
            relay._failed_at = time.monotonic()
        return relay

    async def _connect(self) -> None:
        conn = await asyncpg.connect(**self._connect_args)
        await conn.add_listener(CHANNEL, self._on_notify)
        self._conn = conn

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.hub.receive(payload)

    async def publish(self, payload: str) -> None:
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    if self._failed_at is not None and (
                        time.monotonic() - self._failed_at < REOPEN_AFTER
                    ):
                        return
                    await self._drop()
                    await asyncio.wait_for(self._connect(), PUBLISH_TIMEOUT)
                    log.info("presence: listening on PostgreSQL again")
                await asyncio.wait_for(
                    self._conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload),
                    PUBLISH_TIMEOUT,
                )
                self._failed_at = None
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if self._failed_at is None:
                    log.warning("presence: cannot reach PostgreSQL, other instances miss: %s", exc)
                self._failed_at = time.monotonic()
                await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and not conn.is_closed():
                await conn.remove_listener(CHANNEL, self._on_notify)
                await conn.close(timeout=5)


# A Unix socket's path is at most 107 bytes (108 with its terminating NUL).
MAX_SOCKET_PATH = 107
# Heartbeats are a few hundred bytes; a longer datagram is not one of ours.
MAX_DATAGRAM = 8192
SUFFIX = ".sock"


class SocketRelay:
    """Heartbeats between the processes of one host over Unix datagram sockets, one per hub,
    named after the hub's origin in a folder only keepdesk's user may enter.

    A socket whose process has gone (a crash leaves its file behind) refuses the datagram, and
    its file is removed then. A receiver that is too busy to read its socket (its buffer is
    full) misses that heartbeat: the sender never waits for it. A folder whose path is too long
    for a socket address is reached through `/proc/self/fd/<its descriptor>/`."""

    def __init__(self, hub: Presence, folder: Path, folder_fd: int) -> None:
        self.hub = hub
        self.folder = folder
        self.name = f"{hub.origin}{SUFFIX}"
        self._folder_fd = folder_fd
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned: set[str] = set()

    @classmethod
    def open(cls, hub: Presence, folder: Path) -> SocketRelay | None:
        """Listen in `folder`; None (and a warning) where that cannot be done, so presence
        stays within this process rather than keep keepdesk from starting."""
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            log.warning(
                "presence: cannot use %s (%s); other processes will not see this one's agents",
                folder,
                exc,
            )
            return None
        relay = cls(hub, folder, folder_fd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(relay._address(relay.name))
        except OSError as exc:
            sock.close()
            os.close(folder_fd)
            log.warning(
                "presence: cannot listen in %s (%s); other processes will not see "
                "this one's agents",
                folder,
                exc,
            )
            return None
        relay._sock = sock
        relay._loop = asyncio.get_running_loop()
        relay._loop.add_reader(sock.fileno(), relay._on_readable)
        return relay

    def _address(self, name: str) -> str:
        path = os.path.join(self.folder, name)
        if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
            return path
        return f"/proc/self/fd/{self._folder_fd}/{name}"

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("presence: reading the socket failed: %s", exc)
                return
            self.hub.receive(data.decode("utf-8", "replace"))

    async def publish(self, payload: str) -> None:
        if self._sock is None:
            return
        data = payload.encode()
        try:
            peers = [n for n in os.listdir(self._folder_fd) if n.endswith(SUFFIX)]
        except OSError as exc:
            log.warning("presence: cannot list %s: %s", self.folder, exc)
            return
        for name in peers:
            if name == self.name:
                continue
            try:
                self._sock.sendto(data, self._address(name))
            except (ConnectionRefusedError, FileNotFoundError):
                # Nobody listens there any more: a process that ended without closing.
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=self._folder_fd)
            except BlockingIOError:
                pass  # that process is not reading now; it gets the next heartbeat
            except OSError as exc:
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning("presence: cannot reach %s: %s", name, exc)

    async def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.name, dir_fd=self._folder_fd)
        os.close(self._folder_fd)
