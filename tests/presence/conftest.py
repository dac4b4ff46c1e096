"""Fixtures for presence tests: browsers signed in through the sign-in form."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from tests.conftest import World
from tests.web.conftest import Pages


@pytest.fixture
async def pages(app: FastAPI, world: World) -> AsyncIterator[Pages]:
    p = Pages(app, world)
    try:
        yield p
    finally:
        await p.close()
