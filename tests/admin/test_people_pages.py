"""alice administers people through the pages, and the API shows what she did; the service's
rules (the last administrator, her own role) come back as readable messages. Every agent manages
their own API tokens on /tokens."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import World
from tests.web.conftest import Pages


async def _agent(alice_api: httpx.AsyncClient, email: str) -> dict[str, Any]:
    agents = (await alice_api.get("/api/v1/agents")).json()["items"]
    return next(a for a in agents if a["email"] == email)


async def test_each_admin_page_renders_for_alice(world: World, pages: Pages) -> None:
    alice = await pages.sign_in("alice")
    for path, words in [
        ("/admin/agents", ["Bob Billing", "dave@keepdesk.test", "Add an agent"]),
        ("/admin/teams", ["Billing", "Support", "Dave Support", "New team"]),
        ("/admin/mailboxes", ["No mailboxes yet", "Add a mailbox"]),
        ("/admin/quarantine", ["No mail is held"]),
        ("/tokens", ["tests", "New token"]),
    ]:
        response = await alice.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.text.startswith("<!doctype html>")
        for word in words:
            assert word in response.text, (path, word)


async def test_alice_creates_an_agent_who_can_sign_in(world: World, pages: Pages) -> None:
    alice = await pages.sign_in("alice")
    response = await alice.post(
        "/admin/agents",
        {
            "name": "Eve Extra",
            "email": "Eve@keepdesk.test",
            "role": "agent",
            "team_ids": [str(world.ids["billing"]), str(world.ids["support"])],
            "password": "a long enough password",
        },
        htmx=True,
    )
    assert response.status_code == 200, response.text
    assert response.text.lstrip().startswith('<div id="agents">')
    assert "Eve Extra &lt;eve@keepdesk.test&gt; can now sign in." in response.text
    eve = await _agent(world.client("alice"), "eve@keepdesk.test")
    assert eve["role"] == "agent" and eve["is_active"]
    assert sorted(eve["team_ids"]) == sorted([world.ids["billing"], world.ids["support"]])
    assert (await (await pages.sign_in("eve", "a long enough password")).get("/tokens")).is_success

    again = await alice.post(
        "/admin/agents", {"name": "Eve", "email": "eve@keepdesk.test", "role": "agent"}
    )
    assert again.status_code == 409
    assert "an agent with the address eve@keepdesk.test exists already" in again.text
    weak = await alice.post(
        "/admin/agents",
        {"name": "Fay", "email": "fay@keepdesk.test", "role": "agent", "password": "short"},
    )
    assert weak.status_code == 422 and 'role="alert"' in weak.text


async def test_alice_changes_role_active_and_teams(world: World, pages: Pages) -> None:
    alice = await pages.sign_in("alice")
    dave_id = world.ids["dave"]
    response = await alice.post(
        f"/admin/agents/{dave_id}",
        {"role": "admin", "is_active": "true", "team_ids": [str(world.ids["billing"])]},
    )
    assert response.status_code == 200, response.text
    assert "Dave Support is saved." in response.text
    dave = await _agent(world.client("alice"), "dave@keepdesk.test")
    assert (dave["role"], dave["is_active"], dave["team_ids"]) == (
        "admin",
        True,
        [world.ids["billing"]],
    )
    # Switching bob off ends his API token at once.
    response = await alice.post(
        f"/admin/agents/{world.ids['bob']}", {"role": "agent", "is_active": "false"}
    )
    assert response.status_code == 200
    assert (await world.client("bob").get("/api/v1/agents/me")).status_code == 401


async def test_the_services_rules_come_back_as_messages(world: World, pages: Pages) -> None:
    alice = await pages.sign_in("alice")
    own = await alice.post(
        f"/admin/agents/{world.ids['alice']}", {"role": "agent", "is_active": "true"}, htmx=True
    )
    assert own.status_code == 422
    assert "you cannot change your own role" in own.text
    off = await alice.post(
        f"/admin/agents/{world.ids['alice']}", {"role": "admin", "is_active": "false"}
    )
    assert off.status_code == 422 and "you cannot deactivate yourself" in off.text
    alice_now = await _agent(world.client("alice"), "alice@keepdesk.test")
    assert (alice_now["role"], alice_now["is_active"]) == ("admin", True)


async def test_alice_manages_teams_and_members(world: World, pages: Pages) -> None:
    alice, api = await pages.sign_in("alice"), world.client("alice")
    created = await alice.post("/admin/teams", {"name": "Sales"}, htmx=True)
    assert created.status_code == 200, created.text
    assert created.text.lstrip().startswith('<div id="teams">')
    teams = {t["name"]: t for t in (await api.get("/api/v1/teams")).json()["items"]}
    sales = teams["Sales"]["id"]

    clash = await alice.post(f"/admin/teams/{sales}/rename", {"name": "billing"})
    assert clash.status_code == 409 and "a team named &#39;billing&#39; exists already" in (
        clash.text
    )
    renamed = await alice.post(f"/admin/teams/{sales}/rename", {"name": "Sales EU"})
    assert renamed.status_code == 200 and "Sales EU" in renamed.text

    added = await alice.post(f"/admin/teams/{sales}/members", {"agent_id": world.ids["bob"]})
    assert added.status_code == 200
    team = (await api.get(f"/api/v1/teams/{sales}")).json()
    assert (team["name"], team["member_ids"]) == ("Sales EU", [world.ids["bob"]])

    removed = await alice.post(f"/admin/teams/{sales}/members/{world.ids['bob']}/remove", {})
    assert removed.status_code == 200
    assert (await api.get(f"/api/v1/teams/{sales}")).json()["member_ids"] == []
    gone = await alice.post(f"/admin/teams/{sales}/members/{world.ids['bob']}/remove", {})
    assert gone.status_code == 404


async def test_an_agent_creates_uses_and_revokes_a_token(world: World, pages: Pages) -> None:
    bob = await pages.sign_in("bob")
    created = await bob.post("/tokens", {"name": "my script"}, htmx=True)
    assert created.status_code == 200, created.text
    assert "shown only this once" in created.text
    raw = created.text.split('<code class="token">')[1].split("</code>")[0]
    script = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=world.app),
        base_url="http://keepdesk.test",
        headers={"Authorization": f"Bearer {raw}"},
    )
    async with script:
        assert (await script.get("/api/v1/agents/me")).json()["email"] == "bob@keepdesk.test"
        listed = (await bob.get("/tokens")).text
        assert raw not in listed and "my script" in listed and raw[:10] in listed
        token_id = next(
            t["id"]
            for t in (await script.get("/api/v1/tokens")).json()["items"]
            if t["name"] == "my script"
        )
        revoked = await bob.post(f"/tokens/{token_id}/revoke", {}, htmx=True)
        assert revoked.status_code == 200 and "revoked" in revoked.text
        assert (await script.get("/api/v1/agents/me")).status_code == 401


async def test_tokens_page_holds_only_your_own_tokens(world: World, pages: Pages) -> None:
    alice, dave = await pages.sign_in("alice"), await pages.sign_in("dave")
    bobs = (await world.client("bob").get("/api/v1/tokens")).json()["items"]
    # Even an administrator cannot revoke bob's token through her own tokens page.
    for agent in (alice, dave):
        response = await agent.post(f"/tokens/{bobs[0]['id']}/revoke", {})
        assert response.status_code == 404
    assert (await world.client("bob").get("/api/v1/agents/me")).status_code == 200
