"""The audit log: who changed agents, teams and tokens, in a hash chain that shows tampering."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, text

from keepdesk.audit import service as audit
from keepdesk.audit.models import AuditEntry
from keepdesk.db import json_type
from keepdesk.runtime import Runtime
from tests.conftest import World


async def entries_after(runtime: Runtime, after: int) -> list[tuple[str, str, str, str]]:
    async with runtime.db.session() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id)
        )
        return [(e.actor_label, e.action, e.object_type, e.object_id) for e in rows]


async def last_id(runtime: Runtime) -> int:
    async with runtime.db.session() as session:
        return int(await session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc())) or 0)


async def verify(runtime: Runtime) -> int | None:
    async with runtime.db.session() as session:
        return await audit.verify_chain(session)


async def test_agent_team_and_token_changes_are_recorded_with_who_did_them(
    world: World, runtime: Runtime
) -> None:
    alice, bob = world.client("alice"), world.client("bob")
    start = await last_id(runtime)

    erin = (await alice.post("/api/v1/agents", json={"email": "erin@k.test", "name": "E"})).json()
    await alice.patch(f"/api/v1/agents/{erin['id']}", json={"role": "admin"})
    await alice.patch(f"/api/v1/agents/{erin['id']}", json={"role": "admin"})  # no change
    team = (await alice.post("/api/v1/teams", json={"name": "Returns"})).json()
    await alice.patch(f"/api/v1/teams/{team['id']}", json={"name": "Refunds"})
    await alice.put(f"/api/v1/teams/{team['id']}/members/{erin['id']}")
    await alice.delete(f"/api/v1/teams/{team['id']}/members/{erin['id']}")
    token = (await bob.post("/api/v1/tokens", json={"name": "export"})).json()
    await bob.delete(f"/api/v1/tokens/{token['id']}")
    await bob.post("/api/v1/teams", json={"name": "Refused"})  # 403: no entry

    a, b = "alice@keepdesk.test", "bob@keepdesk.test"
    erin_id, team_id, token_id = str(erin["id"]), str(team["id"]), str(token["id"])
    assert await entries_after(runtime, start) == [
        (a, "agent.created", "agent", erin_id),
        (a, "agent.updated", "agent", erin_id),
        (a, "team.created", "team", team_id),
        (a, "team.renamed", "team", team_id),
        (a, "team.member_added", "team", team_id),
        (a, "team.member_removed", "team", team_id),
        (b, "token.created", "api_token", token_id),
        (b, "token.revoked", "api_token", token_id),
    ]
    async with runtime.db.session() as session:
        updated = await session.scalar(
            select(AuditEntry.data).where(AuditEntry.action == "agent.updated")
        )
    assert updated == {"role": ["agent", "admin"]}


async def test_deactivating_an_agent_is_recorded(world: World, runtime: Runtime) -> None:
    start = await last_id(runtime)
    await world.client("alice").patch(
        f"/api/v1/agents/{world.ids['bob']}", json={"is_active": False}
    )
    async with runtime.db.session() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.id > start))
    assert entry is not None
    assert (entry.action, entry.actor_agent_id, entry.data) == (
        "agent.updated",
        world.ids["alice"],
        {"is_active": [True, False]},
    )


async def test_an_intact_chain_verifies(world: World, runtime: Runtime) -> None:
    await world.client("alice").post("/api/v1/teams", json={"name": "Returns"})
    assert await last_id(runtime) > 5
    assert await verify(runtime) is None


async def _ids(runtime: Runtime) -> list[int]:
    async with runtime.db.session() as session:
        return list((await session.scalars(select(AuditEntry.id).order_by(AuditEntry.id))).all())


async def _execute(runtime: Runtime, statement: Any, **params: Any) -> None:
    async with runtime.db.session(write=True) as session:
        await session.execute(statement, params)
        await session.commit()


async def test_editing_an_entry_behind_the_logs_back_is_found(
    world: World, runtime: Runtime
) -> None:
    ids = await _ids(runtime)
    victim = ids[len(ids) // 2]
    tamper = text("UPDATE audit_entries SET data = :data WHERE id = :id").bindparams(
        bindparam("data", type_=json_type())
    )
    await _execute(runtime, tamper, data={"email": "mallory@evil.test"}, id=victim)
    assert await verify(runtime) == victim


async def test_rewriting_who_acted_is_found(world: World, runtime: Runtime) -> None:
    victim = (await _ids(runtime))[0]
    await _execute(
        runtime,
        text("UPDATE audit_entries SET actor_label = 'someone else' WHERE id = :id"),
        id=victim,
    )
    assert await verify(runtime) == victim


async def test_deleting_an_entry_breaks_the_chain_at_the_next_one(
    world: World, runtime: Runtime
) -> None:
    ids = await _ids(runtime)
    await _execute(runtime, text("DELETE FROM audit_entries WHERE id = :id"), id=ids[2])
    assert await verify(runtime) == ids[3]


async def test_recomputing_one_hash_does_not_hide_an_edit(world: World, runtime: Runtime) -> None:
    """A tamperer who fixes the edited row's own hash still breaks the link to the next row."""
    ids = await _ids(runtime)
    victim = ids[1]
    async with runtime.db.session(write=True) as session:
        entry = await session.get(AuditEntry, victim)
        assert entry is not None
        entry.data = {"forged": True}
        entry.hash = audit._digest(entry.prev_hash, entry)
        await session.commit()
    assert await verify(runtime) == ids[2]
