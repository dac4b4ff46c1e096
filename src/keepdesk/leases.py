"""Database leases: one process at a time runs a task or fetches a mailbox, across instances.

A lease is a row that names its holder and expiry. Taking it is one atomic upsert that only
succeeds when the row is free, expired, or already ours; a holder that dies loses it at expiry.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from sqlalchemy import String, delete, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from keepdesk.db import Base, UTCDateTime, conflict_insert


class Lease(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


def holder_name() -> str:
    """This process, as lease rows name it."""
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


async def acquire(
    session: AsyncSession, *, name: str, holder: str, ttl: timedelta, now: datetime
) -> bool:
    stmt = (
        conflict_insert(session, Lease)
        .values(name=name, holder=holder, expires_at=now + ttl)
        .on_conflict_do_update(
            index_elements=[Lease.name],
            set_={"holder": holder, "expires_at": now + ttl},
            where=or_(Lease.expires_at < now, Lease.holder == holder),
        )
        .returning(Lease.holder)
    )
    got: str | None = await session.scalar(stmt)
    return got == holder


async def release(session: AsyncSession, *, name: str, holder: str) -> None:
    await session.execute(delete(Lease).where(Lease.name == name, Lease.holder == holder))
