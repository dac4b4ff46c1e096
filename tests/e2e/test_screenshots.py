"""Screenshots of the queue and the ticket page with realistic data, for the README.

They go to the test's temp dir; with KEEPDESK_TEST_SCREENSHOTS=docs/screenshots they replace the
committed ones. The test also checks that both pages render these data without a console error.
"""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlalchemy import select

from keepdesk.outbox import service as outbox
from keepdesk.outbox.models import OutboxMessage
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import MessageKind, Priority
from tests.e2e import helpers
from tests.e2e.conftest import LiveServer, Watched, sign_in

_REQUESTS = [
    ("Invoice 2026-0113 charged twice", "Billing", "Maria Jensen", "maria@jensen.example", None),
    ("Cannot reset my password", "Support", "Tom Becker", "tom@becker.example", "dave"),
    ("Export to CSV misses the last column", "Support", "Ana Lima", "ana@lima.example", None),
    ("Change of billing address", "Billing", "Jon Park", "jon@park.example", None),
    ("Login page very slow since Monday", "Support", "Priya Rao", "priya@rao.example", "dave"),
    ("Question about the annual plan", "Billing", "Lena Vogel", "lena@vogel.example", None),
    ("Attachment upload fails over 10 MB", "Support", "Sam Ortiz", "sam@ortiz.example", "dave"),
    ("Please close my account", "Support", "Kim Novak", "kim@novak.example", None),
]
_PRIORITIES = [Priority.urgent, Priority.high, Priority.normal, Priority.low]


def _out_dir(tmp_path: Path) -> Path:
    wanted = os.environ.get("KEEPDESK_TEST_SCREENSHOTS")
    path = Path(wanted) if wanted else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_queue_and_ticket_screenshots(
    page: Page, live_server: LiveServer, watched: Watched, tmp_path: Path
) -> None:
    ids = live_server.ids
    numbers = []
    for i, (subject, team, name, email, owner) in enumerate(_REQUESTS):
        number = live_server.run(
            lambda rt, s=subject, t=team, n=name, e=email: helpers.customer_ticket(
                rt,
                subject=s,
                body=f"Hello,\n\n{s}.\n\nThanks,\n{n}",
                team_id=ids[t.lower()],
                email=e,
                name=n,
            )
        )
        numbers.append(number)
        live_server.clock.advance(minutes=37)
        if owner or i % 3 == 0:
            live_server.run(
                lambda rt, num=number, o=owner, i=i: helpers.change(
                    rt,
                    agent_id=ids["alice"],
                    number=num,
                    assignee_id=ids[o] if o else None,
                    priority=_PRIORITIES[i % 4],
                    tags=["vip"] if i == 1 else None,
                )
            )

    work = numbers[1]
    live_server.clock.advance(minutes=12)

    async def conversation(rt: Runtime) -> None:
        await helpers.agent_message(
            rt,
            agent_id=ids["dave"],
            number=work,
            kind=MessageKind.note,
            body="Second time this month for Tom. Checking the mail logs before replying.",
        )
        rt.clock.advance(minutes=9)  # type: ignore[attr-defined]
        await helpers.agent_message(
            rt,
            agent_id=ids["dave"],
            number=work,
            kind=MessageKind.reply,
            body="Hi Tom,\n\nthe reset mail was held by your company's spam filter. "
            "I sent a fresh link just now; it is valid for one hour.\n\nDave",
        )
        async with rt.db.session(write=True) as session:
            row = await session.scalar(select(OutboxMessage).order_by(OutboxMessage.id.desc()))
            assert row is not None
            outbox.mark_sent(row, now=rt.clock.now())
            await session.commit()

    live_server.run(conversation)
    live_server.clock.advance(minutes=3)

    out = _out_dir(tmp_path)
    sign_in(page, "alice")
    page.goto("/queue/all")
    expect(page.locator("[data-row]")).to_have_count(len(_REQUESTS))
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.screenshot(path=out / "queue.png")

    page.goto(f"/tickets/{work}")
    expect(page.locator("article.kind-reply")).to_contain_text("Sent")
    page.screenshot(path=out / "ticket.png", full_page=True)
    assert watched.errors == []
