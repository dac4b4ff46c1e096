"""Presence across two instances (issue 5 item 6): a heartbeat sent to one app is seen through
the other, carried by LISTEN/NOTIFY on PostgreSQL and by Unix datagram sockets in the shared
data directory on SQLite (the processes of `serve --processes N`; tests/scale/test_processes.py
runs the real thing).

Two `create_app`s in one test process, each with its own relay, as two servers behind a load
balancer would have; the agents' session cookies work on both, as they share the database.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from keepdesk.app import create_app
from keepdesk.config import Settings
from keepdesk.presence.hub import Heartbeat, Presence
from keepdesk.presence.relay import PostgresRelay, SocketRelay
from tests.conftest import World, open_ticket
from tests.support.clock import FakeClock
from tests.web.conftest import PageAgent, Pages

on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
on_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


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


async def _until_seen(hub: Presence, *, seconds: float = 5) -> None:
    """Until `hub` has someone on ticket 7 (a datagram arrives a moment after it is sent)."""
    deadline = time.monotonic() + seconds
    while True:
        if hub.others(number=7, agent_id=1) or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.02)


async def test_presence_recorded_through_one_instance_is_seen_through_the_other(
    app: FastAPI, second_app: FastAPI, world: World, pages: Pages, settings: Settings
) -> None:
    kind = PostgresRelay if settings.effective_database_url.startswith("postgres") else SocketRelay
    assert isinstance(app.state.presence.relay, kind)
    assert isinstance(second_app.state.presence.relay, kind)
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


@on_postgres
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


@on_sqlite
async def test_a_socket_left_by_a_process_that_died_is_removed(
    app: FastAPI, second_app: FastAPI, settings: Settings
) -> None:
    here: Presence = app.state.presence
    there: Presence = second_app.state.presence
    folder = settings.data_dir / "run" / "presence"
    # What a killed process leaves: a socket file that nobody reads any more.
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(os.fspath(folder / "0123456789abcdef.sock"))
    dead.close()
    assert len(list(folder.glob("*.sock"))) == 3

    await here.beat(Heartbeat(number=7, agent_id=3, name="Dave Support", is_typing=False))
    await _until_seen(there)
    assert [s.name for s in there.others(number=7, agent_id=1)] == ["Dave Support"]
    assert sorted(p.name for p in folder.glob("*.sock")) == sorted(
        f"{hub.origin}.sock" for hub in (here, there)
    )


async def test_a_data_directory_too_deep_for_a_socket_address_still_carries_presence(
    tmp_path: Path, clock: FakeClock
) -> None:
    folder = tmp_path.joinpath(*["deep-folder-name"] * 8, "run", "presence")
    assert len(os.fsencode(folder / "0123456789abcdef.sock")) > 108
    here, there = Presence(clock), Presence(clock)
    relays = [SocketRelay.open(hub, folder) for hub in (here, there)]
    here.relay, there.relay = relays
    try:
        assert all(relays)
        await here.beat(Heartbeat(number=7, agent_id=3, name="Dave Support", is_typing=True))
        await _until_seen(there)
        assert [s.name for s in there.others(number=7, agent_id=1)] == ["Dave Support"]
    finally:
        for relay in relays:
            if relay is not None:
                await relay.close()
    assert not list(folder.iterdir())
