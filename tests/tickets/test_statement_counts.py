"""The hot API pages run a fixed number of SQL statements however much they show: an N+1 fails
here. Timings live in `make bench`. SQLite's BEGIN travels with the first statement
(sqlite_driver.py), so the listener never sees it."""

from __future__ import annotations

import httpx

from keepdesk.runtime import Runtime
from tests.conftest import World, open_ticket
from tests.tickets.conftest import b64, count_statements, patch, post_message


async def statements_for(runtime: Runtime, client: httpx.AsyncClient, url: str) -> list[str]:
    with count_statements(runtime) as statements:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    return statements


async def add_tickets(world: World, count: int) -> None:
    dave = world.client("dave")
    for i in range(count):
        ticket = await open_ticket(dave, subject=f"Ticket {i}", tags=[f"tag-{i}", "common"])
        await patch(dave, ticket["number"], assignee_id=world.ids["dave"])


async def test_the_ticket_list_runs_the_same_statements_for_3_or_25_tickets(
    world: World, runtime: Runtime
) -> None:
    dave = world.client("dave")
    url = "/api/v1/tickets?limit=25"
    await add_tickets(world, 3)
    few = await statements_for(runtime, dave, url)
    await add_tickets(world, 22)
    page = (await dave.get(url)).json()["items"]
    assert len(page) == 25
    assert all(t["assignee"] and t["team"] and len(t["tags"]) == 2 for t in page)
    many = await statements_for(runtime, dave, url)
    # token with its agent's teams, tickets with their people and tags (on PostgreSQL the
    # page's ids are a statement before that: tickets/rows.py)
    expected = 3 if runtime.db.dialect == "postgresql" else 2
    assert len(few) == len(many) == expected, "\n".join(many)


async def test_the_conversation_runs_the_same_statements_for_2_or_20_messages(
    world: World, runtime: Runtime
) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    url = f"/api/v1/tickets/{number}/messages?limit=25"

    async def add_messages(count: int) -> None:
        for i in range(count):
            files = [
                {"filename": f"{i}-{n}.txt", "content_base64": b64(f"{i}/{n}".encode())}
                for n in range(2)
            ]
            await post_message(
                dave,
                number,
                kind="reply" if i % 2 else "note",
                body=f"Message {i}",
                attachments=files,
            )

    await add_messages(1)
    few = await statements_for(runtime, dave, url)
    await add_messages(19)
    thread = (await dave.get(url)).json()["items"]
    assert len(thread) == 21
    assert sum(len(m["attachments"]) for m in thread) == 40
    many = await statements_for(runtime, dave, url)
    # token with its agent's teams, ticket, its tags, messages with authors, attachments,
    # deliveries
    assert len(few) == len(many) == 6, "\n".join(many)
