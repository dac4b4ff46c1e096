"""Macros: placeholders filled in inside the sandbox, injection that renders as text or fails
readably, admins alone write them, and applying one from the composer changes the ticket."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keepdesk.errors import InvalidInput
from keepdesk.tickets.macros import render_macro
from tests.conftest import World, open_ticket
from tests.web.conftest import Pages

GREETING = "Hello {{ requester.name }}, about #{{ ticket.number }}.\n{{ agent.name }}"


def render(body: str, requester_name: str = "Carol Customer") -> str:
    return render_macro(
        body, requester_name=requester_name, ticket_number=1042, agent_name="Dave Support"
    )


def test_the_placeholders_are_filled_in() -> None:
    assert render(GREETING) == "Hello Carol Customer, about #1042.\nDave Support"


def test_what_a_customer_wrote_is_filled_in_as_text_never_run() -> None:
    assert render("Hi {{ requester.name }}", "{{ 7*7 }}{% raw %}") == "Hi {{ 7*7 }}{% raw %}"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{{ ''.__class__ }}", "macro_unsafe"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "macro_unsafe"),
        ("{{ requester.__dict__ }}", "macro_unsafe"),
        ("{{ self.__init__.__globals__ }}", "macro_unsafe"),
        ("{{ 'x' * 1000000000 }}", "macro_unsafe"),
        ("{{ 9 ** 999999999 }}", "macro_unsafe"),
        ("{% for i in range(1000000000) %}x{% endfor %}", "macro_placeholder"),
        ("{% for i in 'ab' %}{{ loop.cycle.__globals__ }}{% endfor %}", "macro_unsafe"),
        ("{{ config }}", "macro_placeholder"),
        ("{{ requester.email }}", "macro_placeholder"),
        ("{{ lipsum() }}", "macro_placeholder"),
        ("{{ range }}", "macro_placeholder"),
        ("Hello {{ requester.name ", "macro_syntax"),
        ("{% import 'os' as os %}", "macro_error"),
    ],
)
def test_an_injection_attempt_fails_safely_and_says_why(body: str, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        render(body)
    assert caught.value.code == code
    assert "macro" in caught.value.message
    assert "Traceback" not in caught.value.message


async def create_macro(alice: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Refund issued", "body": GREETING, **fields}
    response = await alice.post("/api/v1/macros", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_only_admins_write_macros_and_every_agent_lists_them(world: World) -> None:
    alice, dave = world.client("alice"), world.client("dave")
    refused = await dave.post("/api/v1/macros", json={"name": "Mine", "body": "Hi"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_only"

    macro = await create_macro(alice, status="pending", tags=["Refund"])
    assert (macro["status"], macro["tags"], macro["team_id"]) == ("pending", ["refund"], None)
    listed = (await dave.get("/api/v1/macros")).json()["items"]
    assert [m["name"] for m in listed] == ["Refund issued"]

    url = f"/api/v1/macros/{macro['id']}"
    assert (await dave.patch(url, json={"name": "Mine"})).status_code == 403
    assert (await dave.delete(url)).status_code == 403

    changed = await alice.patch(url, json={"status": None, "team_id": world.ids["billing"]})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["status"], changed.json()["team_id"]) == (None, world.ids["billing"])
    assert changed.json()["name"] == "Refund issued"

    duplicate = await alice.post("/api/v1/macros", json={"name": "refund ISSUED", "body": "x"})
    assert duplicate.json()["error"]["code"] == "macro_exists"

    assert (await alice.delete(url)).status_code == 204
    assert (await alice.delete(url)).status_code == 404
    assert (await dave.get("/api/v1/macros")).json()["items"] == []


async def test_a_macro_that_would_fail_is_refused_when_saved(world: World) -> None:
    alice = world.client("alice")
    response = await alice.post(
        "/api/v1/macros", json={"name": "Bad", "body": "{{ ''.__class__.__mro__ }}"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "macro_unsafe"
    assert "requester.name" in error["message"]
    unknown = await alice.post("/api/v1/macros", json={"name": "Bad", "body": "{{ ticket.id }}"})
    assert unknown.json()["error"]["code"] == "macro_placeholder"


async def test_applying_a_macro_fills_the_draft_and_changes_status_and_tags(
    world: World, pages: Pages
) -> None:
    await create_macro(world.client("alice"), status="pending", tags=["refund"])
    macro_id = (await world.client("dave").get("/api/v1/macros")).json()["items"][0]["id"]
    ticket = await open_ticket(world.client("dave"), tags=["billing"])
    number = ticket["number"]
    dave = await pages.sign_in("dave")

    page = await dave.get(f"/tickets/{number}")
    assert "Apply macro" in page.text and "Refund issued" in page.text

    response = await dave.post(
        f"/tickets/{number}/macro",
        {"macro_id": str(macro_id), "body": "Draft so far", "expected_version": "1"},
        htmx=True,
    )
    assert response.status_code == 200, response.text
    assert f"Draft so far\n\nHello Carol Customer, about #{number}.\nDave Support" in response.text

    after = (await world.client("dave").get(f"/api/v1/tickets/{number}")).json()
    assert after["status"] == "pending"
    assert after["tags"] == ["billing", "refund"]
    # The agent's own change does not warn the composer that the ticket changed.
    assert f'name="expected_version" value="{after["version"]}"' in response.text


async def test_a_customers_name_that_looks_like_a_template_shows_literally(
    world: World, pages: Pages
) -> None:
    await create_macro(world.client("alice"))
    macro_id = (await world.client("dave").get("/api/v1/macros")).json()["items"][0]["id"]
    ticket = await open_ticket(
        world.client("dave"),
        requester={"email": "mallory@customer.test", "name": "{{ 7*7 }}<b>x</b>"},
    )
    dave = await pages.sign_in("dave")
    response = await dave.post(
        f"/tickets/{ticket['number']}/macro", {"macro_id": str(macro_id)}, htmx=True
    )
    assert response.status_code == 200, response.text
    assert "Hello {{ 7*7 }}&lt;b&gt;x&lt;/b&gt;," in response.text
    assert "49" not in response.text.split("<textarea", 1)[1].split("</textarea>", 1)[0]


async def test_a_macro_on_a_closed_ticket_says_why_and_changes_nothing(
    world: World, pages: Pages
) -> None:
    await create_macro(world.client("alice"), status="resolved")
    macro_id = (await world.client("dave").get("/api/v1/macros")).json()["items"][0]["id"]
    api = world.client("dave")
    number = (await open_ticket(api))["number"]
    for status in ("open", "resolved", "closed"):
        changed = await api.patch(f"/api/v1/tickets/{number}", json={"status": status})
        assert changed.status_code == 200, changed.text
    dave = await pages.sign_in("dave")
    response = await dave.post(f"/tickets/{number}/macro", {"macro_id": str(macro_id)}, htmx=True)
    assert response.status_code == 409
    assert response.headers["hx-retarget"] == "#composer_warning"
    assert (await api.get(f"/api/v1/tickets/{number}")).json()["status"] == "closed"
