"""Contacts (customers) through the REST API: one per address, found by address or name."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import Contact
from keepdesk.runtime import Runtime
from tests.conftest import World


async def add_contact(client: httpx.AsyncClient, email: str, name: str = "") -> int:
    response = await client.post("/api/v1/contacts", json={"email": email, "name": name})
    assert response.status_code == 201, response.text
    contact_id: int = response.json()["id"]
    return contact_id


async def search(client: httpx.AsyncClient, q: str) -> list[str]:
    response = await client.get("/api/v1/contacts", params={"q": q})
    assert response.status_code == 200, response.text
    return [c["email"] for c in response.json()["items"]]


async def test_bob_adds_a_contact(world: World) -> None:
    bob = world.client("bob")
    response = await bob.post(
        "/api/v1/contacts",
        json={"email": "Zoe@Example.ORG", "name": " Zoe  Zed ", "organisation": "Zed Ltd"},
    )
    assert response.status_code == 201, response.text
    zoe = response.json()
    assert (zoe["email"], zoe["name"], zoe["organisation"]) == (
        "zoe@example.org",
        "Zoe Zed",
        "Zed Ltd",
    )
    assert (await bob.get(f"/api/v1/contacts/{zoe['id']}")).json() == zoe
    assert (await bob.get("/api/v1/contacts/9999")).status_code == 404


@pytest.mark.parametrize("email", ["carol@customer.test", "CAROL@Customer.Test"])
async def test_one_contact_per_address_in_any_case(world: World, email: str) -> None:
    response = await world.client("bob").post("/api/v1/contacts", json={"email": email})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_taken"


async def test_a_bad_address_is_422(world: World) -> None:
    response = await world.client("bob").post("/api/v1/contacts", json={"email": "carol@@x"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_email"


async def test_search_by_address_prefix_or_part_of_the_name(world: World) -> None:
    bob = world.client("bob")
    await add_contact(bob, "carl@psych.example", "Carl Jung")
    await add_contact(bob, "zoe@example.org", "Zoe Zed")
    await add_contact(bob, "percent@example.org", "One 100% Customer")

    assert await search(bob, "car") == ["carol@customer.test", "carl@psych.example"]
    assert await search(bob, "CAROL@") == ["carol@customer.test"]
    # "customer" is part of two names, but no address starts with it.
    assert await search(bob, "customer") == ["carol@customer.test", "percent@example.org"]
    assert await search(bob, "jung") == ["carl@psych.example"]
    assert await search(bob, "example.org") == []
    # LIKE wildcards in the query are plain characters.
    assert await search(bob, "%") == ["percent@example.org"]
    assert await search(bob, "_") == []
    assert await search(bob, "z%d") == []


async def test_contact_list_pages_with_a_cursor(world: World) -> None:
    bob = world.client("bob")
    for n in range(3):
        await add_contact(bob, f"c{n}@customer.test")
    first = (await bob.get("/api/v1/contacts", params={"limit": 3})).json()
    assert [c["email"] for c in first["items"]] == [
        "carol@customer.test",
        "c0@customer.test",
        "c1@customer.test",
    ]
    rest = (
        await bob.get("/api/v1/contacts", params={"limit": 3, "cursor": first["next_cursor"]})
    ).json()
    assert [c["email"] for c in rest["items"]] == ["c2@customer.test"]
    assert rest["next_cursor"] is None


async def test_dave_updates_a_contact(world: World) -> None:
    dave, carol = world.client("dave"), world.ids["carol"]
    path = f"/api/v1/contacts/{carol}"
    updated = await dave.patch(path, json={"name": "Carol C. Customer", "organisation": "ACME"})
    assert updated.status_code == 200
    assert (updated.json()["name"], updated.json()["organisation"]) == (
        "Carol C. Customer",
        "ACME",
    )
    moved = await dave.patch(path, json={"email": "Carol@New.Example"})
    assert moved.json()["email"] == "carol@new.example"
    assert await search(dave, "carol@new") == ["carol@new.example"]
    # Her own address in another case is no clash.
    same = await dave.patch(path, json={"email": "CAROL@new.example"})
    assert (same.status_code, same.json()["email"]) == (200, "carol@new.example")


async def test_a_contact_cannot_take_another_contacts_address(world: World) -> None:
    dave = world.client("dave")
    zoe = await add_contact(dave, "zoe@example.org")
    response = await dave.patch(f"/api/v1/contacts/{zoe}", json={"email": "Carol@Customer.test"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_taken"
    assert (await dave.get(f"/api/v1/contacts/{zoe}")).json()["email"] == "zoe@example.org"
    assert (await dave.patch("/api/v1/contacts/9999", json={"name": "x"})).status_code == 404


async def test_a_contact_created_meanwhile_is_found_not_duplicated(
    world: World, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another transaction creates the contact between our look-up and our insert (a mail and
    the API at once): the insert makes nothing, and the contact it made is the one used."""
    first = await add_contact(world.client("alice"), "race@customer.test", "Race")
    look_up = accounts.find_contact_by_email
    calls: list[str] = []

    async def missed_once(session: AsyncSession, email: str) -> Contact | None:
        calls.append(email)
        return None if len(calls) == 1 else await look_up(session, email)

    monkeypatch.setattr(accounts, "find_contact_by_email", missed_once)
    async with runtime.db.session(write=True) as session:
        contact = await accounts.find_or_create_contact(
            session, email="Race@Customer.test", name="Someone else", now=runtime.clock.now()
        )
        await session.commit()
    assert (contact.id, contact.name) == (first, "Race")
    assert calls == ["race@customer.test", "race@customer.test"]
    assert await search(world.client("alice"), "race@") == ["race@customer.test"]
