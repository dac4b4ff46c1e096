"""Search: a word from the subject, a reply, a customer's mail or the requester finds the
ticket; nobody finds what they may not see; no query, however hostile, breaks it; newest first,
a page at a time. Through the REST API and the search page, on both databases."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from keepdesk.accounts.models import Contact
from keepdesk.runtime import Runtime
from keepdesk.tickets import service as ticket_service
from keepdesk.tickets.models import Ticket
from keepdesk.tickets.policy import TicketPolicy
from tests.conftest import World, open_ticket
from tests.web.conftest import Pages


async def found(client: httpx.AsyncClient, q: str, **params: Any) -> list[int]:
    response = await client.get("/api/v1/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    return [t["number"] for t in response.json()["items"]]


async def customer_writes(runtime: Runtime, *, number: int, body: str) -> None:
    async with runtime.db.session(write=True) as session:
        ticket = await session.scalar(select(Ticket).where(Ticket.number == number))
        assert ticket is not None
        contact = await session.get(Contact, ticket.requester_id)
        assert contact is not None
        await ticket_service.record_customer_message(
            session,
            ticket=ticket,
            contact=contact,
            body=body,
            now=runtime.clock.now(),
            blobs=runtime.blobs,
            policy=TicketPolicy.from_runtime(runtime),
        )
        await session.commit()


async def test_a_word_from_the_subject_a_reply_or_a_customer_mail_finds_the_ticket(
    world: World, runtime: Runtime
) -> None:
    dave = world.client("dave")
    printer = (await open_ticket(dave))["number"]
    invoice = (await open_ticket(dave, subject="Invoice question", body="Where is it?"))["number"]
    reply = await dave.post(
        f"/api/v1/tickets/{printer}/messages",
        json={"kind": "reply", "body": "Please unplug the toaster-oven first."},
    )
    assert reply.status_code == 201, reply.text
    await customer_writes(runtime, number=invoice, body="My reference is zebra42.")

    assert await found(dave, "printer") == [printer]
    assert await found(dave, "PRINTER Fire") == [printer]
    assert await found(dave, "toaster") == [printer]
    assert await found(dave, "toaster-oven") == [printer]
    assert await found(dave, "zebra42") == [invoice]
    assert await found(dave, "question zebra42") == [invoice]
    assert await found(dave, "printer zebra42") == []
    assert await found(dave, "nowhere") == []


async def test_the_requester_address_finds_the_ticket(world: World) -> None:
    dave = world.client("dave")
    mine = (await open_ticket(dave, requester={"email": "erin@shop.example", "name": "Erin"}))[
        "number"
    ]
    other = (await open_ticket(dave))["number"]  # carol@customer.test
    assert await found(dave, "erin@shop.example") == [mine]
    assert await found(dave, "shop.example") == [mine]
    assert await found(dave, "carol@customer.test") == [other]
    assert await found(dave, "Carol") == [other]


async def test_bob_never_finds_daves_support_ticket(world: World) -> None:
    dave, bob, alice = world.client("dave"), world.client("bob"), world.client("alice")
    support = (await open_ticket(dave, subject="Secret sauce recipe"))["number"]
    billing = (await open_ticket(bob, subject="Sauce invoice"))["number"]
    assert await found(bob, "sauce") == [billing]
    assert await found(bob, "secret") == []
    assert await found(dave, "sauce") == [support]
    assert await found(alice, "sauce") == [billing, support]


@pytest.mark.parametrize(
    "q",
    [
        '"',
        'printer"',
        "*",
        "printer*",
        "NEAR(",
        "NEAR(printer fire)",
        "printer OR fire",
        "OR",
        "AND NOT",
        "'; DROP TABLE tickets; --",
        "printer\x00fire",
        "^printer",
        "subject:printer",
        "fire -printer",
        "a:b:c (d) {e} [f]",
        "\u00e9t\u00e9 caf\u00e9",
        "x" * 500,
        " ".join(["fire"] * 100),
    ],
)
async def test_hostile_queries_are_words_never_errors(world: World, q: str) -> None:
    dave = world.client("dave")
    number = (await open_ticket(dave, subject="Printer fire near the NOT gate"))["number"]
    response = await dave.get("/api/v1/search", params={"q": q})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert response.json()["error"]["code"] in ("invalid_query", "invalid_input")
        return
    numbers = [t["number"] for t in response.json()["items"]]
    # The engine's syntax is never reached: OR, NEAR and NOT are words like any other, and
    # "NEAR(printer" is the phrase "near printer", which the subject does not hold.
    expected = {
        "printer*": [number],
        "printer OR fire": [],
        "NEAR(printer fire)": [],
        "^printer": [number],
        "subject:printer": [],
        "AND NOT": [],
        'printer"': [number],
    }
    if q in expected:
        assert numbers == expected[q]


@pytest.mark.parametrize("q", ['"', "*", "...", " ", "--", "()", "_"])
async def test_a_query_without_a_word_is_refused(world: World, q: str) -> None:
    response = await world.client("dave").get("/api/v1/search", params={"q": q})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_query"


async def test_newest_first_a_page_at_a_time(world: World) -> None:
    dave = world.client("dave")
    numbers = [(await open_ticket(dave, subject=f"Broken widget {i}"))["number"] for i in range(7)]
    await open_ticket(dave, subject="Something else")
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        params = {"q": "widget", "limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await dave.get("/api/v1/search", params=params)).json()
        seen += [t["number"] for t in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == numbers[::-1]
    bad = await dave.get("/api/v1/search", params={"q": "widget", "cursor": "abc"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_cursor"


def numbers_in(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<tr data-row id="ticket-(\d+)"', html)]


async def test_the_search_page_lists_matches_like_a_queue(world: World, pages: Pages) -> None:
    dave_api = world.client("dave")
    support = (await open_ticket(dave_api, subject="Printer jam"))["number"]
    billing = (await open_ticket(world.client("bob"), subject="Printer invoice"))["number"]
    dave = await pages.sign_in("dave")

    page = await dave.get("/search", params={"q": "printer"})
    assert page.status_code == 200
    assert numbers_in(page.text) == [support]
    assert f'href="/tickets/{billing}"' not in page.text
    assert 'name="q"' in page.text  # the search box in the top bar

    fragment = await dave.get("/search", params={"q": "printer"}, htmx=True)
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="search_results">')

    empty = await dave.get("/search")
    assert empty.status_code == 200
    assert numbers_in(empty.text) == []

    hostile = await dave.get("/search", params={"q": '"*'})
    assert hostile.status_code == 422
    assert "type at least one word" in hostile.text


async def test_the_search_page_loads_more(world: World, pages: Pages) -> None:
    from keepdesk.tickets import views

    dave_api = world.client("dave")
    numbers = [
        (await open_ticket(dave_api, subject=f"Gadget {i}"))["number"]
        for i in range(views.PAGE_SIZE + 2)
    ]
    dave = await pages.sign_in("dave")
    page = await dave.get("/search", params={"q": "gadget"})
    assert numbers_in(page.text) == numbers[::-1][: views.PAGE_SIZE]
    more_url = re.search(r'hx-get="(/search\?[^"]+)"', page.text)
    assert more_url is not None
    more = await dave.get(more_url.group(1).replace("&amp;", "&"), htmx=True)
    assert numbers_in(more.text) == numbers[::-1][views.PAGE_SIZE :]
