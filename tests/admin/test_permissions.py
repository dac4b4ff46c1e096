"""Who may use the admin pages: administrators only. An agent gets the readable "not allowed"
page (or the flash notice under HTMX) and nothing changes; a signed-out visitor is sent to sign
in (tests/web/test_routes.py covers that and CSRF for every route in `PAGE_ROUTES`)."""

from __future__ import annotations

from tests.conftest import World
from tests.web import test_routes as routes
from tests.web.conftest import Pages

ADMIN_ROUTES = [r for r in routes.PAGE_ROUTES if r.who == "admin"]


def test_every_admin_path_is_marked_admin() -> None:
    for route in routes.PAGE_ROUTES:
        assert route.path.startswith("/admin/") == (route.who == "admin"), route


async def test_an_agent_gets_a_readable_403_on_every_admin_route(
    world: World, pages: Pages
) -> None:
    ids = await routes._ids(world)
    bob = await pages.sign_in("bob")
    for route in ADMIN_ROUTES:
        path, form = routes._path(route, ids), routes._form(route, ids)
        if route.method == "GET":
            response = await bob.get(path)
        else:
            response = await bob.post(path, form)
        assert response.status_code == 403, route
        assert response.text.startswith("<!doctype html>"), route
        assert "Not allowed" in response.text and "only administrators" in response.text
    # Under HTMX the same refusal is a notice in the flash area.
    response = await bob.post("/admin/teams", {"name": "Sales"}, htmx=True)
    assert response.status_code == 403
    assert response.headers["hx-retarget"] == "#flash"
    teams = (await world.client("alice").get("/api/v1/teams")).json()["items"]
    assert {t["name"] for t in teams} == {"Billing", "Support"}
    agents = (await world.client("alice").get("/api/v1/agents")).json()["items"]
    assert "eve@keepdesk.test" not in {a["email"] for a in agents}


async def test_only_admins_see_the_admin_entry(pages: Pages, world: World) -> None:
    alice, bob = await pages.sign_in("alice"), await pages.sign_in("bob")
    assert 'href="/admin/agents"' in (await alice.get("/account")).text
    assert 'href="/admin/agents"' not in (await bob.get("/account")).text
