"""Leases keep each background task to one process at a time, across instances."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from keepdesk import leases
from keepdesk.leases import Lease
from keepdesk.runtime import Runtime
from tests.support.clock import FakeClock

TTL = timedelta(minutes=2)


async def acquire(runtime: Runtime, holder: str, *, name: str = "mail-fetch") -> bool:
    async with runtime.db.session(write=True) as session:
        mine = await leases.acquire(
            session, name=name, holder=holder, ttl=TTL, now=runtime.clock.now()
        )
        await session.commit()
    return mine


async def lease(runtime: Runtime, name: str = "mail-fetch") -> Lease | None:
    async with runtime.db.session() as session:
        return await session.scalar(select(Lease).where(Lease.name == name))


async def test_of_two_holders_only_the_first_gets_the_lease(runtime: Runtime) -> None:
    assert await acquire(runtime, "host-a:1")
    assert not await acquire(runtime, "host-b:2")
    held = await lease(runtime)
    assert held is not None
    assert held.holder == "host-a:1"
    # Another task's lease is a separate matter.
    assert await acquire(runtime, "host-b:2", name="outbox")


async def test_of_two_holders_asking_at_once_exactly_one_wins(runtime: Runtime) -> None:
    results = await asyncio.gather(*(acquire(runtime, f"host-{n}:1") for n in range(4)))
    assert sorted(results) == [False, False, False, True]
    held = await lease(runtime)
    assert held is not None
    assert held.holder == f"host-{results.index(True)}:1"


async def test_the_holder_renews_its_own_lease(runtime: Runtime, clock: FakeClock) -> None:
    assert await acquire(runtime, "host-a:1")
    first = await lease(runtime)
    clock.advance(minutes=1, seconds=59)
    assert await acquire(runtime, "host-a:1")
    renewed = await lease(runtime)
    assert first is not None
    assert renewed is not None
    assert renewed.expires_at - first.expires_at >= timedelta(minutes=1, seconds=59)
    # Renewed, it outlives the first term.
    clock.advance(minutes=1)
    assert not await acquire(runtime, "host-b:2")


async def test_an_expired_lease_is_taken_over(runtime: Runtime, clock: FakeClock) -> None:
    assert await acquire(runtime, "host-a:1")
    clock.advance(minutes=1, seconds=59)
    assert not await acquire(runtime, "host-b:2")
    clock.advance(seconds=2)
    assert await acquire(runtime, "host-b:2")
    assert not await acquire(runtime, "host-a:1")
    held = await lease(runtime)
    assert held is not None
    assert held.holder == "host-b:2"


async def test_a_released_lease_is_free_at_once(runtime: Runtime) -> None:
    assert await acquire(runtime, "host-a:1")
    async with runtime.db.session(write=True) as session:
        await leases.release(session, name="mail-fetch", holder="host-b:2")  # not b's to release
        await session.commit()
    assert not await acquire(runtime, "host-b:2")
    async with runtime.db.session(write=True) as session:
        await leases.release(session, name="mail-fetch", holder="host-a:1")
        await session.commit()
    assert await acquire(runtime, "host-b:2")
