"""The ticket page's presence line over HTTP: a heartbeat per poll, answered with who else is
there, for a ticket the agent may see, and only from a keepdesk page (CSRF)."""

from __future__ import annotations

from tests.conftest import World, open_ticket
from tests.web.conftest import Pages


async def test_dave_and_alice_see_each_other_on_a_support_ticket(
    world: World, pages: Pages
) -> None:
    ticket = await open_ticket(world.client("dave"))
    url = f"/tickets/{ticket['number']}/presence"
    dave, alice = await pages.sign_in("dave"), await pages.sign_in("alice")

    alone = await dave.post(url, {"typing": "0"}, htmx=True)
    assert alone.status_code == 200, alone.text
    assert "Also here" not in alone.text

    seen = await alice.post(url, {"typing": "1"}, htmx=True)
    assert "Also here: <strong>Dave Support</strong> (viewing)" in seen.text
    assert "Alice" not in seen.text

    back = await dave.post(url, {}, htmx=True)
    assert "Also here: <strong>Alice Admin</strong> (typing a reply)" in back.text
    assert back.headers["cache-control"] == "no-store"

    # The ticket page polls it, and keepdesk.js adds whether the composer has text.
    page = await dave.get(f"/tickets/{ticket['number']}")
    assert f'hx-post="{url}"' in page.text
    assert 'hx-trigger="load, every 1500ms, presence-change"' in page.text


async def test_bob_gets_404_on_the_presence_of_a_support_ticket(world: World, pages: Pages) -> None:
    ticket = await open_ticket(world.client("dave"))
    dave, bob = await pages.sign_in("dave"), await pages.sign_in("bob")
    await dave.post(f"/tickets/{ticket['number']}/presence", {"typing": "1"}, htmx=True)

    for number in (ticket["number"], ticket["number"] + 1):
        response = await bob.post(f"/tickets/{number}/presence", {"typing": "0"})
        assert response.status_code == 404, response.text
        assert "Dave" not in response.text and "Printer on fire" not in response.text
    # Nor did bob's attempt put him on the ticket.
    again = await dave.post(f"/tickets/{ticket['number']}/presence", {}, htmx=True)
    assert "Also here" not in again.text


async def test_a_heartbeat_needs_the_csrf_token_and_our_own_origin(
    world: World, pages: Pages
) -> None:
    ticket = await open_ticket(world.client("dave"))
    url = f"/tickets/{ticket['number']}/presence"
    dave, alice = await pages.sign_in("dave"), await pages.sign_in("alice")

    missing = await alice.post(url, {"typing": "1"}, csrf=False)
    assert missing.status_code == 403
    assert "security token is missing or out of date" in missing.text
    forged = await alice.post(url, {"typing": "1"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403
    # The forged heartbeats recorded nothing.
    seen = await dave.post(url, {}, htmx=True)
    assert "Also here" not in seen.text
    # The header HTMX sends counts like the form field.
    header = await alice.post(
        url, {"typing": "0"}, csrf=False, htmx=True, headers={"X-CSRF-Token": alice.csrf}
    )
    assert header.status_code == 200
    assert "Dave Support" in header.text


async def test_a_signed_out_visitor_is_sent_to_sign_in(world: World, pages: Pages) -> None:
    ticket = await open_ticket(world.client("dave"))
    response = await pages.anonymous().post(
        f"/tickets/{ticket['number']}/presence", {}, csrf=False, htmx=True
    )
    assert response.status_code == 401
    assert response.headers["hx-redirect"].startswith("/sign-in")
