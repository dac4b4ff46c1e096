"""Presence across two instances on one PostgreSQL (issue 5 item 6): a heartbeat sent to one
app is seen through the other, carried by LISTEN/NOTIFY.

Two `create_app`s in one test process, each with its own LISTEN connection, as two servers behind
a load balancer would have; the agents' session cookies work on both, as they share the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from keepdesk.app import create_app
from keepdesk.config import Settings
from keepdesk.presence.hub import Heartbeat, Presence
from keepdesk.presence.relay import PostgresRelay
from tests.conftest import World, open_ticket
from tests.support.clock import FakeClock
from tests.web.conftest import PageAgent, Pages

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture
async def second_app(settings: Settings, clock: FakeClock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, start_workers=False, clock=clock)
    async with LifespanManager(application):
        yield application


async def poll_until(agent: PageAgent, url: str, wanted: str, *, seconds: float = 5) -> str:
    """Heartbeats until the answer shows `wanted` (NOTIFY arrives a moment after the commit)."""
    deadline = time.monotonic() + seconds
    while True:
        text = (await agent.post(url, {}, htmx=True)).text
        if wanted in text or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.02)


async def test_presence_recorded_through_one_instance_is_seen_through_the_other(
    app: FastAPI, second_app: FastAPI, world: World, pages: Pages
) -> None:
    assert isinstance(app.state.presence.relay, PostgresRelay)
    assert isinstance(second_app.state.presence.relay, PostgresRelay)
    ticket = await open_ticket(world.client("dave"))
    url = f"/tickets/{ticket['number']}/presence"
    there = Pages(second_app, world)
    try:
        alice = await pages.sign_in("alice")
        dave = await there.sign_in("dave")

        await alice.post(url, {"typing": "1"}, htmx=True)
        seen_by_dave = await poll_until(dave, url, "Alice Admin")
        assert "Also here: <strong>Alice Admin</strong> (typing a reply)" in seen_by_dave

        seen_by_alice = await poll_until(alice, url, "Dave Support")
        assert "Also here: <strong>Dave Support</strong> (viewing)" in seen_by_alice
    finally:
        await there.close()


async def test_a_lost_listen_connection_is_reopened(app: FastAPI, second_app: FastAPI) -> None:
    here: Presence = app.state.presence
    there: Presence = second_app.state.presence
    relay = here.relay
    assert isinstance(relay, PostgresRelay)
    await relay._drop()  # as if the database had restarted under it

    await here.beat(Heartbeat(number=7, agent_id=3, name="Dave Support", is_typing=False))
    deadline = time.monotonic() + 5
    while True:
        if there.others(number=7, agent_id=1) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert [s.name for s in there.others(number=7, agent_id=1)] == ["Dave Support"]
