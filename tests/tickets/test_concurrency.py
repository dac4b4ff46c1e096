"""Optimistic concurrency: a change made on a stale read is refused with 409, and of two changes
racing from the same version exactly one wins."""

from __future__ import annotations

import asyncio

from keepdesk.runtime import Runtime
from tests.conftest import World, open_ticket
from tests.tickets.conftest import assert_error, count_rows, events_of, get_ticket, patch


async def test_a_change_from_a_stale_read_is_refused(world: World) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    url = f"/api/v1/tickets/{number}"
    await patch(dave, number, priority="high")  # version 2

    stale = await dave.patch(url, json={"priority": "low"}, headers={"If-Match": '"1"'})
    error = assert_error(stale, 409, "version_conflict")
    assert error["details"] == {"current_version": 2}
    stale_body = await dave.patch(url, json={"priority": "low", "version": 1})
    assert assert_error(stale_body, 409, "version_conflict")["details"] == {"current_version": 2}
    assert (await get_ticket(dave, number))["priority"] == "high"

    fresh = await dave.patch(url, json={"priority": "low"}, headers={"If-Match": '"2"'})
    assert fresh.status_code == 200, fresh.text
    assert fresh.headers["etag"] == '"3"'
    weak = await dave.patch(url, json={"priority": "urgent"}, headers={"If-Match": 'W/"3"'})
    assert weak.status_code == 200, weak.text
    by_body = await patch(dave, number, priority="normal", version=4)
    assert by_body["version"] == 5

    for header in ("three", '"5", "6"', "*", '"-5"', '"99999999999"', ""):
        response = await dave.patch(url, json={"priority": "low"}, headers={"If-Match": header})
        assert_error(response, 422, "bad_if_match")
    assert (await get_ticket(dave, number))["version"] == 5


async def test_a_reply_written_on_a_stale_read_is_refused(world: World, runtime: Runtime) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    await patch(dave, number, assignee_id=world.ids["dave"])
    _, messages_before = await count_rows(runtime)

    url = f"/api/v1/tickets/{number}/messages"
    body = {"kind": "reply", "body": "As I said before..."}
    stale = await dave.post(url, json=body, headers={"If-Match": '"1"'})
    assert assert_error(stale, 409, "version_conflict")["details"] == {"current_version": 2}
    assert (await count_rows(runtime))[1] == messages_before
    current = await dave.post(url, json=body, headers={"If-Match": '"2"'})
    assert current.status_code == 201, current.text
    assert current.json()["ticket"]["version"] == 3


async def test_two_agents_changing_the_same_version_at_once_one_wins(world: World) -> None:
    dave, alice = world.client("dave"), world.client("alice")
    number = (await open_ticket(dave))["number"]
    url = f"/api/v1/tickets/{number}"

    responses = await asyncio.gather(
        dave.patch(url, json={"priority": "high"}, headers={"If-Match": '"1"'}),
        alice.patch(url, json={"priority": "low"}, headers={"If-Match": '"1"'}),
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409], [r.text for r in responses]
    won = next(r for r in responses if r.status_code == 200).json()
    lost = next(r for r in responses if r.status_code == 409)
    assert_error(lost, 409, "version_conflict")

    now = await get_ticket(dave, number)
    assert now == won
    assert (now["version"], now["status"]) == (2, "open")
    changes = [e for e in await events_of(dave, number) if e["field"] == "priority"]
    assert [(e["before"], e["after"]) for e in changes] == [("normal", now["priority"])]


async def test_tickets_opened_at_the_same_moment_get_distinct_numbers(world: World) -> None:
    clients = [world.client(name) for name in ("dave", "bob", "alice", "dave")]
    opened = await asyncio.gather(
        *(open_ticket(c, subject=f"Burst {i}") for i, c in enumerate(clients))
    )
    assert sorted(t["number"] for t in opened) == [1000, 1001, 1002, 1003]
    assert len({t["requester"]["id"] for t in opened}) == 1
