"""The presence hub on its own: who is seen, for how long, and what crosses between instances."""

from __future__ import annotations

from keepdesk.presence.hub import TTL, Heartbeat, Presence, Seen
from tests.support.clock import FakeClock

ALICE, BOB, DAVE = 1, 2, 3


def beat(hub: Presence, agent_id: int, name: str, *, number: int = 7, typing: bool = False) -> None:
    hub.record(Heartbeat(number=number, agent_id=agent_id, name=name, is_typing=typing))


def test_an_agent_sees_the_others_on_the_ticket_but_not_themself() -> None:
    hub = Presence(FakeClock())
    beat(hub, BOB, "Bob Billing")
    beat(hub, DAVE, "Dave Support", typing=True)
    beat(hub, ALICE, "Alice Admin", number=8)

    assert hub.others(number=7, agent_id=BOB) == [Seen(DAVE, "Dave Support", True)]
    # Typing first: that is the one who may collide with a reply.
    assert hub.others(number=7, agent_id=ALICE) == [
        Seen(DAVE, "Dave Support", True),
        Seen(BOB, "Bob Billing", False),
    ]
    assert hub.others(number=8, agent_id=ALICE) == []
    assert hub.others(number=9, agent_id=ALICE) == []


def test_the_latest_heartbeat_says_whether_the_agent_is_typing() -> None:
    hub = Presence(FakeClock())
    beat(hub, DAVE, "Dave Support", typing=True)
    beat(hub, DAVE, "Dave Support", typing=False)
    assert hub.others(number=7, agent_id=BOB) == [Seen(DAVE, "Dave Support", False)]


def test_an_agent_fades_out_thirty_seconds_after_the_last_heartbeat() -> None:
    clock = FakeClock()
    hub = Presence(clock)
    beat(hub, DAVE, "Dave Support")
    clock.advance(seconds=29)
    assert [s.agent_id for s in hub.others(number=7, agent_id=BOB)] == [DAVE]
    beat(hub, DAVE, "Dave Support")  # still there: the clock starts again
    clock.advance(seconds=29)
    assert [s.agent_id for s in hub.others(number=7, agent_id=BOB)] == [DAVE]
    clock.advance(seconds=1)
    assert hub.others(number=7, agent_id=BOB) == []
    assert TTL.total_seconds() == 30


def test_expired_tickets_are_forgotten() -> None:
    clock = FakeClock()
    hub = Presence(clock)
    for number in range(1, 101):
        beat(hub, DAVE, "Dave Support", number=number)
    assert hub.tracked_tickets() == 100
    clock.advance(seconds=31)
    beat(hub, BOB, "Bob Billing", number=500)
    assert hub.tracked_tickets() == 1


def test_another_instances_heartbeat_counts_and_its_own_echo_is_ignored() -> None:
    clock = FakeClock()
    here, there = Presence(clock), Presence(clock)
    heartbeat = Heartbeat(number=7, agent_id=DAVE, name="Dave Support", is_typing=True)

    here.receive(heartbeat.to_json(origin=there.origin))
    assert here.others(number=7, agent_id=BOB) == [Seen(DAVE, "Dave Support", True)]

    # NOTIFY also comes back to the sender; its own record is already there and stays.
    there.record(Heartbeat(number=7, agent_id=DAVE, name="Dave Support", is_typing=False))
    there.receive(heartbeat.to_json(origin=there.origin))
    assert there.others(number=7, agent_id=BOB) == [Seen(DAVE, "Dave Support", False)]


def test_a_malformed_message_is_ignored() -> None:
    hub = Presence(FakeClock())
    for payload in (
        "not json",
        "[]",
        '{"origin": "x", "number": "7", "agent_id": 3, "name": "D", "is_typing": true}',
        '{"origin": "x", "number": 7, "agent_id": 3, "name": "D"}',
        '{"origin": "x", "number": true, "agent_id": 3, "name": "D", "is_typing": true}',
    ):
        hub.receive(payload)
    assert hub.tracked_tickets() == 0


def test_a_long_name_is_cut_to_fit_a_notify_payload() -> None:
    payload = Heartbeat(number=7, agent_id=DAVE, name="D" * 10_000, is_typing=False).to_json(
        origin="x"
    )
    assert len(payload.encode()) < 8000
