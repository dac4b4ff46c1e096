"""Signing in: passwords, browser sessions and their end, the throttle, and secrets at rest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from keepdesk.accounts import auth
from keepdesk.accounts import service as accounts
from keepdesk.accounts.access import Actor
from keepdesk.accounts.models import Agent, AgentRole, ApiToken, WebSession
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.errors import NotFound, RateLimited, Unauthenticated
from keepdesk.runtime import Runtime
from tests.support.clock import FakeClock

PASSWORD = "Tr0ub4dor&3-but-longer"
IP = "192.0.2.10"


@dataclass
class People:
    ada: int  # an admin
    ben: int  # an agent


@pytest.fixture
async def people(runtime: Runtime) -> People:
    async with runtime.db.session(write=True) as session:
        ids = []
        for name, role in (("ada", AgentRole.admin), ("ben", AgentRole.agent)):
            agent = await accounts.create_agent(
                session,
                by=COMMAND_LINE,
                email=f"{name}@keepdesk.test",
                name=name.title(),
                role=role,
                password=PASSWORD,
                now=runtime.clock.now(),
            )
            ids.append(agent.id)
        await session.commit()
    return People(*ids)


async def sign_in(
    runtime: Runtime, email: str, password: str, *, ip: str = IP, **limits: int
) -> tuple[WebSession, str]:
    """Sign in as the web UI would: the caller commits, even when the password is wrong."""
    s = runtime.settings
    params: dict[str, Any] = {
        "idle_minutes": s.auth_session_idle_minutes,
        "max_days": s.auth_session_max_days,
        "max_failures_per_account": s.auth_max_failures_per_account,
        "max_failures_per_ip": s.auth_max_failures_per_ip,
        "throttle_minutes": s.auth_throttle_minutes,
    } | limits
    async with runtime.db.session(write=True) as session:
        try:
            result = await auth.sign_in(
                session,
                email=email,
                password=password,
                ip_address=ip,
                user_agent="pytest",
                now=runtime.clock.now(),
                **params,
            )
        except Unauthenticated:
            await session.commit()
            raise
        await session.commit()
        return result


async def who(runtime: Runtime, raw: str, *, idle_minutes: int = 480, max_days: int = 14) -> Actor:
    """The agent a session cookie belongs to; raises Unauthenticated when it has ended."""
    async with runtime.db.session(write=True) as session:
        actor, checked = await auth.authenticate_session(
            session, raw, now=runtime.clock.now(), idle_minutes=idle_minutes, max_days=max_days
        )
        if checked.touch is not None:
            await session.execute(checked.touch)  # as a page request records its use
        await session.commit()
        return actor


async def actor(runtime: Runtime, agent_id: int) -> Actor:
    async with runtime.db.session() as session:
        return await auth.actor_for_agent(session, agent_id)


async def test_signing_in_opens_a_session_for_the_agent(runtime: Runtime, people: People) -> None:
    web_session, raw = await sign_in(runtime, " Ben@Keepdesk.Test ", PASSWORD)
    assert raw.startswith("kds_")
    assert web_session.agent_id == people.ben
    me = await who(runtime, raw)
    assert (me.agent_id, me.email, me.role) == (people.ben, "ben@keepdesk.test", AgentRole.agent)
    with pytest.raises(Unauthenticated):
        await who(runtime, raw + "x")


async def test_a_wrong_password_and_an_unknown_account_look_the_same(
    runtime: Runtime, people: People
) -> None:
    with pytest.raises(Unauthenticated) as wrong:
        await sign_in(runtime, "ben@keepdesk.test", PASSWORD + "!")
    with pytest.raises(Unauthenticated) as unknown:
        await sign_in(runtime, "nobody@keepdesk.test", PASSWORD)
    assert (wrong.value.code, wrong.value.message) == (unknown.value.code, unknown.value.message)
    assert wrong.value.code == "bad_credentials"


async def test_an_agent_without_a_password_cannot_sign_in(runtime: Runtime) -> None:
    async with runtime.db.session(write=True) as session:
        await accounts.create_agent(
            session,
            by=COMMAND_LINE,
            email="bot@keepdesk.test",
            name="Bot",
            role=AgentRole.agent,
            now=runtime.clock.now(),
        )
        await session.commit()
    for attempt in ("", "anything at all"):
        with pytest.raises(Unauthenticated):
            await sign_in(runtime, "bot@keepdesk.test", attempt)


async def test_too_many_failures_throttle_the_account_until_the_window_passes(
    runtime: Runtime, people: People, clock: FakeClock
) -> None:
    limit = runtime.settings.auth_max_failures_per_account
    for n in range(limit):
        # From different addresses: only the account's own counter may trip.
        with pytest.raises(Unauthenticated):
            await sign_in(runtime, "ben@keepdesk.test", f"guess {n}", ip=f"198.51.100.{n}")

    with pytest.raises(RateLimited) as throttled:
        await sign_in(runtime, "ben@keepdesk.test", PASSWORD, ip="203.0.113.1")
    window = runtime.settings.auth_throttle_minutes * 60
    assert window - 5 <= throttled.value.retry_after <= window + 1
    # Other accounts are not held up.
    await sign_in(runtime, "ada@keepdesk.test", PASSWORD)

    clock.advance(minutes=runtime.settings.auth_throttle_minutes - 1)
    with pytest.raises(RateLimited) as still:
        await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    assert 0 < still.value.retry_after <= 61

    clock.advance(minutes=1, seconds=1)
    _, raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    assert (await who(runtime, raw)).agent_id == people.ben


async def test_a_success_clears_the_accounts_failures(runtime: Runtime, people: People) -> None:
    limit = runtime.settings.auth_max_failures_per_account
    for n in range(limit - 1):
        with pytest.raises(Unauthenticated):
            await sign_in(runtime, "ben@keepdesk.test", f"guess {n}")
    await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    for n in range(limit - 1):
        with pytest.raises(Unauthenticated):
            await sign_in(runtime, "ben@keepdesk.test", f"guess {n}")
    await sign_in(runtime, "ben@keepdesk.test", PASSWORD)


async def test_failures_older_than_the_window_are_forgotten(
    runtime: Runtime, people: People, clock: FakeClock
) -> None:
    limit = runtime.settings.auth_max_failures_per_account
    for n in range(limit - 1):
        with pytest.raises(Unauthenticated):
            await sign_in(runtime, "ben@keepdesk.test", f"guess {n}")
    clock.advance(minutes=runtime.settings.auth_throttle_minutes, seconds=1)
    with pytest.raises(Unauthenticated):
        await sign_in(runtime, "ben@keepdesk.test", "one more guess")
    await sign_in(runtime, "ben@keepdesk.test", PASSWORD)


async def test_one_address_guessing_many_accounts_is_throttled(
    runtime: Runtime, people: People, clock: FakeClock
) -> None:
    attacker = "203.0.113.66"
    for n in range(3):
        with pytest.raises(Unauthenticated):
            await sign_in(
                runtime, f"user{n}@keepdesk.test", PASSWORD, ip=attacker, max_failures_per_ip=3
            )
    # The right password for a real account does not get through from there...
    with pytest.raises(RateLimited):
        await sign_in(runtime, "ada@keepdesk.test", PASSWORD, ip=attacker, max_failures_per_ip=3)
    # ...while everyone elsewhere signs in as usual,
    await sign_in(runtime, "ada@keepdesk.test", PASSWORD, ip="192.0.2.77", max_failures_per_ip=3)
    # and the address may try again once the window has passed.
    clock.advance(minutes=runtime.settings.auth_throttle_minutes, seconds=1)
    await sign_in(runtime, "ada@keepdesk.test", PASSWORD, ip=attacker, max_failures_per_ip=3)


async def test_a_session_ends_after_idle_time(
    runtime: Runtime, people: People, clock: FakeClock
) -> None:
    _, raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD, idle_minutes=60)
    # Used within the idle time, it lives on well past the first hour...
    for _ in range(4):
        clock.advance(minutes=50)
        assert (await who(runtime, raw, idle_minutes=60)).agent_id == people.ben
    # ...but an hour of silence ends it.
    clock.advance(minutes=60, seconds=1)
    with pytest.raises(Unauthenticated) as ended:
        await who(runtime, raw, idle_minutes=60)
    assert ended.value.code == "no_session"


async def test_a_session_ends_at_its_maximum_age_however_busy(
    runtime: Runtime, people: People, clock: FakeClock
) -> None:
    _, raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD, idle_minutes=600, max_days=1)
    for _ in range(2):
        clock.advance(hours=9)
        await who(runtime, raw, idle_minutes=600, max_days=1)
    clock.advance(hours=5, minutes=59)
    await who(runtime, raw, idle_minutes=600, max_days=1)  # 23h59 after sign-in
    clock.advance(minutes=1, seconds=1)
    with pytest.raises(Unauthenticated):
        await who(runtime, raw, idle_minutes=600, max_days=1)


async def test_revoking_a_session_ends_it(runtime: Runtime, people: People) -> None:
    mine, raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    other, other_raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    ben = await actor(runtime, people.ben)
    async with runtime.db.session(write=True) as session:
        await auth.revoke_session(session, actor=ben, session_id=other.id, now=runtime.clock.now())
        await session.commit()
    with pytest.raises(Unauthenticated):
        await who(runtime, other_raw)
    assert (await who(runtime, raw)).agent_id == people.ben
    async with runtime.db.session() as session:
        listed = await auth.list_sessions(session, agent_id=people.ben, now=runtime.clock.now())
    assert [s.id for s in listed] == [mine.id]


async def test_only_an_admin_may_end_someone_elses_session(
    runtime: Runtime, people: People
) -> None:
    adas, ada_raw = await sign_in(runtime, "ada@keepdesk.test", PASSWORD)
    bens, ben_raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    ada, ben = await actor(runtime, people.ada), await actor(runtime, people.ben)
    async with runtime.db.session(write=True) as session:
        with pytest.raises(NotFound):
            await auth.revoke_session(
                session, actor=ben, session_id=adas.id, now=runtime.clock.now()
            )
        await auth.revoke_session(session, actor=ada, session_id=bens.id, now=runtime.clock.now())
        await session.commit()
    assert (await who(runtime, ada_raw)).agent_id == people.ada
    with pytest.raises(Unauthenticated):
        await who(runtime, ben_raw)


async def test_a_new_password_ends_every_other_session(runtime: Runtime, people: People) -> None:
    here, here_raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    _, elsewhere_raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    async with runtime.db.session(write=True) as session:
        await accounts.set_password(
            session,
            by=(await actor(runtime, people.ben)).audit,
            agent_id=people.ben,
            password="a brand new passphrase",
            now=runtime.clock.now(),
            keep_session_id=here.id,
        )
        await session.commit()
    assert (await who(runtime, here_raw)).agent_id == people.ben
    with pytest.raises(Unauthenticated):
        await who(runtime, elsewhere_raw)
    with pytest.raises(Unauthenticated):
        await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    await sign_in(runtime, "ben@keepdesk.test", "a brand new passphrase")


async def test_a_password_reset_by_an_admin_ends_every_session(
    runtime: Runtime, people: People
) -> None:
    _, raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    async with runtime.db.session(write=True) as session:
        await accounts.set_password(
            session,
            by=COMMAND_LINE,
            agent_id=people.ben,
            password="reset by ada",
            now=runtime.clock.now(),
        )
        await session.commit()
    with pytest.raises(Unauthenticated):
        await who(runtime, raw)


async def test_a_deactivated_agent_cannot_sign_in_and_loses_open_sessions(
    runtime: Runtime, people: People
) -> None:
    _, raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    async with runtime.db.session(write=True) as session:
        await accounts.update_agent(
            session,
            actor=await auth.actor_for_agent(session, people.ada),
            agent_id=people.ben,
            is_active=False,
            now=runtime.clock.now(),
        )
        await session.commit()
    with pytest.raises(Unauthenticated):
        await who(runtime, raw)
    with pytest.raises(Unauthenticated) as refused:
        await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    assert refused.value.code == "bad_credentials"


async def test_passwords_and_tokens_are_stored_only_as_hashes(
    runtime: Runtime, people: People
) -> None:
    web_session, session_raw = await sign_in(runtime, "ben@keepdesk.test", PASSWORD)
    async with runtime.db.session(write=True) as session:
        token, token_raw = await auth.create_api_token(
            session, by=COMMAND_LINE, agent_id=people.ben, name="ci", now=runtime.clock.now()
        )
        await session.commit()
    async with runtime.db.session() as session:
        stored_hash = await session.scalar(
            select(Agent.password_hash).where(Agent.id == people.ben)
        )
        sessions = (await session.execute(select(WebSession.__table__))).all()
        tokens = (await session.execute(select(ApiToken.__table__))).all()

    assert stored_hash is not None
    assert stored_hash.startswith("$argon2id$")
    assert PASSWORD not in stored_hash

    (session_row,) = [r for r in sessions if r.id == web_session.id]
    assert session_row.token_hash == hashlib.sha256(session_raw.encode()).hexdigest()
    (token_row,) = [r for r in tokens if r.id == token.id]
    assert token_row.token_hash == hashlib.sha256(token_raw.encode()).hexdigest()
    assert token_row.prefix == token_raw[:10]
    for row in [*sessions, *tokens]:
        for value in row:
            assert session_raw not in str(value)
            assert token_raw not in str(value)
