"""Presence across instances on one PostgreSQL: every heartbeat is published with
`NOTIFY keepdesk_presence, '<json>'`, and every instance LISTENs on a connection of its own.

The connection is asyncpg's, opened by the app's lifespan and closed at shutdown. Presence is a
courtesy, never a reason to fail a page: a lost connection is logged, and reopened on a later
heartbeat (at most every `REOPEN_AFTER` seconds); in between, each instance still sees its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
