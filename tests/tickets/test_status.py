"""The status rules: what an agent's or a customer's action does to a ticket's status, what a
closed ticket still accepts, and the worker that closes long-resolved tickets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from keepdesk.accounts.models import Contact
from keepdesk.runtime import Runtime
from keepdesk.tickets import service as ticket_service
from keepdesk.tickets.models import Ticket
from keepdesk.tickets.policy import TicketPolicy
from keepdesk.workers.housekeeping import close_resolved_tickets
from tests.conftest import World, open_ticket
from tests.support.clock import FakeClock
from tests.tickets.conftest import (
    assert_error,
    events_of,
    get_ticket,
    patch,
    post_message,
)


async def customer_writes(runtime: Runtime, *, number: int, contact_id: int, body: str) -> int:
    """Carol's mail arrives on ticket `number`, as the mail channel records it; returns the
    number of the ticket the message landed on."""
    async with runtime.db.session(write=True) as session:
        ticket = await session.scalar(select(Ticket).where(Ticket.number == number))
        contact = await session.get(Contact, contact_id)
        assert ticket is not None and contact is not None
        landed, _ = await ticket_service.record_customer_message(
            session,
            ticket=ticket,
            contact=contact,
            body=body,
            now=runtime.clock.now(),
            blobs=runtime.blobs,
            policy=TicketPolicy.from_runtime(runtime),
        )
        landed_number: int = landed.number
        await session.commit()
    return landed_number


def status_changes(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return [
        (e["before"], e["after"], (e["actor"] or {}).get("email"))
        for e in events
        if e["field"] == "status"
    ]


async def test_the_first_reply_opens_a_new_ticket_and_stamps_the_first_response_once(
    world: World, clock: FakeClock
) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]

    noted = await post_message(dave, number, kind="note", body="Looking into it.")
    assert noted["ticket"]["status"] == "open"
    assert noted["ticket"]["first_response_at"] is None

    clock.advance(minutes=30)
    first = await post_message(dave, number, kind="reply", body="Unplug it.")
    stamped = first["ticket"]["first_response_at"]
    assert stamped == first["message"]["created_at"]

    clock.advance(hours=2)
    second = await post_message(dave, number, kind="reply", body="Any news?")
    assert second["ticket"]["first_response_at"] == stamped
    assert second["message"]["created_at"] > stamped
    assert (await get_ticket(dave, number))["first_response_at"] == stamped
    assert status_changes(await events_of(dave, number)) == [("new", "open", "dave@keepdesk.test")]


async def test_assigning_or_reprioritising_a_new_ticket_opens_it(world: World) -> None:
    dave = world.client("dave")
    assigned = await open_ticket(dave)
    reprioritised = await open_ticket(dave)

    after = await patch(dave, assigned["number"], assignee_id=world.ids["dave"])
    assert (after["status"], after["version"]) == ("open", 2)
    after = await patch(dave, reprioritised["number"], priority="high")
    assert (after["status"], after["version"]) == ("open", 2)
    assert after["first_response_at"] is None

    # A change to the same value is no change: no event, no version bump.
    same = await patch(dave, reprioritised["number"], priority="high", status="open")
    assert same["version"] == 2


async def test_carol_writing_reopens_a_pending_or_resolved_ticket(
    world: World, runtime: Runtime
) -> None:
    dave = world.client("dave")
    carol = world.ids["carol"]
    waiting = (await open_ticket(dave))["number"]
    solved = (await open_ticket(dave))["number"]
    fresh = (await open_ticket(dave))["number"]
    await patch(dave, waiting, status="pending")
    await patch(dave, solved, status="resolved")

    for number in (waiting, solved, fresh):
        assert await customer_writes(runtime, number=number, contact_id=carol, body="Hello?") == (
            number
        )

    assert (await get_ticket(dave, waiting))["status"] == "open"
    reopened = await get_ticket(dave, solved)
    assert (reopened["status"], reopened["resolved_at"]) == ("open", None)
    # Only agents open a new ticket; the customer writing again leaves it in the queue as new.
    assert (await get_ticket(dave, fresh))["status"] == "new"

    c = "carol@customer.test"
    assert status_changes(await events_of(dave, solved)) == [
        ("new", "resolved", "dave@keepdesk.test"),
        ("resolved", "open", c),
    ]
    thread = (await dave.get(f"/api/v1/tickets/{solved}/messages")).json()["items"]
    assert [(m["kind"], m["body_text"]) for m in thread][-1] == ("customer", "Hello?")


async def test_carol_writing_on_a_closed_ticket_opens_a_linked_follow_up(
    world: World, runtime: Runtime
) -> None:
    dave = world.client("dave")
    closed = await open_ticket(dave, priority="high", tags=["printer"])
    number = closed["number"]
    await patch(dave, number, status="closed")

    follow_number = await customer_writes(
        runtime, number=number, contact_id=world.ids["carol"], body="It is on fire again."
    )
    assert follow_number == number + 1

    follow_up = await get_ticket(dave, follow_number)
    assert follow_up["follow_up_of"] == number
    assert follow_up["status"] == "new"
    assert follow_up["subject"] == closed["subject"]
    assert follow_up["priority"] == "high"
    assert follow_up["team"] == closed["team"]
    assert follow_up["requester"]["id"] == world.ids["carol"]
    thread = (await dave.get(f"/api/v1/tickets/{follow_number}/messages")).json()["items"]
    assert [m["body_text"] for m in thread] == ["It is on fire again."]

    still = await get_ticket(dave, number)
    assert still["status"] == "closed"
    old_thread = (await dave.get(f"/api/v1/tickets/{number}/messages")).json()["items"]
    assert "It is on fire again." not in [m["body_text"] for m in old_thread]

    old_events = await events_of(dave, number)
    assert [(e["action"], e["field"], e["after"]) for e in old_events][-1] == (
        "follow_up_opened",
        "follow_up",
        follow_number,
    )
    new_events = await events_of(dave, follow_number)
    assert [(e["action"], e["field"]) for e in new_events] == [
        ("created", None),
        ("follow_up_opened", "follow_up_of"),
        ("message_added", "message"),
    ]
    assert new_events[1]["after"] == number
    assert {e["actor"]["email"] for e in new_events} == {"carol@customer.test"}


async def test_a_closed_ticket_takes_notes_and_tags_but_no_replies_or_changes(
    world: World,
) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    closed = await patch(dave, number, status="closed")
    assert closed["closed_at"] is not None
    assert closed["resolved_at"] == closed["closed_at"]

    reply = await dave.post(
        f"/api/v1/tickets/{number}/messages", json={"kind": "reply", "body": "One more thing"}
    )
    assert_error(reply, 409, "ticket_closed")
    for change in (
        {"status": "open"},
        {"status": "resolved"},
        {"priority": "urgent"},
        {"assignee_id": world.ids["dave"]},
        {"team_id": world.ids["billing"]},
    ):
        response = await dave.patch(f"/api/v1/tickets/{number}", json=change)
        assert_error(response, 409, "ticket_closed")

    noted = await post_message(dave, number, kind="note", body="Customer called, told them.")
    assert noted["ticket"]["status"] == "closed"
    tagged = await patch(dave, number, tags=["reported"])
    assert (tagged["status"], tagged["tags"]) == ("closed", ["reported"])
    assert tagged["version"] == closed["version"] + 2
    assert tagged["assignee"] is None and tagged["priority"] == "normal"


async def test_impossible_transitions_are_refused(world: World) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave))["number"]
    await patch(dave, number, status="resolved")
    response = await dave.patch(f"/api/v1/tickets/{number}", json={"status": "pending"})
    error = assert_error(response, 409, "invalid_transition")
    assert "resolved" in error["message"] and "pending" in error["message"]

    for status in ("open", "pending", "resolved"):
        await patch(dave, number, status=status)
        response = await dave.patch(f"/api/v1/tickets/{number}", json={"status": "new"})
        assert_error(response, 409, "invalid_transition")
    assert (await get_ticket(dave, number))["status"] == "resolved"


async def test_housekeeping_closes_tickets_resolved_more_than_the_configured_days_ago(
    world: World, runtime: Runtime, clock: FakeClock
) -> None:
    assert runtime.settings.tickets_auto_close_days == 7
    dave = world.client("dave")
    old, young, working = [(await open_ticket(dave))["number"] for _ in range(3)]
    await patch(dave, old, status="resolved")
    clock.advance(days=3)
    await patch(dave, young, status="resolved")
    await patch(dave, working, status="open")

    clock.advance(days=4, seconds=-1)
    await close_resolved_tickets(runtime)
    assert (await get_ticket(dave, old))["status"] == "resolved"

    clock.advance(seconds=2)
    await close_resolved_tickets(runtime)
    assert [(await get_ticket(dave, n))["status"] for n in (old, young, working)] == [
        "closed",
        "resolved",
        "open",
    ]
    last = (await events_of(dave, old))[-1]
    assert (last["field"], last["before"], last["after"], last["actor"]) == (
        "status",
        "resolved",
        "closed",
        None,
    )

    clock.advance(days=3)
    await close_resolved_tickets(runtime)
    assert [(await get_ticket(dave, n))["status"] for n in (old, young, working)] == [
        "closed",
        "closed",
        "open",
    ]
