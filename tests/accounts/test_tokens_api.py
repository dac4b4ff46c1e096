"""API tokens and bearer authentication: shown once, revocable at once, never readable again."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI

from keepdesk.accounts import auth
from keepdesk.runtime import Runtime
from tests.conftest import World
from tests.support.clock import FakeClock


def bearer(app: FastAPI, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://keepdesk.test",
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_a_new_token_is_shown_once_and_then_only_by_its_prefix(world: World) -> None:
    bob = world.client("bob")
    created = await bob.post("/api/v1/tokens", json={"name": "billing export"})
    assert created.status_code == 201, created.text
    body = created.json()
    raw = body["token"]
    assert raw.startswith("kd_")
    assert len(raw) > 40
    assert (body["name"], body["prefix"], body["revoked_at"]) == ("billing export", raw[:10], None)

    listed = await bob.get("/api/v1/tokens")
    assert listed.status_code == 200
    assert raw not in listed.text
    items = listed.json()["items"]
    assert [t["name"] for t in items] == ["tests", "billing export"]
    assert all("token" not in t for t in items)

    async with bearer(world.app, raw) as new:
        me = await new.get("/api/v1/agents/me")
    assert me.json()["email"] == "bob@keepdesk.test"


async def test_bob_revokes_a_token_and_it_stops_working_at_once(world: World) -> None:
    bob = world.client("bob")
    raw = (await bob.post("/api/v1/tokens", json={"name": "laptop"})).json()
    async with bearer(world.app, raw["token"]) as laptop:
        assert (await laptop.get("/api/v1/agents/me")).status_code == 200
        assert (await bob.delete(f"/api/v1/tokens/{raw['id']}")).status_code == 204
        refused = await laptop.get("/api/v1/agents/me")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_token"
    listed = (await bob.get("/api/v1/tokens")).json()["items"]
    assert [t["revoked_at"] is not None for t in listed] == [False, True]
    assert (await bob.delete(f"/api/v1/tokens/{raw['id']}")).status_code == 204

    # Revoking the token in use ends the very next request.
    own_id = listed[0]["id"]
    assert (await bob.delete(f"/api/v1/tokens/{own_id}")).status_code == 204
    assert (await bob.get("/api/v1/agents/me")).status_code == 401


async def test_bob_cannot_see_or_revoke_daves_tokens(world: World) -> None:
    dave = world.client("dave")
    dave_token = (await dave.get("/api/v1/tokens")).json()["items"][0]["id"]
    bob = world.client("bob")
    assert [t["id"] for t in (await bob.get("/api/v1/tokens")).json()["items"]] != [dave_token]

    refused = await bob.delete(f"/api/v1/tokens/{dave_token}")
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "not_found"
    missing = await bob.delete("/api/v1/tokens/99999")
    assert missing.json() == refused.json() | {
        "error": refused.json()["error"] | {"message": "no token with id 99999"}
    }
    assert (await dave.get("/api/v1/agents/me")).status_code == 200


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "unauthenticated"),
        ("Bearer    ", "unauthenticated"),
        ("Basic Ym9iOnB3", "unauthenticated"),
        ("bearer kd_not-a-real-token", "invalid_token"),
        ("Bearer \u00e9\u00e9\u00e9".encode("latin-1"), "invalid_token"),
    ],
)
async def test_missing_or_garbage_credentials_are_401_with_a_challenge(
    anonymous: httpx.AsyncClient, authorization: str | bytes | None, code: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await anonymous.get("/api/v1/agents/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="keepdesk"'
    assert response.json()["error"]["code"] == code


async def test_me_is_the_agent_behind_the_token(world: World) -> None:
    me = (await world.client("dave").get("/api/v1/agents/me")).json()
    assert me["id"] == world.ids["dave"]
    assert (me["email"], me["name"], me["role"]) == ("dave@keepdesk.test", "Dave Support", "agent")
    assert me["team_ids"] == [world.ids["support"]]
    admin = (await world.client("alice").get("/api/v1/agents/me")).json()
    assert (admin["role"], admin["team_ids"]) == ("admin", [])


async def _last_used(runtime: Runtime, agent_id: int) -> datetime | None:
    async with runtime.db.session() as session:
        (token,) = await auth.list_api_tokens(session, agent_id=agent_id)
        return token.last_used_at


async def test_last_use_is_written_at_most_every_five_minutes(
    world: World, runtime: Runtime, clock: FakeClock
) -> None:
    bob, bob_id = world.client("bob"), world.ids["bob"]
    assert await _last_used(runtime, bob_id) is None

    before = clock.now()
    await bob.get("/api/v1/agents/me")
    first = await _last_used(runtime, bob_id)
    assert first is not None
    assert first > before

    clock.advance(minutes=4)
    await bob.get("/api/v1/agents/me")
    assert await _last_used(runtime, bob_id) == first

    clock.advance(minutes=2)
    await bob.get("/api/v1/agents/me")
    second = await _last_used(runtime, bob_id)
    assert second is not None
    assert second - first > auth._TOKEN_TOUCH_INTERVAL

    # A write request records the use in its own transaction.
    clock.advance(minutes=6)
    assert (await bob.post("/api/v1/contacts", json={"email": "z@x.test"})).status_code == 201
    third = await _last_used(runtime, bob_id)
    assert third is not None
    assert third - second > auth._TOKEN_TOUCH_INTERVAL
