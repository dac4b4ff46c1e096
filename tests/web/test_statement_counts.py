"""The queue and ticket pages run a fixed number of SQL statements however much they show: an
N+1 fails here. Timings live in `make bench`."""

from __future__ import annotations

from keepdesk.runtime import Runtime
from tests.conftest import World, open_ticket
from tests.tickets.conftest import b64, count_statements, patch
from tests.web.conftest import PageAgent, Pages


async def statements_for(runtime: Runtime, agent: PageAgent, url: str) -> list[str]:
    with count_statements(runtime) as statements:
        response = await agent.get(url)
    assert response.status_code == 200, response.text
    return statements


async def add_tickets(world: World, count: int) -> list[int]:
    dave = world.client("dave")
    numbers = []
    for i in range(count):
        ticket = await open_ticket(dave, subject=f"Ticket {i}", tags=[f"tag-{i}", "common"])
        await patch(dave, ticket["number"], assignee_id=world.ids["dave"])
        numbers.append(ticket["number"])
    return numbers


async def test_the_queue_page_runs_the_same_statements_for_2_or_12_tickets(
    world: World, pages: Pages, runtime: Runtime
) -> None:
    dave = await pages.sign_in("dave")
    await add_tickets(world, 2)
    few = await statements_for(runtime, dave, "/queue/mine")
    await add_tickets(world, 10)
    many = await statements_for(runtime, dave, "/queue/mine")
    assert len(few) == len(many), "\n".join(many)
    fragment_few = await statements_for(runtime, dave, "/queue/mine?status=any")
    assert len(fragment_few) <= len(many)


async def test_the_ticket_page_runs_the_same_statements_for_3_or_13_messages(
    world: World, pages: Pages, runtime: Runtime
) -> None:
    api = world.client("dave")
    number = (await open_ticket(api))["number"]
    dave = await pages.sign_in("dave")

    async def add_messages(count: int) -> None:
        for i in range(count):
            body = {
                "kind": "reply" if i % 2 else "note",
                "body": f"Message {i}",
                "attachments": [{"filename": f"{i}.txt", "content_base64": b64(b"x")}],
            }
            response = await api.post(f"/api/v1/tickets/{number}/messages", json=body)
            assert response.status_code == 201, response.text
            await patch(api, number, priority="high" if i % 2 else "low")

    await add_messages(2)
    few = await statements_for(runtime, dave, f"/tickets/{number}")
    await add_messages(10)
    many = await statements_for(runtime, dave, f"/tickets/{number}")
    assert len(few) == len(many), "\n".join(many)
