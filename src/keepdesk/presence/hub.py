"""The presence hub: per ticket, which agents sent a heartbeat lately and whether they are typing.

An entry lives `TTL` after its last heartbeat; there is no "left" message, so a closed tab simply
fades out. The hub is in memory and belongs to one app (`app.state.presence`); a `Relay` carries
heartbeats to the other instances and brings theirs in through `receive`.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from keepdesk.clock import Clock

log = logging.getLogger("keepdesk.presence")

# Pages send a heartbeat every 2 s; 30 s of silence means the agent has gone.
TTL = timedelta(seconds=30)
# NOTIFY payloads are limited to 8000 bytes; a name is shown, never needed in full.
MAX_NAME = 200


@dataclass(frozen=True)
class Heartbeat:
    """One agent on one ticket at one moment, as sent between instances."""

    number: int
    agent_id: int
    name: str
    is_typing: bool

    def to_json(self, *, origin: str) -> str:
        return json.dumps(
            {
                "origin": origin,
                "number": self.number,
                "agent_id": self.agent_id,
                "name": self.name[:MAX_NAME],
                "is_typing": self.is_typing,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, payload: str) -> tuple[str, Heartbeat]:
        """The sending hub's origin and its heartbeat; `ValueError` for anything malformed."""
        data: Any = json.loads(payload)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        origin, number, agent_id = data.get("origin"), data.get("number"), data.get("agent_id")
        name, is_typing = data.get("name"), data.get("is_typing")
        if not (
            isinstance(origin, str)
            and type(number) is int
            and type(agent_id) is int
            and isinstance(name, str)
            and isinstance(is_typing, bool)
        ):
            raise ValueError("missing or mistyped fields")
        return origin, cls(number, agent_id, name[:MAX_NAME], is_typing)


@dataclass(frozen=True)
class Seen:
    """Another agent on the ticket, as the page shows them."""

    agent_id: int
    name: str
    is_typing: bool


@dataclass
class _Entry:
    name: str
    is_typing: bool
    seen_at: datetime


class Relay(Protocol):
    """Carries this instance's heartbeats to the others (PostgreSQL: `relay.PostgresRelay`)."""

    async def publish(self, payload: str) -> None: ...


class Presence:
    def __init__(self, clock: Clock, *, ttl: timedelta = TTL) -> None:
        self.clock = clock
        self.ttl = ttl
        # Tells this hub's own heartbeats apart when NOTIFY delivers them back to it.
        self.origin = secrets.token_hex(8)
        self.relay: Relay | None = None
        self._tickets: dict[int, dict[int, _Entry]] = {}
        self._swept_at: datetime | None = None

    async def beat(self, heartbeat: Heartbeat) -> None:
        """Record a heartbeat of an agent of this instance, and pass it on to the others."""
        self.record(heartbeat)
        if self.relay is not None:
            await self.relay.publish(heartbeat.to_json(origin=self.origin))

    def record(self, heartbeat: Heartbeat) -> None:
        now = self.clock.now()
        agents = self._tickets.setdefault(heartbeat.number, {})
        agents[heartbeat.agent_id] = _Entry(heartbeat.name, heartbeat.is_typing, now)
        self._sweep(now)

    def receive(self, payload: str) -> None:
        """A heartbeat from another instance. It is dated on arrival, by this instance's clock,
        so clocks that differ between hosts do not make entries expire early or linger."""
        try:
            origin, heartbeat = Heartbeat.from_json(payload)
        except ValueError as exc:
            log.warning("ignored a malformed presence message: %s", exc)
            return
        if origin != self.origin:
            self.record(heartbeat)

    def others(self, *, number: int, agent_id: int) -> list[Seen]:
        """Who else is on the ticket, typing first, then by name."""
        now = self.clock.now()
        agents = self._tickets.get(number, {})
        seen = [
            Seen(other_id, entry.name, entry.is_typing)
            for other_id, entry in agents.items()
            if other_id != agent_id and now - entry.seen_at < self.ttl
        ]
        return sorted(seen, key=lambda s: (not s.is_typing, s.name.casefold(), s.agent_id))

    def _sweep(self, now: datetime) -> None:
        # At most once per TTL: drop expired entries and emptied tickets, so memory follows the
        # tickets open right now, not every ticket ever opened.
        if self._swept_at is not None and now - self._swept_at < self.ttl:
            return
        self._swept_at = now
        for number in list(self._tickets):
            agents = self._tickets[number]
            for agent_id in [a for a, e in agents.items() if now - e.seen_at >= self.ttl]:
                del agents[agent_id]
            if not agents:
                del self._tickets[number]

    def tracked_tickets(self) -> int:
        return len(self._tickets)
