"""Every page route's rules: who may call it, CSRF on every change, the security headers, and
HTMX fragments from the same URLs. One table lists the page routes; a new route fails
`test_every_page_route_is_in_the_table` until it is listed with its rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from keepdesk.app import create_app
from keepdesk.config import load_settings
from tests.conftest import World, open_ticket
from tests.web.conftest import PageAgent, Pages, csrf_of


@dataclass(frozen=True)
class PageRoute:
    method: str
    path: str
    form: dict[str, Any] | None = None
    # "agent": needs a signed-in agent; "admin": an administrator (tests/admin);
    # "public": the sign-in and setup pages.
    who: str = "agent"


PAGE_ROUTES = [
    PageRoute("GET", "/"),
    PageRoute("GET", "/sign-in", who="public"),
    PageRoute("POST", "/sign-in", {"email": "bob@keepdesk.test", "password": "x"}, "public"),
    PageRoute("GET", "/setup", who="public"),
    PageRoute(
        "POST",
        "/setup",
        {"email": "x@example.org", "name": "X", "password": "y" * 12, "repeat_password": "y" * 12},
        "public",
    ),
    PageRoute("POST", "/sign-out", {}),
    PageRoute("GET", "/account"),
    PageRoute("POST", "/account/sessions/{session_id}/revoke", {}),
    PageRoute(
        "POST",
        "/account/password",
        {"current_password": "a", "new_password": "b" * 12, "repeat_password": "b" * 12},
    ),
    PageRoute("GET", "/queue/{key}"),
    PageRoute("GET", "/queue/team/{team_id}"),
    PageRoute("GET", "/search"),
    PageRoute("POST", "/queue/bulk", {"numbers": ["{number}"], "op": "status:pending"}),
    PageRoute("GET", "/tickets/{number}"),
    PageRoute("GET", "/tickets/{number}/messages/{message_id}/body"),
    PageRoute("POST", "/tickets/{number}/messages/{message_id}/split"),
    PageRoute("GET", "/tickets/{number}/attachments/{attachment_id}"),
    PageRoute(
        "POST", "/tickets/{number}/properties", {"priority": "high", "orig_priority": "normal"}
    ),
    PageRoute("POST", "/tickets/{number}/messages", {"kind": "note", "body": "hi"}),
    PageRoute("POST", "/tickets/{number}/presence", {"typing": "1"}),
    PageRoute("POST", "/tickets/{number}/macro", {"body": "hi"}),
    PageRoute("GET", "/mentions"),
    PageRoute("POST", "/mentions/{mention_id}/open", {}),
    PageRoute("GET", "/tokens"),
    PageRoute("POST", "/tokens", {"name": "script"}),
    PageRoute("POST", "/tokens/{token_id}/revoke", {}),
    PageRoute("GET", "/admin/agents", who="admin"),
    PageRoute(
        "POST",
        "/admin/agents",
        {"name": "Eve", "email": "eve@keepdesk.test", "role": "agent"},
        "admin",
    ),
    PageRoute("POST", "/admin/agents/{agent_id}", {"role": "admin", "is_active": "true"}, "admin"),
    PageRoute("GET", "/admin/teams", who="admin"),
    PageRoute("POST", "/admin/teams", {"name": "Sales"}, "admin"),
    PageRoute("POST", "/admin/teams/{team_id}/rename", {"name": "Help"}, "admin"),
    PageRoute("POST", "/admin/teams/{team_id}/members", {"agent_id": "{agent_id}"}, "admin"),
    PageRoute("POST", "/admin/teams/{team_id}/members/{agent_id}/remove", {}, "admin"),
    PageRoute("GET", "/admin/mailboxes", who="admin"),
    PageRoute(
        "POST",
        "/admin/mailboxes",
        {
            "address": "help@keepdesk.test",
            "imap_url": "imap://u:p@127.0.0.1:1/INBOX",
            "smtp_url": "smtp://127.0.0.1:1",
        },
        "admin",
    ),
    PageRoute("POST", "/admin/mailboxes/{mailbox_id}/active", {"is_active": "false"}, "admin"),
    PageRoute("POST", "/admin/mailboxes/{mailbox_id}/test", {}, "admin"),
    PageRoute("GET", "/admin/quarantine", who="admin"),
    PageRoute("GET", "/admin/quarantine/{item_id}", who="admin"),
    PageRoute("GET", "/admin/quarantine/{item_id}/raw", who="admin"),
    PageRoute("POST", "/admin/quarantine/{item_id}/reprocess", {}, "admin"),
    PageRoute("POST", "/admin/quarantine/{item_id}/discard", {}, "admin"),
]
# Served, but not pages: the REST API and the operator's endpoints have their own tests.
NOT_PAGES = ("/api/", "/healthz", "/readyz", "/metrics", "/static")


def test_every_page_route_is_in_the_table(tmp_path: Path) -> None:
    app = create_app(
        load_settings(
            data_dir=tmp_path,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.sqlite3'}",
            secret_key="test-secret-" + "x" * 32,
        ),
        start_workers=False,
    )
    served = {
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        if route.path and not route.path.startswith(NOT_PAGES)
        for method in route.methods or ()
        if method != "HEAD"
    }
    listed = {(r.method, r.path) for r in PAGE_ROUTES}
    assert len(listed) == len(PAGE_ROUTES), "a route is listed twice"
    assert served - listed == set(), "add these page routes to PAGE_ROUTES, with their rules"
    assert listed - served == set(), "these PAGE_ROUTES entries are no longer served"


@dataclass
class Ids:
    number: int
    message_id: int
    attachment_id: int
    session_id: int
    team_id: int
    agent_id: int
    # Ids that need not exist: the rules are checked before anything is looked up.
    token_id: int = 1
    mailbox_id: int = 1
    item_id: int = 1
    mention_id: int = 1


async def _ids(world: World, agent: PageAgent | None = None) -> Ids:
    dave = world.client("dave")
    ticket = await open_ticket(
        dave,
        body_html="<p>Hello</p>",
        attachments=[{"filename": "a.txt", "content_base64": "aGVsbG8="}],
    )
    first = (await dave.get(f"/api/v1/tickets/{ticket['number']}/messages")).json()["items"][0]
    session_id = 1
    if agent is not None:
        account = (await agent.get("/account")).text
        if "/account/sessions/" in account:
            session_id = int(account.split("/account/sessions/")[1].split("/")[0])
    return Ids(
        ticket["number"],
        first["id"],
        first["attachments"][0]["id"],
        session_id,
        world.ids["support"],
        world.ids["dave"],
    )


def _path(route: PageRoute, ids: Ids) -> str:
    return route.path.format(
        number=ids.number,
        message_id=ids.message_id,
        attachment_id=ids.attachment_id,
        session_id=ids.session_id,
        team_id=ids.team_id,
        agent_id=ids.agent_id,
        token_id=ids.token_id,
        mailbox_id=ids.mailbox_id,
        item_id=ids.item_id,
        mention_id=ids.mention_id,
        key="mine",
    )


def _form(route: PageRoute, ids: Ids) -> dict[str, Any]:
    form = dict(route.form or {})
    if "numbers" in form:
        form["numbers"] = [str(ids.number)]
    if form.get("agent_id") == "{agent_id}":
        form["agent_id"] = str(ids.agent_id)
    return form


async def test_a_signed_out_visitor_gets_only_the_sign_in_and_setup_pages(
    world: World, pages: Pages
) -> None:
    ids = await _ids(world)
    visitor = pages.anonymous()
    for route in (r for r in PAGE_ROUTES if r.who != "public"):
        path = _path(route, ids)
        if route.method == "GET":
            response = await visitor.get(path)
            assert response.status_code == 303, route
            assert response.headers["location"].startswith("/sign-in"), route
        else:
            response = await visitor.post(path, _form(route, ids), csrf=False)
            assert response.status_code == 401, route
            assert "Please sign in" in response.text
        assert "Printer on fire" not in response.text
    # An HTMX request is sent to sign in as a whole page, back to where the agent was.
    response = await visitor.get(
        "/queue/mine", htmx=True, headers={"HX-Current-URL": "http://keepdesk.test/tickets/7"}
    )
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/sign-in?next=%2Ftickets%2F7"


async def test_every_change_needs_the_csrf_token_and_our_own_origin(
    world: World, pages: Pages
) -> None:
    alice = await pages.sign_in("alice")
    await pages.sign_in("alice")  # a second session, for the revoke route
    ids = await _ids(world, alice)
    for route in (r for r in PAGE_ROUTES if r.method == "POST" and r.who != "public"):
        path, form = _path(route, ids), _form(route, ids)
        missing = await alice.post(path, form, csrf=False)
        assert missing.status_code == 403, route
        assert "security token is missing or out of date" in missing.text
        wrong = await alice.post(path, {**form, "csrf_token": "forged"}, csrf=False)
        assert wrong.status_code == 403, route
        for header in (
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Referer": "https://evil.example/form"},
        ):
            forged = await alice.post(path, form, headers=header)
            assert forged.status_code == 403, (route, header)
            assert "not sent from a keepdesk page" in forged.text
    # Nothing above changed anything: the ticket is as dave left it.
    ticket = (await world.client("dave").get(f"/api/v1/tickets/{ids.number}")).json()
    assert (ticket["priority"], ticket["status"], ticket["version"]) == ("normal", "new", 1)
    assert (await alice.get("/account")).status_code == 200


async def test_a_token_in_the_header_counts_like_the_form_field(world: World, pages: Pages) -> None:
    dave = await pages.sign_in("dave")
    ticket = await open_ticket(world.client("dave"))
    response = await dave.post(
        f"/tickets/{ticket['number']}/properties",
        {"priority": "high", "orig_priority": "normal"},
        csrf=False,
        htmx=True,
        headers={"X-CSRF-Token": dave.csrf, "Sec-Fetch-Site": "same-origin"},
    )
    assert response.status_code == 200, response.text
    assert 'id="side_panel"' in response.text


async def test_another_sessions_token_does_not_count(world: World, pages: Pages) -> None:
    bob, dave = await pages.sign_in("bob"), await pages.sign_in("dave")
    response = await dave.post("/account/password", {"csrf_token": bob.csrf}, csrf=False)
    assert response.status_code == 403


async def test_the_sign_in_form_needs_its_own_token(pages: Pages) -> None:
    visitor = pages.anonymous()
    no_cookie = await visitor.post(
        "/sign-in", {"email": "bob@keepdesk.test", "password": "x"}, csrf=False
    )
    assert no_cookie.status_code == 403
    assert "needs cookies" in no_cookie.text
    visitor.csrf = csrf_of((await visitor.get("/sign-in")).text)
    no_token = await visitor.post(
        "/sign-in", {"email": "bob@keepdesk.test", "password": "x"}, csrf=False
    )
    assert no_token.status_code == 403
    cross = await visitor.post(
        "/sign-in",
        {"email": "bob@keepdesk.test", "password": "x"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403


def assert_page_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"


async def test_pages_carry_the_security_headers_and_vary_on_htmx(
    world: World, pages: Pages
) -> None:
    alice = await pages.sign_in("alice")
    ids = await _ids(world)
    for route in (r for r in PAGE_ROUTES if r.method == "GET"):
        path = _path(route, ids)
        response = await alice.get(path)
        if "/body" in path or "/attachments/" in path or path.endswith("/raw"):
            continue  # their own CSP: tests/web/test_ticket_page.py
        assert_page_headers(response)
        if response.status_code == 200:
            assert response.headers["vary"] == "HX-Request", path
            assert response.headers["cache-control"] == "no-store", path
            assert "<script>" not in response.text and " style=" not in response.text, path
    assert_page_headers(await pages.anonymous().get("/sign-in"))
    assert_page_headers(await pages.anonymous().get("/no/such/page"))


async def test_an_htmx_request_gets_only_the_fragment(world: World, pages: Pages) -> None:
    dave = await pages.sign_in("dave")
    await open_ticket(world.client("dave"))
    full = await dave.get("/queue/unassigned")
    assert full.text.startswith("<!doctype html>")
    fragment = await dave.get("/queue/unassigned", htmx=True)
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="queue_results"')
    assert "<html" not in fragment.text and "Printer on fire" in fragment.text
    assert fragment.headers["vary"] == "HX-Request"
    # A history restore (back button with htmx) wants the whole page again.
    restore = await dave.get(
        "/queue/unassigned", htmx=True, headers={"HX-History-Restore-Request": "true"}
    )
    assert restore.text.startswith("<!doctype html>")


@pytest.mark.parametrize("htmx", [False, True])
async def test_errors_use_the_layout_or_the_flash(world: World, pages: Pages, htmx: bool) -> None:
    bob = await pages.sign_in("bob")
    response = await bob.get("/tickets/99999", htmx=htmx)
    assert response.status_code == 404
    if htmx:
        assert response.headers["hx-retarget"] == "#flash"
        assert response.text.startswith('<p class="notice error"')
        assert "no ticket #99999" in response.text
    else:
        assert response.text.startswith("<!doctype html>")
        assert "Not found" in response.text and "no ticket #99999" in response.text
        assert "Bob Billing" in response.text  # the layout, with the agent's navigation
