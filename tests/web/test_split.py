"""Splitting a mail that landed on the wrong ticket off into a ticket of its own."""

from __future__ import annotations

from sqlalchemy import select

from keepdesk.mail import ingest
from keepdesk.mail.models import MailMessage
from keepdesk.runtime import Runtime
from tests.conftest import World
from tests.web.conftest import Pages


def mail(n: int, subject: str, extra: str = "") -> bytes:
    return (
        f"From: Erin Example <erin@customer.test>\r\nTo: support@keepdesk.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: <erin-{n}@customer.test>\r\n{extra}"
        f"Date: Mon, 02 Mar 2026 08:0{n}:00 +0000\r\n\r\nMail number {n}.\r\n"
    ).encode()


async def _ingest(runtime: Runtime, raw: bytes) -> int:
    async with runtime.db.session(write=True) as session:
        result = await ingest.ingest(
            session,
            runtime=runtime,
            mailbox=None,
            raw=raw,
            blob_key=runtime.blobs.put(raw),
            now=runtime.clock.now(),
        )
        await session.commit()
    assert result.ticket_number is not None
    return result.ticket_number


async def test_a_second_question_is_split_off_and_its_answers_follow_it(
    world: World, pages: Pages, runtime: Runtime
) -> None:
    number = await _ingest(runtime, mail(1, "Broken widget"))
    # Erin's next mail answers the first, but asks something else entirely.
    second = await _ingest(
        runtime, mail(2, "Re: Broken widget", "In-Reply-To: <erin-1@customer.test>\r\n")
    )
    assert second == number
    alice_api = world.client("alice")
    messages = (await alice_api.get(f"/api/v1/tickets/{number}/messages")).json()["items"]
    first_id, second_id = (m["id"] for m in messages)

    alice = await pages.sign_in("alice")
    page = (await alice.get(f"/tickets/{number}")).text
    assert f"/messages/{second_id}/split" in page
    assert f"/messages/{first_id}/split" not in page  # the message that opened it stays

    moved = await alice.post(f"/tickets/{number}/messages/{second_id}/split")
    assert moved.status_code == 303
    new_number = int(moved.headers["location"].rsplit("/", 1)[1])
    assert new_number != number
    old = (await alice_api.get(f"/api/v1/tickets/{number}/messages")).json()["items"]
    new = (await alice_api.get(f"/api/v1/tickets/{new_number}/messages")).json()["items"]
    assert [m["id"] for m in old] == [first_id] and [m["id"] for m in new] == [second_id]
    events = (await alice_api.get(f"/api/v1/tickets/{number}/events")).json()["items"]
    assert any(e["field"] == "split" and e["after"]["to"] == new_number for e in events)

    # Erin answering the split-off mail lands on the new ticket.
    third = await _ingest(
        runtime, mail(3, "Re: Broken widget", "In-Reply-To: <erin-2@customer.test>\r\n")
    )
    assert third == new_number
    async with runtime.db.session() as session:
        reason = await session.scalar(
            select(MailMessage.thread_reason).where(MailMessage.message_id == second_id)
        )
    assert reason is not None and "Split off" in reason


async def test_the_opening_message_cannot_be_split_off(
    world: World, pages: Pages, runtime: Runtime
) -> None:
    number = await _ingest(runtime, mail(1, "Broken widget"))
    alice_api = world.client("alice")
    (message,) = (await alice_api.get(f"/api/v1/tickets/{number}/messages")).json()["items"]
    alice = await pages.sign_in("alice")
    refused = await alice.post(f"/tickets/{number}/messages/{message['id']}/split")
    assert refused.status_code == 422
    assert "opened the ticket" in refused.text
