"""@mentions in internal notes: who is named, who is told (only agents who can see the ticket),
and the mentioned agent's list, count and marking read."""

from __future__ import annotations

import re

import httpx

from keepdesk.tickets.mentions import find_mentions
from tests.conftest import World, open_ticket
from tests.web.conftest import Pages


def test_a_note_names_agents_by_address_or_full_name() -> None:
    named = find_mentions('Ask @dave. Or @"Dave  Support", cc carol@customer.test, @Bob_b')
    assert named.local_parts == {"dave", "bob_b"}
    assert named.names == {"dave support"}
    assert not find_mentions("mail carol@customer.test or me@example.org")


async def note(client: httpx.AsyncClient, number: int, body: str, kind: str = "note") -> None:
    response = await client.post(
        f"/api/v1/tickets/{number}/messages", json={"kind": kind, "body": body}
    )
    assert response.status_code == 201, response.text


async def mentions_of(world: World, name: str) -> dict:  # type: ignore[type-arg]
    response = await world.client(name).get("/api/v1/mentions")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_a_note_mentioning_dave_tells_dave_and_bob_who_cannot_see_it_nobody(
    world: World,
) -> None:
    number = (await open_ticket(world.client("dave"), subject="Printer on fire"))["number"]
    await note(world.client("alice"), number, '@dave please look; @bob and @"Bob Billing" too')

    daves = await mentions_of(world, "dave")
    assert daves["unread"] == 1
    (item,) = daves["items"]
    assert (item["ticket_number"], item["ticket_subject"], item["author"]) == (
        number,
        "Printer on fire",
        "Alice Admin",
    )
    assert item["read_at"] is None
    assert await mentions_of(world, "bob") == {"items": [], "unread": 0}


async def test_admins_are_told_authors_are_not_and_replies_mention_nobody(world: World) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    await note(dave, number, '@"alice admin" can you approve? (and @dave, myself)')
    await note(dave, number, "@alice this goes to the customer", kind="reply")
    assert [m["excerpt"] for m in (await mentions_of(world, "alice"))["items"]] == [
        '@"alice admin" can you approve? (and @dave, myself)'
    ]
    assert (await mentions_of(world, "dave"))["items"] == []


async def test_the_mentions_page_lists_unread_first_and_opening_marks_read(
    world: World, pages: Pages
) -> None:
    alice_api = world.client("alice")
    first = (await open_ticket(world.client("dave"), subject="First problem"))["number"]
    second = (await open_ticket(world.client("dave"), subject="Second problem"))["number"]
    await note(alice_api, first, "@dave the first")
    await note(alice_api, second, "@dave the second")
    dave = await pages.sign_in("dave")

    count = await dave.get("/mentions", htmx=True, headers={"HX-Target": "mention_count"})
    assert count.status_code == 200
    assert '<span class="count" title="2 unread">2</span>' in count.text
    assert "<html" not in count.text

    page = await dave.get("/mentions")
    assert page.status_code == 200
    assert page.text.index(f"#{second} Second problem") < page.text.index(f"#{first} First")
    assert "Alice Admin" in page.text
    ids = [int(i) for i in re.findall(r'action="/mentions/(\d+)/open"', page.text)]

    # Opening the older one marks it read, takes dave to the ticket, and moves it last.
    opened = await dave.post(f"/mentions/{ids[1]}/open", {})
    assert opened.status_code == 303
    assert opened.headers["location"] == f"/tickets/{first}"
    after = await mentions_of(world, "dave")
    assert after["unread"] == 1
    assert [(m["ticket_number"], m["read_at"] is None) for m in after["items"]] == [
        (second, True),
        (first, False),
    ]
    count = await dave.get("/mentions", htmx=True, headers={"HX-Target": "mention_count"})
    assert 'title="1 unread"' in count.text

    # Someone else's mention is not there for bob.
    bob = await pages.sign_in("bob")
    assert (await bob.post(f"/mentions/{ids[0]}/open", {})).status_code == 404
    assert (await mentions_of(world, "dave"))["unread"] == 1


async def test_a_mention_on_a_ticket_moved_out_of_sight_drops_out(world: World) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    await note(world.client("alice"), number, "@dave see this")
    moved = await world.client("alice").patch(
        f"/api/v1/tickets/{number}", json={"team_id": world.ids["billing"]}
    )
    assert moved.status_code == 200, moved.text
    assert await mentions_of(world, "dave") == {"items": [], "unread": 0}
