"""Fixtures for page tests: agents signed in through the sign-in form, like a browser.

`pages.sign_in("bob")` returns a `PageAgent`: an HTTP client holding bob's session cookie and
the CSRF token the pages gave it. Password hashing runs at test-sized cost (see
tests/accounts/conftest.py for why that keeps what is checked the same).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import PASSWORD, World

BASE = "http://keepdesk.test"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


@dataclass
class PageAgent:
    """A browser-like client: cookies kept, redirects not followed, the page's CSRF token."""

    client: httpx.AsyncClient
    csrf: str = ""

    async def get(self, url: str, *, htmx: bool = False, **kwargs: Any) -> httpx.Response:
        headers = {"HX-Request": "true"} if htmx else {}
        headers.update(kwargs.pop("headers", {}))
        return await self.client.get(url, headers=headers, **kwargs)

    async def post(
        self,
        url: str,
        data: dict[str, Any] | None = None,
        *,
        htmx: bool = False,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form.setdefault("csrf_token", self.csrf)
        sent = {"HX-Request": "true"} if htmx else {}
        sent.update(headers or {})
        return await self.client.post(url, data=form, headers=sent, **kwargs)


@dataclass
class Pages:
    app: FastAPI
    world: World
    _clients: list[httpx.AsyncClient] = field(default_factory=list)

    def anonymous(self) -> PageAgent:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)
        self._clients.append(client)
        return PageAgent(client)

    async def sign_in(self, name: str, password: str = PASSWORD) -> PageAgent:
        agent = self.anonymous()
        form = await agent.get("/sign-in")
        assert form.status_code == 200, form.text
        agent.csrf = csrf_of(form.text)
        response = await agent.post(
            "/sign-in", {"email": f"{name}@keepdesk.test", "password": password}
        )
        assert response.status_code == 303, response.text
        page = await agent.get("/account")
        assert page.status_code == 200, page.text
        agent.csrf = csrf_of(page.text)
        return agent

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture
async def pages(app: FastAPI, world: World) -> AsyncIterator[Pages]:
    p = Pages(app, world)
    try:
        yield p
    finally:
        await p.close()
