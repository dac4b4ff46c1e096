"""Two agents on one ticket, in two real browsers, see each other within 2 seconds, and see when
the other is typing a reply (issue 4, collision detection)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e import helpers
from tests.e2e.conftest import LiveServer, sign_in


@pytest.fixture
def contexts(chromium: Browser, live_server: LiveServer) -> Iterator[list[BrowserContext]]:
    opened: list[BrowserContext] = []

    def open_one() -> BrowserContext:
        context = chromium.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 800}
        )
        context.set_default_timeout(10_000)
        opened.append(context)
        return context

    opened_two = [open_one(), open_one()]
    try:
        yield opened_two
    finally:
        for context in opened:
            context.close()


def _open_ticket(page: Page, name: str, number: int) -> None:
    sign_in(page, name)
    page.goto(f"/tickets/{number}")
    expect(page.get_by_role("heading", name=re.compile("Refund request"))).to_be_visible()


def test_two_agents_on_one_ticket_see_each_other_and_who_is_typing(
    contexts: list[BrowserContext], live_server: LiveServer
) -> None:
    number = live_server.run(
        lambda rt: helpers.customer_ticket(
            rt,
            subject="Refund request",
            body="Please refund order 1142.",
            team_id=live_server.ids["support"],
        )
    )
    dave, alice = (context.new_page() for context in contexts)
    errors: list[str] = []
    for tab in (dave, alice):
        tab.on("pageerror", lambda error: errors.append(str(error)))

    _open_ticket(dave, "dave", number)
    _open_ticket(alice, "alice", number)
    dave_sees, alice_sees = dave.locator("#presence"), alice.locator("#presence")
    expect(dave_sees).to_contain_text("Also here: Alice Admin (viewing)", timeout=2000)
    expect(alice_sees).to_contain_text("Also here: Dave Support (viewing)", timeout=2000)

    alice.get_by_label("Message").fill("Hello Carol, the refund is on its way.")
    expect(dave_sees).to_contain_text("Alice Admin (typing a reply)", timeout=2000)
    # dave does not see himself, and alice sees dave still only viewing.
    expect(dave_sees).not_to_contain_text("Dave Support")
    expect(alice_sees).to_contain_text("Dave Support (viewing)")

    alice.get_by_label("Message").fill("")
    expect(dave_sees).to_contain_text("Alice Admin (viewing)", timeout=2000)

    # alice leaves: after the expiry she fades from dave's page (the server's clock is faked).
    alice.close()
    live_server.clock.advance(seconds=31)
    expect(dave_sees).not_to_contain_text("Alice Admin", timeout=4000)
    assert errors == []
