"""The ticket list: its filters, its sort orders, and keyset pages that show every ticket once."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

import httpx

from keepdesk.runtime import Runtime
from keepdesk.workers.housekeeping import close_resolved_tickets
from tests.conftest import World, open_ticket
from tests.support.clock import FakeClock
from tests.tickets.conftest import assert_error, patch


async def numbers(client: httpx.AsyncClient, **params: Any) -> list[int]:
    response = await client.get("/api/v1/tickets", params={"limit": 100} | params)
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return [t["number"] for t in response.json()["items"]]


async def walk(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every page of the list, two tickets at a time."""
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        query = params | {"limit": 2} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/api/v1/tickets", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the pages never ended")


def forged(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


async def test_alice_filters_the_queue(world: World, clock: FakeClock) -> None:
    alice, bob, dave = world.client("alice"), world.client("bob"), world.client("dave")
    zoe = {"email": "zoe@example.org", "name": "Zoe"}
    fresh = (await open_ticket(dave, tags=["vip"]))["number"]
    refund = (await open_ticket(bob, requester=zoe, tags=["refund"]))["number"]
    waiting = (await open_ticket(dave, tags=["VIP", "refund"]))["number"]
    solved = (await open_ticket(alice, requester=zoe))["number"]
    await patch(bob, refund, assignee_id=world.ids["bob"])
    await patch(dave, waiting, assignee_id=world.ids["dave"], status="pending")
    await patch(alice, solved, status="resolved")
    clock.advance(hours=1)
    since = clock.now()
    await patch(dave, waiting, priority="high")

    assert await numbers(alice) == [waiting, solved, refund, fresh]
    assert await numbers(alice, status="new") == [fresh]
    assert await numbers(alice, status=["open", "pending"]) == [waiting, refund]
    assert await numbers(bob, assignee="me") == [refund]
    assert await numbers(alice, assignee="me") == []
    assert await numbers(alice, assignee="none") == [solved, fresh]
    assert await numbers(alice, assignee=str(world.ids["dave"])) == [waiting]
    assert await numbers(alice, team=world.ids["support"]) == [waiting, fresh]
    assert await numbers(alice, tag="VIP") == [waiting, fresh]
    assert await numbers(alice, tag="refund") == [waiting, refund]
    assert await numbers(alice, requester="Zoe@Example.org") == [solved, refund]
    assert await numbers(alice, requester=str(world.ids["carol"])) == [waiting, fresh]
    assert await numbers(alice, updated_since=since.isoformat()) == [waiting]
    assert await numbers(alice, updated_since=since.isoformat().replace("+00:00", "Z")) == [waiting]
    assert await numbers(alice, status="pending", team=world.ids["support"], tag="vip") == [waiting]
    assert await numbers(alice, tag="nobody-uses-this") == []
    # dave sees Support's tickets only, whatever he asks for.
    assert await numbers(dave, assignee="none") == [fresh]

    naive = await alice.get("/api/v1/tickets", params={"updated_since": "2026-03-02T09:00:00"})
    assert_error(naive, 422, "naive_datetime")
    for params in (
        {"status": "reopened"},
        {"assignee": "someone"},
        {"team": "support"},
        {"sort": "number"},
        {"updated_since": "yesterday"},
    ):
        response = await alice.get("/api/v1/tickets", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["code"] in ("invalid_input", "bad_filter")


async def test_the_four_sort_orders(world: World, clock: FakeClock) -> None:
    dave = world.client("dave")
    first, second, third = [(await open_ticket(dave))["number"] for _ in range(3)]
    clock.advance(minutes=5)
    await patch(dave, second, priority="high")
    clock.advance(minutes=5)
    await patch(dave, first, priority="high")

    assert await numbers(dave) == [first, second, third]
    assert await numbers(dave, sort="-updated_at") == [first, second, third]
    assert await numbers(dave, sort="updated_at") == [third, second, first]
    assert await numbers(dave, sort="-created_at") == [third, second, first]
    assert await numbers(dave, sort="created_at") == [first, second, third]


async def test_pages_show_every_ticket_once_in_order_even_when_times_tie(
    world: World, runtime: Runtime, clock: FakeClock
) -> None:
    dave = world.client("dave")
    older = (await open_ticket(dave))["number"]
    batch = [(await open_ticket(dave))["number"] for _ in range(5)]
    for number in batch:
        await patch(dave, number, status="resolved")
    clock.advance(days=8)
    # The housekeeping worker closes all five in one go, at one instant.
    await close_resolved_tickets(runtime)
    newer = [(await open_ticket(dave))["number"] for _ in range(2)]

    everything = (await dave.get("/api/v1/tickets", params={"limit": 100})).json()["items"]
    closed_at = {t["updated_at"] for t in everything if t["number"] in batch}
    assert len(closed_at) == 1, "the worker should close the batch at one instant"

    def key(t: dict[str, Any], field: str) -> tuple[datetime, int]:
        return datetime.fromisoformat(t[field]), t["number"]

    for sort in ("-updated_at", "updated_at", "-created_at", "created_at"):
        field = sort.lstrip("-")
        walked = await walk(dave, sort=sort)
        got = [t["number"] for t in walked]
        assert sorted(got) == sorted([older, *batch, *newer]), sort
        expected = sorted(walked, key=lambda t: key(t, field), reverse=sort.startswith("-"))
        assert got == [t["number"] for t in expected], sort
    descending = [t["number"] for t in await walk(dave)]
    assert descending == [*reversed(newer), *reversed(batch), older]
    only_closed = [t["number"] for t in await walk(dave, status="closed", sort="updated_at")]
    assert only_closed == batch


async def test_a_cursor_works_only_for_the_list_and_order_it_came_from(
    world: World, clock: FakeClock
) -> None:
    dave = world.client("dave")
    for _ in range(3):
        await open_ticket(dave)
    page = (await dave.get("/api/v1/tickets", params={"limit": 1})).json()
    cursor = page["next_cursor"]
    assert cursor
    message_page = (
        await dave.get(f"/api/v1/tickets/{page['items'][0]['number']}/events", params={"limit": 1})
    ).json()

    naive = "2026-03-02T09:00:00"
    aware = (clock.now() + timedelta(days=1)).isoformat()
    for bad in (
        "garbage",
        "!!!",
        cursor[:-3],
        message_page["next_cursor"],
        forged("tickets", "-updated_at", "not a time", 1),
        forged("tickets", "-updated_at", naive, 1),
        forged("tickets", "-updated_at", aware, "1"),
        forged("tickets", "-updated_at", aware, 2**70),
        forged("tickets", "-updated_at", aware, None),
        forged("tickets", "-updated_at", [], 1),
    ):
        response = await dave.get("/api/v1/tickets", params={"cursor": bad})
        assert_error(response, 422, "invalid_cursor")
    other_sort = await dave.get("/api/v1/tickets", params={"cursor": cursor, "sort": "created_at"})
    assert_error(other_sort, 422, "invalid_cursor")
    assert (await dave.get("/api/v1/tickets", params={"cursor": cursor})).status_code == 200

    number = page["items"][0]["number"]
    for route in ("messages", "events"):
        for bad in (cursor, forged(route, "x"), forged(route, 2**70), forged(route, [1]), "x"):
            response = await dave.get(f"/api/v1/tickets/{number}/{route}", params={"cursor": bad})
            assert_error(response, 422, "invalid_cursor")

    for limit in (0, -1, 5000, "ten"):
        response = await dave.get("/api/v1/tickets", params={"limit": limit})
        assert_error(response, 422, "invalid_input")
    # The largest page is the configured one, whatever a client asks for.
    assert (await dave.get("/api/v1/tickets", params={"limit": 1000})).status_code == 200


async def test_a_list_of_several_statuses_pages_across_statuses_in_order(
    world: World, runtime: Runtime, clock: FakeClock
) -> None:
    # A team's or an agent's list of every status or of several, and anyone's list of several
    # statuses, is read status by status and merged (queries._newest_of_each_status): pages
    # must still come in one order, each ticket once.
    dave = world.client("dave")
    support = world.ids["support"]
    tickets = []
    for status in ("open", "pending", "resolved", "open", "pending", "resolved", "new"):
        number = (await open_ticket(dave, team=support))["number"]
        if status != "new":
            await patch(dave, number, assignee_id=world.ids["dave"], status=status)
        tickets.append(number)
        clock.advance(minutes=1)
    clock.advance(days=8)
    await close_resolved_tickets(runtime)  # two closed at one instant: a tie to page through
    elsewhere = (await open_ticket(dave, team=world.ids["billing"]))["number"]

    def in_order(items: list[dict[str, Any]], descending: bool) -> list[int]:
        key = [(datetime.fromisoformat(t["updated_at"]), t["number"]) for t in items]
        return [n for _, n in sorted(key, reverse=descending)]

    for params, expected in (
        ({"team": support}, set(tickets)),
        ({"assignee": "me"}, set(tickets[:-1])),
        ({"assignee": "me", "priority": "normal"}, set(tickets[:-1])),
        ({"team": support, "status": ["open", "pending"]}, set(tickets[:2] + tickets[3:5])),
        ({"assignee": "me", "status": ["new", "open", "pending"]}, set(tickets[:2] + tickets[3:5])),
        # A status asked twice is read once.
        ({"status": ["pending", "open", "pending"]}, set(tickets[:2] + tickets[3:5])),
        ({"status": ["closed", "new"]}, {tickets[2], tickets[5], tickets[6]}),
    ):
        for sort in ("-updated_at", "updated_at"):
            walked = await walk(dave, sort=sort, **params)
            got = [t["number"] for t in walked]
            assert set(got) == expected and len(got) == len(expected), (params, sort)
            assert elsewhere not in got
            assert got == in_order(walked, sort.startswith("-")), (params, sort)
    statuses = {t["status"] for t in await walk(dave, team=support)}
    assert statuses == {"new", "open", "pending", "closed"}
