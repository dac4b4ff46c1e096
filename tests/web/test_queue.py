"""The queues: who sees which, filters, "load more", counts and bulk changes."""

from __future__ import annotations

import re

from keepdesk.accounts import auth
from keepdesk.runtime import Runtime
from keepdesk.tickets import queries
from keepdesk.tickets import service as tickets
from keepdesk.tickets.policy import TicketPolicy
from tests.conftest import World, open_ticket
from tests.web.conftest import Pages


def numbers_in(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-row id="ticket-(\d+)"', html)]


async def test_each_agent_sees_their_own_queues(world: World, pages: Pages) -> None:
    dave_api, bob_api = world.client("dave"), world.client("bob")
    support = await open_ticket(dave_api, subject="Support question")
    billing = await open_ticket(bob_api, subject="Billing question")
    await dave_api.patch(
        f"/api/v1/tickets/{support['number']}", json={"assignee_id": world.ids["dave"]}
    )
    dave, bob, alice = (
        await pages.sign_in("dave"),
        await pages.sign_in("bob"),
        await pages.sign_in("alice"),
    )

    assert numbers_in((await dave.get("/queue/mine")).text) == [support["number"]]
    assert numbers_in((await dave.get("/queue/unassigned")).text) == []
    assert numbers_in((await bob.get("/queue/unassigned")).text) == [billing["number"]]
    team_page = await bob.get(f"/queue/team/{world.ids['billing']}")
    assert numbers_in(team_page.text) == [billing["number"]]
    assert "<h1>Billing</h1>" in team_page.text
    # Not his team, and not an admin: that queue does not exist for bob.
    assert (await bob.get(f"/queue/team/{world.ids['support']}")).status_code == 404
    assert (await bob.get("/queue/all")).status_code == 404
    assert (await bob.get("/queue/nonsense")).status_code == 404
    everything = await alice.get("/queue/all")
    assert sorted(numbers_in(everything.text)) == sorted([support["number"], billing["number"]])
    assert (await alice.get(f"/queue/team/{world.ids['support']}")).status_code == 200

    # The navigation names each of the agent's teams, and All only for admins.
    nav = (await bob.get("/queue/mine")).text.split("</nav>")[0]
    assert "Billing" in nav and "Support" not in nav and "All tickets" not in nav
    assert "All tickets" in (await alice.get("/queue/mine")).text.split("</nav>")[0]


async def test_a_row_shows_what_customers_typed_as_text(world: World, pages: Pages) -> None:
    """A list's rows are made in Python (web/ui.py): every text in them is escaped."""
    dave_api = world.client("dave")
    subject = '<img src=x onerror="alert(1)">'
    ticket = await open_ticket(
        dave_api,
        subject=subject,
        tags=["vip"],
        requester={"email": "mallory@customer.test", "name": '"><script>steal()</script>'},
    )
    dave = await pages.sign_in("dave")
    for path in ("/queue/team/{support}", "/search?q=img"):
        page = (await dave.get(path.format(support=world.ids["support"]))).text
        assert numbers_in(page) == [ticket["number"]], path
        row = page.split(f'id="ticket-{ticket["number"]}"')[1].split("</tr>")[0]
        assert "<img" not in row and "<script" not in row, path
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in row, path
        assert "&#34;&gt;&lt;script&gt;steal()&lt;/script&gt;" in row, path
        assert '<span class="tag">vip</span>' in row, path
        assert 'title="mallory@customer.test"' in row and "Support" in row, path


async def test_filters_narrow_the_queue(world: World, pages: Pages) -> None:
    api = world.client("dave")
    urgent = await open_ticket(api, subject="Down!", priority="urgent", tags=["outage"])
    normal = await open_ticket(
        api, subject="Question", requester={"email": "erin@customer.test", "name": "Erin"}
    )
    resolved = await open_ticket(api, subject="Done")
    await api.patch(f"/api/v1/tickets/{resolved['number']}", json={"status": "resolved"})
    dave = await pages.sign_in("dave")

    def listed(query: str) -> list[int]:
        return sorted(numbers_in(query))

    active = (await dave.get("/queue/unassigned")).text
    assert listed(active) == sorted([urgent["number"], normal["number"]])
    assert "2 tickets" in active
    any_status = await dave.get("/queue/unassigned", params={"status": "any"})
    assert len(numbers_in(any_status.text)) == 3
    resolved_only = await dave.get("/queue/unassigned", params={"status": "resolved"})
    assert numbers_in(resolved_only.text) == [resolved["number"]]
    by_priority = await dave.get("/queue/unassigned", params={"priority": "urgent"})
    assert numbers_in(by_priority.text) == [urgent["number"]]
    by_tag = await dave.get("/queue/unassigned", params={"tag": "outage"})
    assert numbers_in(by_tag.text) == [urgent["number"]]
    by_requester = await dave.get("/queue/unassigned", params={"requester": "erin@customer.test"})
    assert numbers_in(by_requester.text) == [normal["number"]]
    oldest_first = await dave.get("/queue/unassigned", params={"sort": "created_at"})
    assert numbers_in(oldest_first.text) == [urgent["number"], normal["number"]]
    bad = await dave.get("/queue/unassigned", params={"priority": "whenever"})
    assert bad.status_code == 422
    assert "is not a priority" in bad.text


async def test_load_more_pages_by_keyset_and_appends_rows(
    world: World, pages: Pages, runtime: Runtime
) -> None:
    async with runtime.db.session(write=True) as session:
        actor = await auth.actor_for_agent(session, world.ids["dave"])
        for i in range(53):
            await tickets.open_ticket(
                session,
                actor=actor,
                subject=f"Request {i}",
                body="...",
                requester_email="carol@customer.test",
                now=runtime.clock.now(),
                blobs=runtime.blobs,
                policy=TicketPolicy.from_runtime(runtime),
            )
        await session.commit()
    dave = await pages.sign_in("dave")
    first = (await dave.get("/queue/unassigned")).text
    assert len(numbers_in(first)) == 50
    assert "53 tickets" in first
    more = re.search(r'hx-get="(/queue/unassigned\?cursor=[^"]+)"', first)
    assert more, "no load-more link"
    rest = await dave.get(more.group(1).replace("&amp;", "&"), htmx=True)
    assert rest.status_code == 200
    # Only the rows (and no further button): they replace the button in place.
    assert rest.text.lstrip().startswith("<tr data-row")
    assert "load_more" not in rest.text
    assert len(set(numbers_in(first)) | set(numbers_in(rest.text))) == 53


async def test_counts_stop_at_the_cap(world: World, runtime: Runtime) -> None:
    api = world.client("dave")
    for _ in range(4):
        await open_ticket(api)
    async with runtime.db.session() as session:
        actor = await auth.actor_for_agent(session, world.ids["dave"])
        everything = queries.TicketFilter()
        assert await queries.count_tickets(session, actor=actor, filters=everything, cap=10) == 4
        assert await queries.count_tickets(session, actor=actor, filters=everything, cap=2) == 3


async def test_bulk_changes_report_each_ticket(world: World, pages: Pages) -> None:
    dave_api = world.client("dave")
    one = await open_ticket(dave_api, subject="One")
    two = await open_ticket(dave_api, subject="Two")
    hidden = await open_ticket(world.client("bob"), subject="Billing secret")
    dave = await pages.sign_in("dave")

    response = await dave.post(
        "/queue/bulk",
        {"numbers": [one["number"], two["number"], hidden["number"]], "op": "assign:me"},
        htmx=True,
    )
    assert response.status_code == 200, response.text
    assert response.headers["hx-trigger"] == "queue-changed"
    assert "Changed 2 of 3 tickets" in response.text
    assert f"#{one['number']}</a>: assigned to you" in response.text
    assert f"#{hidden['number']}</a>: no ticket #{hidden['number']}" in response.text
    assert "Billing secret" not in response.text
    mine = numbers_in((await dave.get("/queue/mine")).text)
    assert sorted(mine) == [one["number"], two["number"]]

    tagged = await dave.post(
        "/queue/bulk", {"numbers": [one["number"]], "op": "tag:", "tag": "Refund"}, htmx=True
    )
    assert "Changed 1 of 1" in tagged.text
    status = await dave.post(
        "/queue/bulk", {"numbers": [two["number"]], "op": "status:resolved"}, htmx=True
    )
    assert "status set to resolved" in status.text
    moved = await dave.post(
        "/queue/bulk",
        {"numbers": [one["number"]], "op": f"team:{world.ids['billing']}"},
        htmx=True,
    )
    assert "moved to the team" in moved.text
    first = (await world.client("alice").get(f"/api/v1/tickets/{one['number']}")).json()
    assert first["tags"] == ["refund"]
    assert first["team"]["name"] == "Billing"
    # A hand-over to a team dave is not in leaves it unassigned.
    assert first["assignee"] is None

    nothing = await dave.post("/queue/bulk", {"op": "assign:me"}, htmx=True)
    assert nothing.status_code == 422
    assert "select at least one ticket" in nothing.text
