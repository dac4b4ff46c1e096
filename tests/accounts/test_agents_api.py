"""Agents and teams through the REST API: only admins change them, and access ends at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import auth
from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import AgentRole
from keepdesk.errors import Conflict
from keepdesk.runtime import Runtime
from tests.conftest import World


def error_code(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def test_alice_creates_an_agent_in_a_team(world: World) -> None:
    alice = world.client("alice")
    created = await alice.post(
        "/api/v1/agents",
        json={
            "email": "Erin.Example@Keepdesk.TEST",
            "name": "  Erin   Example ",
            "role": "agent",
            "team_ids": [world.ids["support"]],
        },
    )
    assert created.status_code == 201, created.text
    erin = created.json()
    assert erin["email"] == "erin.example@keepdesk.test"
    assert erin["name"] == "Erin Example"
    assert (erin["role"], erin["is_active"], erin["team_ids"]) == (
        "agent",
        True,
        [world.ids["support"]],
    )
    assert (await alice.get(f"/api/v1/agents/{erin['id']}")).json() == erin
    support = (await alice.get(f"/api/v1/teams/{world.ids['support']}")).json()
    assert support["member_ids"] == [world.ids["dave"], erin["id"]]


async def test_alice_creates_and_renames_a_team(world: World) -> None:
    alice = world.client("alice")
    created = await alice.post("/api/v1/teams", json={"name": "Returns"})
    assert created.status_code == 201, created.text
    team = created.json()
    assert (team["name"], team["member_ids"]) == ("Returns", [])
    renamed = await alice.patch(f"/api/v1/teams/{team['id']}", json={"name": "Refunds"})
    assert renamed.status_code == 200
    names = [t["name"] for t in (await alice.get("/api/v1/teams")).json()["items"]]
    assert names == ["Billing", "Refunds", "Support"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/agents", {"email": "eve@keepdesk.test", "name": "Eve"}),
        ("POST", "/api/v1/teams", {"name": "Bob's own team"}),
        ("PATCH", "/api/v1/agents/{dave}", {"role": "admin"}),
        ("PATCH", "/api/v1/agents/{dave}", {"is_active": False}),
        ("PATCH", "/api/v1/teams/{support}", {"name": "Not Support"}),
        ("PUT", "/api/v1/teams/{billing}/members/{dave}", None),
        ("DELETE", "/api/v1/teams/{billing}/members/{bob}", None),
    ],
)
async def test_agents_cannot_change_agents_or_teams(
    world: World, method: str, path: str, body: dict[str, Any] | None
) -> None:
    # Agents and teams are listed to every agent, so a plain 403 reveals nothing.
    response = await world.client("bob").request(method, path.format(**world.ids), json=body)
    assert response.status_code == 403
    assert error_code(response) == "admin_only"
    dave = (await world.client("alice").get(f"/api/v1/agents/{world.ids['dave']}")).json()
    assert (dave["role"], dave["is_active"]) == ("agent", True)
    teams = (await world.client("alice").get("/api/v1/teams")).json()["items"]
    assert {t["name"]: t["member_ids"] for t in teams} == {
        "Billing": [world.ids["bob"]],
        "Support": [world.ids["dave"]],
    }


async def test_agents_may_read_agents_and_teams(world: World) -> None:
    bob = world.client("bob")
    agents = (await bob.get("/api/v1/agents")).json()["items"]
    assert [a["email"] for a in agents] == [
        "alice@keepdesk.test",
        "bob@keepdesk.test",
        "dave@keepdesk.test",
    ]
    assert all("password" not in key for agent in agents for key in agent)
    assert (await bob.get("/api/v1/teams")).status_code == 200


async def test_agent_list_pages_with_a_cursor_and_filters_by_team(world: World) -> None:
    alice = world.client("alice")
    first = (await alice.get("/api/v1/agents", params={"limit": 2})).json()
    assert [a["email"][:3] for a in first["items"]] == ["ali", "bob"]
    rest = (
        await alice.get("/api/v1/agents", params={"limit": 2, "cursor": first["next_cursor"]})
    ).json()
    assert ([a["email"][:3] for a in rest["items"]], rest["next_cursor"]) == (["dav"], None)
    billing = (await alice.get("/api/v1/agents", params={"team_id": world.ids["billing"]})).json()
    assert [a["id"] for a in billing["items"]] == [world.ids["bob"]]
    bad = await alice.get("/api/v1/agents", params={"cursor": "not-a-cursor"})
    assert (bad.status_code, error_code(bad)) == (422, "invalid_cursor")


@pytest.mark.parametrize("email", ["bob@keepdesk.test", "BOB@KeepDesk.Test", " bob@keepdesk.test "])
async def test_an_address_in_use_in_any_case_is_409(world: World, email: str) -> None:
    response = await world.client("alice").post(
        "/api/v1/agents", json={"email": email, "name": "Second Bob"}
    )
    assert response.status_code == 409
    assert error_code(response) == "email_taken"


async def test_a_bad_address_or_unknown_team_is_422(world: World) -> None:
    alice = world.client("alice")
    bad = await alice.post("/api/v1/agents", json={"email": "erin@", "name": "Erin"})
    assert (bad.status_code, error_code(bad)) == (422, "invalid_email")
    two = await alice.post(
        "/api/v1/agents", json={"email": "erin@a.test,mallory@b.test", "name": "Erin"}
    )
    assert (two.status_code, error_code(two)) == (422, "invalid_email")
    no_team = await alice.post(
        "/api/v1/agents", json={"email": "erin@keepdesk.test", "name": "Erin", "team_ids": [999]}
    )
    assert (no_team.status_code, error_code(no_team)) == (422, "unknown_team")
    # Nothing half-made is left behind: the address is still free.
    again = await alice.post("/api/v1/agents", json={"email": "erin@keepdesk.test", "name": "E"})
    assert again.status_code == 201, again.text


@pytest.mark.parametrize("name", ["billing", "BILLING", "  Billing  "])
async def test_a_team_name_in_use_in_any_case_is_409(world: World, name: str) -> None:
    alice = world.client("alice")
    created = await alice.post("/api/v1/teams", json={"name": name})
    assert (created.status_code, error_code(created)) == (409, "team_exists")
    renamed = await alice.patch(f"/api/v1/teams/{world.ids['support']}", json={"name": name})
    assert (renamed.status_code, error_code(renamed)) == (409, "team_exists")


async def test_alice_adds_and_removes_a_member(world: World) -> None:
    alice, dave = world.client("alice"), world.client("dave")
    billing, dave_id = world.ids["billing"], world.ids["dave"]
    path = f"/api/v1/teams/{billing}/members/{dave_id}"

    assert (await alice.put(path)).status_code == 204
    assert (await alice.put(path)).status_code == 204  # adding twice is harmless
    members = (await alice.get(f"/api/v1/teams/{billing}")).json()["member_ids"]
    assert members == [world.ids["bob"], dave_id]
    me = (await dave.get("/api/v1/agents/me")).json()
    assert me["team_ids"] == sorted([billing, world.ids["support"]])

    assert (await alice.delete(path)).status_code == 204
    assert (await dave.get("/api/v1/agents/me")).json()["team_ids"] == [world.ids["support"]]
    again = await alice.delete(path)
    assert (again.status_code, error_code(again)) == (404, "not_found")
    nobody = await alice.put(f"/api/v1/teams/{billing}/members/9999")
    assert nobody.status_code == 404
    no_team = await alice.put(f"/api/v1/teams/9999/members/{dave_id}")
    assert no_team.status_code == 404


async def test_alice_moves_bob_between_teams_with_team_ids(world: World) -> None:
    alice = world.client("alice")
    moved = await alice.patch(
        f"/api/v1/agents/{world.ids['bob']}", json={"team_ids": [world.ids["support"]]}
    )
    assert moved.status_code == 200
    assert moved.json()["team_ids"] == [world.ids["support"]]
    billing = (await alice.get(f"/api/v1/teams/{world.ids['billing']}")).json()
    assert billing["member_ids"] == []


async def test_deactivating_bob_ends_his_access_at_once(world: World) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    assert (await bob.get("/api/v1/agents/me")).status_code == 200

    off = await alice.patch(f"/api/v1/agents/{world.ids['bob']}", json={"is_active": False})
    assert off.status_code == 200
    assert off.json()["is_active"] is False
    refused = await bob.get("/api/v1/agents/me")
    assert refused.status_code == 401
    assert error_code(refused) == "invalid_token"

    # Turning him back on does not revive the old token: he needs a new one.
    on = await alice.patch(f"/api/v1/agents/{world.ids['bob']}", json={"is_active": True})
    assert on.status_code == 200
    assert (await bob.get("/api/v1/agents/me")).status_code == 401


async def test_alice_cannot_demote_or_deactivate_herself(world: World) -> None:
    alice = world.client("alice")
    path = f"/api/v1/agents/{world.ids['alice']}"
    demote = await alice.patch(path, json={"role": "agent"})
    assert (demote.status_code, error_code(demote)) == (422, "own_role")
    deactivate = await alice.patch(path, json={"is_active": False})
    assert (deactivate.status_code, error_code(deactivate)) == (422, "own_account")
    me = (await alice.get("/api/v1/agents/me")).json()
    assert (me["role"], me["is_active"]) == ("admin", True)
    # Her name is hers to change.
    renamed = await alice.patch(path, json={"name": "Alice A. Admin"})
    assert renamed.json()["name"] == "Alice A. Admin"


async def test_an_admin_can_demote_another_admin(world: World) -> None:
    alice = world.client("alice")
    promoted = await alice.patch(f"/api/v1/agents/{world.ids['dave']}", json={"role": "admin"})
    assert promoted.json()["role"] == "admin"
    assert (await world.client("dave").post("/api/v1/teams", json={"name": "Ops"})).status_code == (
        201
    )
    demoted = await world.client("dave").patch(
        f"/api/v1/agents/{world.ids['alice']}", json={"role": "agent"}
    )
    assert demoted.status_code == 200
    refused = await alice.post("/api/v1/teams", json={"name": "Alice's"})
    assert (refused.status_code, error_code(refused)) == (403, "admin_only")


async def test_the_last_active_admin_is_kept(world: World, runtime: Runtime) -> None:
    """Dave, an admin until a moment ago, acts on what he was when his request began."""
    now = runtime.clock.now()
    async with runtime.db.session(write=True) as session:
        await accounts.update_agent(
            session,
            actor=await auth.actor_for_agent(session, world.ids["alice"]),
            agent_id=world.ids["dave"],
            role=AgentRole.admin,
            now=now,
        )
        await session.commit()
    async with runtime.db.session(write=True) as session:
        dave_as_admin = await auth.actor_for_agent(session, world.ids["dave"])
        await accounts.update_agent(
            session,
            actor=await auth.actor_for_agent(session, world.ids["alice"]),
            agent_id=world.ids["dave"],
            role=AgentRole.agent,
            now=now,
        )
        await session.commit()
    async with runtime.db.session(write=True) as session:
        with pytest.raises(Conflict) as caught:
            await accounts.update_agent(
                session,
                actor=dave_as_admin,
                agent_id=world.ids["alice"],
                role=AgentRole.agent,
                now=now,
            )
        assert caught.value.code == "last_admin"
    async with runtime.db.session() as session:
        assert (await accounts.get_agent(session, world.ids["alice"])).role == AgentRole.admin


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    world: World, runtime: Runtime
) -> None:
    """Alice demotes dave while dave demotes alice: one of the two must be refused."""
    if runtime.db.is_sqlite:
        pytest.skip("SQLite runs one writer at a time (BEGIN IMMEDIATE); the race needs PostgreSQL")
    async with runtime.db.session(write=True) as session:
        alice = await auth.actor_for_agent(session, world.ids["alice"])
        await accounts.update_agent(
            session,
            actor=alice,
            agent_id=world.ids["dave"],
            role=AgentRole.admin,
            now=runtime.clock.now(),
        )
        await session.commit()
    async with runtime.db.session(write=True) as session:
        dave = await auth.actor_for_agent(session, world.ids["dave"])

    async def dave_demotes_alice() -> None:
        async with runtime.db.session(write=True) as session:
            await accounts.update_agent(
                session,
                actor=dave,
                agent_id=world.ids["alice"],
                role=AgentRole.agent,
                now=runtime.clock.now(),
            )
            await session.commit()

    async with runtime.db.session(write=True) as first:
        await accounts.update_agent(
            first,
            actor=alice,
            agent_id=world.ids["dave"],
            role=AgentRole.agent,
            now=runtime.clock.now(),
        )
        second = asyncio.create_task(dave_demotes_alice())
        await _until_blocked_or_done(runtime, second)
        await first.commit()
    with pytest.raises(Conflict) as caught:
        await second
    assert caught.value.code == "last_admin"
    async with runtime.db.session() as session:
        assert await _active_admins(session) == 1


async def _active_admins(session: AsyncSession) -> int:
    page = await accounts.list_agents(session, cursor=None, limit=100)
    return sum(1 for a in page.items if a.is_admin and a.is_active)


async def _until_blocked_or_done(runtime: Runtime, task: asyncio.Task[None]) -> None:
    """Wait until `task` waits on a PostgreSQL lock or has finished, for at most 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if task.done():
            return
        async with runtime.db.engine.connect() as conn:
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the second transaction neither finished nor waited on a lock")
