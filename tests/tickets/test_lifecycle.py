"""A ticket's life through the REST API: opened, answered, noted, assigned, resolved, and the
history that tells who changed what."""

from __future__ import annotations

from typing import Any

from tests.conftest import World, open_ticket
from tests.tickets.conftest import events_of, get_ticket, patch, post_message


async def test_dave_files_a_ticket_and_gets_its_address_and_version(world: World) -> None:
    dave = world.client("dave")
    response = await dave.post(
        "/api/v1/tickets",
        json={
            "subject": "  Printer   on fire ",
            "body": "It started smoking after the update.",
            "requester": {"email": "carol@customer.test"},
        },
    )
    assert response.status_code == 201, response.text
    ticket = response.json()
    assert ticket["number"] == 1000
    assert response.headers["location"] == "/api/v1/tickets/1000"
    assert response.headers["etag"] == '"1"'
    assert ticket["version"] == 1
    assert ticket["subject"] == "Printer on fire"
    assert ticket["status"] == "new"
    assert ticket["priority"] == "normal"
    assert ticket["channel"] == "api"
    assert ticket["team"] == {"id": world.ids["support"], "name": "Support"}
    assert ticket["assignee"] is None
    assert ticket["first_response_at"] is None

    fetched = await dave.get("/api/v1/tickets/1000")
    assert fetched.json() == ticket
    assert fetched.headers["etag"] == '"1"'

    later = [await open_ticket(dave, subject=f"Ticket {i}") for i in range(2)]
    assert [t["number"] for t in later] == [1001, 1002]


async def test_tags_are_normalised_on_create_and_on_change(world: World) -> None:
    dave = world.client("dave")
    ticket = await open_ticket(dave, tags=["  VIP ", "vip", "Needs  Callback", "billing:invoice"])
    assert ticket["tags"] == ["billing:invoice", "needs-callback", "vip"]

    changed = await patch(dave, ticket["number"], tags=["Refund", "VIP", "refund"])
    assert changed["tags"] == ["refund", "vip"]
    tags = await dave.get("/api/v1/tags", params={"prefix": "RE"})
    assert tags.json()["items"] == [{"name": "refund"}]


async def test_a_requester_is_one_contact_whatever_the_case_of_the_address(world: World) -> None:
    dave = world.client("dave")
    first = await open_ticket(dave, requester={"email": "CAROL@Customer.TEST"})
    assert first["requester"]["id"] == world.ids["carol"]
    assert first["requester"]["email"] == "carol@customer.test"

    zoe = await open_ticket(dave, requester={"email": "Zoe@Example.ORG", "name": "Zoe"})
    again = await open_ticket(dave, requester={"email": " zoe@example.org", "name": "Other"})
    assert zoe["requester"] == {
        "id": again["requester"]["id"],
        "email": "zoe@example.org",
        "name": "Zoe",
    }
    assert zoe["requester"]["id"] != world.ids["carol"]

    mine = await dave.get("/api/v1/tickets", params={"requester": "ZOE@example.org"})
    assert [t["number"] for t in mine.json()["items"]] == [again["number"], zoe["number"]]


async def test_dave_answers_notes_assigns_and_resolves_and_history_shows_each_step(
    world: World,
) -> None:
    dave = world.client("dave")
    ticket = await open_ticket(dave, tags=["printer"])
    number = ticket["number"]

    replied = await post_message(dave, number, kind="reply", body="Unplug it, please.")
    assert replied["message"]["kind"] == "reply"
    assert replied["message"]["author"]["email"] == "dave@keepdesk.test"
    assert replied["ticket"]["status"] == "open"
    assert replied["ticket"]["version"] == 2

    noted = await post_message(dave, number, kind="note", body="Third fire this month.")
    assert noted["message"]["kind"] == "note"
    assert noted["ticket"]["version"] == 3

    assigned = await patch(dave, number, assignee_id=world.ids["dave"])
    assert assigned["assignee"]["email"] == "dave@keepdesk.test"
    urgent = await patch(dave, number, priority="urgent")
    resolved = await patch(dave, number, status="resolved")
    assert (urgent["version"], resolved["version"]) == (5, 6)
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"] is not None

    thread = (await dave.get(f"/api/v1/tickets/{number}/messages")).json()["items"]
    assert [(m["kind"], m["body_text"]) for m in thread] == [
        ("customer", "It started smoking after the update."),
        ("reply", "Unplug it, please."),
        ("note", "Third fire this month."),
    ]
    assert thread[0]["author"]["email"] == "carol@customer.test"

    history = await events_of(dave, number)
    steps = [
        (e["action"], e["field"], e["before"], e["after"], (e["actor"] or {}).get("email"))
        for e in history
    ]
    d, c = "dave@keepdesk.test", "carol@customer.test"
    assert steps == [
        ("created", None, None, history[0]["after"], d),
        ("message_added", "message", None, {"id": thread[0]["id"], "kind": "customer"}, c),
        ("message_added", "message", None, {"id": thread[1]["id"], "kind": "reply"}, d),
        ("changed", "status", "new", "open", d),
        ("message_added", "message", None, {"id": thread[2]["id"], "kind": "note"}, d),
        ("changed", "assignee", None, world.ids["dave"], d),
        ("changed", "priority", "normal", "urgent", d),
        ("changed", "status", "open", "resolved", d),
    ]
    assert history[0]["after"]["status"] == "new"
    assert history[0]["after"]["tags"] == ["printer"]
    assert history[0]["after"]["team_id"] == world.ids["support"]


async def test_history_pages_with_a_cursor(world: World) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    for priority in ("high", "low", "urgent"):
        await patch(dave, number, priority=priority)
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await dave.get(f"/api/v1/tickets/{number}/events", params=params)).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # created, the customer's message, the status change to open, then three priorities
    assert len(seen) == 6
    assert seen == sorted(set(seen))
    assert [e["id"] for e in await events_of(dave, number)] == seen
    assert (await get_ticket(dave, number))["priority"] == "urgent"
