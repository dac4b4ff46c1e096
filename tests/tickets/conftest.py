"""What the ticket stories share: settings a test may change, password hashing at test-sized cost,
small HTTP helpers, and a counter of the SQL statements a request runs."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select

from keepdesk.config import Settings
from keepdesk.runtime import Runtime
from keepdesk.tickets.models import Message, Ticket
from tests.conftest import World
from tests.web.conftest import Pages


@pytest.fixture
def settings_changes() -> dict[str, Any]:
    """Settings a test changes; parametrize this fixture to change them."""
    return {}


@pytest.fixture
def settings(settings: Settings, settings_changes: dict[str, Any]) -> Settings:
    return settings.model_copy(update=settings_changes) if settings_changes else settings


@pytest.fixture
async def pages(app: FastAPI, world: World) -> AsyncIterator[Pages]:
    """Browsers that sign in through the sign-in form (tests/web/conftest.py)."""
    p = Pages(app, world)
    try:
        yield p
    finally:
        await p.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a JSON error response; fails on anything else."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    return error


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["code"] == code, error
    return error


async def patch(
    client: httpx.AsyncClient, number: int, expect: int = 200, **fields: Any
) -> dict[str, Any]:
    response = await client.patch(f"/api/v1/tickets/{number}", json=fields)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def post_message(
    client: httpx.AsyncClient, number: int, expect: int = 201, **fields: Any
) -> dict[str, Any]:
    body = {"kind": "reply", "body": "Thanks, we are on it."} | fields
    response = await client.post(f"/api/v1/tickets/{number}/messages", json=body)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def get_ticket(client: httpx.AsyncClient, number: int) -> dict[str, Any]:
    response = await client.get(f"/api/v1/tickets/{number}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def events_of(client: httpx.AsyncClient, number: int) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/tickets/{number}/events", params={"limit": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def count_rows(runtime: Runtime) -> tuple[int, int]:
    """How many tickets and messages the database holds."""
    async with runtime.db.session() as session:
        tickets = await session.scalar(select(func.count()).select_from(Ticket))
        messages = await session.scalar(select(func.count()).select_from(Message))
    return int(tickets or 0), int(messages or 0)


@contextmanager
def count_statements(runtime: Runtime) -> Iterator[list[str]]:
    """Every SQL statement sent while the block runs, on the app's engine."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    engine = runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
