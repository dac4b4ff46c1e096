"""An agent who has never seen keepdesk works a ticket end to end, in a real Chromium."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

from keepdesk.runtime import Runtime
from keepdesk.tickets.models import MessageKind
from tests.e2e import helpers
from tests.e2e.conftest import LiveServer, Watched, sign_in


def _only_own_host(watched: Watched, live: LiveServer) -> None:
    own = urlsplit(live.url).netloc
    assert {urlsplit(u).netloc for u in watched.requests} == {own}
    assert watched.elsewhere == []


def test_sign_in_take_the_unassigned_ticket_reply_note_and_resolve(
    page: Page, live_server: LiveServer, watched: Watched
) -> None:
    support = live_server.ids["support"]
    number = live_server.run(
        lambda rt: helpers.customer_ticket(
            rt,
            subject="Cannot download my invoice",
            body="The download button does nothing.",
            team_id=support,
        )
    )

    sign_in(page, "dave")
    page.get_by_role("navigation", name="Queues").get_by_role("link", name="Unassigned").click()
    expect(page.get_by_role("heading", name="Unassigned")).to_be_visible()
    page.get_by_role("link", name="Cannot download my invoice").click()
    expect(
        page.get_by_role("heading", name=re.compile("Cannot download my invoice"))
    ).to_be_visible()

    page.get_by_role("button", name="Assign to me").click()
    expect(page.locator("#ticket_head")).to_contain_text("Assigned to Dave Support")

    page.get_by_label(re.compile("Reply to Carol")).check()
    page.get_by_label("Message").fill("Hello Carol, here is your invoice link.")
    page.get_by_role("button", name="Send reply").click()
    reply = page.locator("article.kind-reply")
    expect(reply).to_contain_text("here is your invoice link")
    expect(reply).to_contain_text("Queued for sending")

    page.get_by_label("Internal note").check()
    page.get_by_label("Message").fill("Customer had an old browser.")
    with helpers.htmx_swap(page, "ticket_body"):
        page.get_by_role("button", name="Add note").click()
    expect(page.locator("article.kind-note")).to_contain_text("old browser")

    page.get_by_label("Status").select_option("resolved")
    expect(page.locator("#ticket_head .badge.status-resolved")).to_have_text("resolved")

    page.goto(f"/tickets/{number}")
    expect(page.locator("#ticket_head")).to_contain_text("resolved")
    expect(page.locator("article.message")).to_have_count(3)
    _only_own_host(watched, live_server)
    assert watched.dialogs == []
    assert watched.errors == [], "console errors (a CSP violation?)"


def test_the_keyboard_moves_through_the_queue_and_opens_a_ticket(
    page: Page, live_server: LiveServer, watched: Watched
) -> None:
    support = live_server.ids["support"]
    numbers = [
        live_server.run(
            lambda rt, i=i: helpers.customer_ticket(
                rt, subject=f"Question {i}", body="?", team_id=support
            )
        )
        for i in range(3)
    ]
    sign_in(page, "dave")
    page.goto("/queue/unassigned")
    rows = page.locator("[data-list] [data-row]")
    expect(rows).to_have_count(3)

    page.keyboard.press("j")
    expect(rows.nth(0)).to_have_class(re.compile("is-current"))
    page.keyboard.press("j")
    expect(rows.nth(1)).to_have_class(re.compile("is-current"))
    expect(rows.nth(0)).not_to_have_class(re.compile("is-current"))
    page.keyboard.press("k")
    expect(rows.nth(0)).to_have_class(re.compile("is-current"))
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    # Newest first: the second row is the second newest.
    expect(page).to_have_url(re.compile(f"/tickets/{numbers[1]}$"))
    # The shortcuts are there once the page's deferred scripts have run.
    page.wait_for_load_state("load")

    page.keyboard.press("a")
    expect(page.locator("#ticket_head")).to_contain_text("Assigned to Dave Support")
    page.keyboard.press("n")
    expect(page.get_by_label("Internal note")).to_be_checked()
    expect(page.get_by_label("Message")).to_be_focused()
    page.keyboard.press("Escape")
    page.keyboard.press("r")
    expect(page.get_by_label(re.compile("Reply to"))).to_be_checked()
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    assert watched.errors == []


def test_a_stale_send_is_warned_and_can_be_reviewed_first(
    page: Page, live_server: LiveServer, watched: Watched
) -> None:
    support, bob = live_server.ids["support"], live_server.ids["alice"]
    number = live_server.run(
        lambda rt: helpers.customer_ticket(rt, subject="Refund?", body="Please.", team_id=support)
    )
    sign_in(page, "dave")
    page.goto(f"/tickets/{number}")
    page.get_by_label("Message").fill("We will refund you today.")

    async def someone_else_replies(rt: Runtime) -> None:
        await helpers.agent_message(
            rt, agent_id=bob, number=number, body="Refund already sent!", kind=MessageKind.reply
        )

    live_server.run(someone_else_replies)
    page.get_by_role("button", name="Send reply").click()
    warning = page.locator("#composer_warning")
    expect(warning).to_contain_text("The ticket changed since you opened it")
    # The draft is still there.
    expect(page.get_by_label("Message")).to_have_value("We will refund you today.")

    page.get_by_role("button", name="Review first").click()
    expect(page.locator("#conversation")).to_contain_text("Refund already sent!")
    expect(warning).to_be_empty()
    page.get_by_label("Message").fill("Sorry, my colleague was faster: all done.")
    page.get_by_role("button", name="Send reply").click()
    expect(page.locator("article.kind-reply")).to_have_count(2)
    # The warning came as a 409, which the browser and htmx log; nothing else went wrong.
    assert [e for e in watched.errors if "409" not in e and "Response Status Error" not in e] == []
