"""The runner and the housekeeping units: leases respected, ended sessions forgotten, clean stop."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from keepdesk import leases
from keepdesk.accounts import auth
from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import AgentRole, LoginThrottle, WebSession
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.errors import Unauthenticated
from keepdesk.leases import Lease
from keepdesk.runtime import Runtime
from keepdesk.workers import housekeeping, runner
from keepdesk.workers.registry import TASKS, Task
from tests.support.clock import FakeClock

PASSWORD = "a long enough password"


def task(name: str) -> Task:
    (found,) = [t for t in TASKS if t.name == name]
    return found


@pytest.fixture
async def ben(runtime: Runtime) -> int:
    async with runtime.db.session(write=True) as session:
        agent = await accounts.create_agent(
            session,
            by=COMMAND_LINE,
            email="ben@keepdesk.test",
            name="Ben",
            role=AgentRole.agent,
            password=PASSWORD,
            now=runtime.clock.now(),
        )
        await session.commit()
        return agent.id


async def sign_in(
    runtime: Runtime, password: str = PASSWORD, *, ip: str = "192.0.2.1", idle_minutes: int = 60
) -> int:
    async with runtime.db.session(write=True) as session:
        try:
            web_session, _ = await auth.sign_in(
                session,
                email="ben@keepdesk.test",
                password=password,
                ip_address=ip,
                user_agent="pytest",
                now=runtime.clock.now(),
                idle_minutes=idle_minutes,
                max_days=14,
                max_failures_per_account=100,
                max_failures_per_ip=3,
                throttle_minutes=15,
            )
        finally:
            await session.commit()
        return web_session.id


async def revoke(runtime: Runtime, ben: int, session_id: int) -> None:
    async with runtime.db.session(write=True) as session:
        actor = await auth.actor_for_agent(session, ben)
        await auth.revoke_session(
            session, actor=actor, session_id=session_id, now=runtime.clock.now()
        )
        await session.commit()


async def fail_sign_in(runtime: Runtime, ip: str) -> None:
    with pytest.raises(Unauthenticated):
        await sign_in(runtime, "wrong password", ip=ip)


async def session_ids(runtime: Runtime) -> set[int]:
    async with runtime.db.session() as session:
        return set((await session.scalars(select(WebSession.id))).all())


async def throttle_keys(runtime: Runtime) -> set[str]:
    async with runtime.db.session() as session:
        return set((await session.scalars(select(LoginThrottle.key))).all())


async def test_purge_forgets_sessions_that_ended_over_a_day_ago_only(
    runtime: Runtime, ben: int, clock: FakeClock
) -> None:
    expired_long_ago = await sign_in(runtime, idle_minutes=60)
    revoked_long_ago = await sign_in(runtime, idle_minutes=10_000)
    await revoke(runtime, ben, revoked_long_ago)
    clock.advance(days=2)
    live = await sign_in(runtime, idle_minutes=10_000)
    revoked_just_now = await sign_in(runtime, idle_minutes=10_000)
    clock.advance(hours=23)
    expired_recently = await sign_in(runtime, idle_minutes=60)
    clock.advance(minutes=61)
    await revoke(runtime, ben, revoked_just_now)
    assert len(await session_ids(runtime)) == 5

    await housekeeping.purge_sessions(runtime)

    assert await session_ids(runtime) == {live, revoked_just_now, expired_recently}
    assert {expired_long_ago, revoked_long_ago}.isdisjoint(await session_ids(runtime))


async def test_purge_forgets_sign_in_failures_whose_window_passed_long_ago(
    runtime: Runtime, ben: int, clock: FakeClock
) -> None:
    for _ in range(3):
        await fail_sign_in(runtime, ip="198.51.100.1")
    clock.advance(days=2)
    for _ in range(3):
        await fail_sign_in(runtime, ip="203.0.113.9")  # locked for the next 15 minutes
    assert await throttle_keys(runtime) == {
        "account:ben@keepdesk.test",
        "ip:198.51.100.1",
        "ip:203.0.113.9",
    }

    await housekeeping.purge_sessions(runtime)

    assert await throttle_keys(runtime) == {"account:ben@keepdesk.test", "ip:203.0.113.9"}


async def test_run_once_skips_a_task_whose_lease_another_process_holds(
    runtime: Runtime, ben: int, clock: FakeClock
) -> None:
    ended = await sign_in(runtime)
    clock.advance(days=2)
    purge = task("purge-sessions")
    async with runtime.db.session(write=True) as session:
        assert await leases.acquire(
            session, name=purge.name, holder="other-host:7", ttl=timedelta(hours=2), now=clock.now()
        )
        await session.commit()

    assert await runner.run_once(runtime, purge, holder="this-host:1") is False
    assert ended in await session_ids(runtime)

    clock.advance(hours=2, seconds=1)
    assert await runner.run_once(runtime, purge, holder="this-host:1") is True
    assert ended not in await session_ids(runtime)
    # Now this process holds it, and the other one is the one that waits.
    assert await runner.run_once(runtime, purge, holder="other-host:7") is False


async def test_the_runner_runs_its_tasks_under_their_leases_and_stops_when_asked(
    runtime: Runtime,
) -> None:
    housekeeping_tasks = (task("close-resolved-tickets"), task("purge-sessions"))
    stop = asyncio.Event()
    workers = asyncio.create_task(runner.run_workers(runtime, stop, housekeeping_tasks))
    try:
        deadline = time.monotonic() + 10
        while True:
            async with runtime.db.session() as session:
                held = {n: h for n, h in await session.execute(select(Lease.name, Lease.holder))}
            if len(held) == 2 or workers.done() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert held == {t.name: leases.holder_name() for t in housekeeping_tasks}
    finally:
        stop.set()
    # Both wait ten minutes or more for their next round; asked to stop, they stop at once.
    await asyncio.wait_for(workers, timeout=5)
