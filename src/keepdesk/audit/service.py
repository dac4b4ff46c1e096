"""Writing and verifying the audit log.

Each entry stores sha256(previous hash + its own canonical JSON), so editing or deleting a row
in the middle breaks the chain at that row, which `verify_chain` reports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.audit.models import AuditEntry

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditActor:
    agent_id: int | None
    label: str


SYSTEM = AuditActor(agent_id=None, label="system")
COMMAND_LINE = AuditActor(agent_id=None, label="command line")


def _digest(prev_hash: str, entry: AuditEntry) -> str:
    body = json.dumps(
        {
            "at": entry.created_at.isoformat(),
            "actor": [entry.actor_agent_id, entry.actor_label],
            "action": entry.action,
            "object": [entry.object_type, entry.object_id],
            "data": entry.data,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


async def record(
    session: AsyncSession,
    *,
    actor: AuditActor,
    action: str,
    object_type: str,
    object_id: str | int,
    at: datetime,
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        # Serialise writers so two transactions cannot both chain onto the same last entry.
        await session.execute(text("SELECT pg_advisory_xact_lock(7201001)"))
    last = await session.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))
    entry = AuditEntry(
        created_at=at,
        actor_agent_id=actor.agent_id,
        actor_label=actor.label,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        data=data or {},
        prev_hash=last or GENESIS,
    )
    entry.hash = _digest(entry.prev_hash, entry)
    session.add(entry)
    await session.flush()
    return entry


async def verify_chain(session: AsyncSession) -> int | None:
    """The id of the first entry whose hash does not follow from the chain, or None if intact."""
    prev = GENESIS
    rows = await session.stream_scalars(select(AuditEntry).order_by(AuditEntry.id))
    async for entry in rows:
        if entry.prev_hash != prev or entry.hash != _digest(prev, entry):
            return entry.id
        prev = entry.hash
    return None
