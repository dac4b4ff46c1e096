"""Health and readiness, security headers, request ids, and JSON errors for unknown API routes."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from keepdesk import schema
from keepdesk.app import create_app
from keepdesk.config import Settings, load_settings
from tests.conftest import World


def assert_security_headers(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


def assert_json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text
    assert_security_headers(response)


async def test_healthz_answers_while_the_process_is_up(web: httpx.AsyncClient) -> None:
    response = await web.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert_security_headers(response)


async def test_readyz_is_ok_at_the_migration_head(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    # checks["backup"] too, which never fails readiness: see tests/ops/test_status.py.
    assert (body["status"], body["checks"]["database"], body["checks"]["migrations"]) == (
        "ok",
        "ok",
        "ok",
    )


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, start_workers=False)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://keepdesk.test"
        ) as client,
    ):
        yield client


@pytest.fixture
async def web(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app on a database it never touches, for what does not depend on one."""
    async with client_for(load_settings(data_dir=tmp_path / "data")) as client:
        yield client


@pytest.fixture(params=["sqlite", "postgres"])
def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of this test's own, so it may be migrated down."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'own.sqlite3'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


async def test_readyz_is_503_while_the_database_is_behind(
    own_database_url: str, tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path / "data", database_url=own_database_url)
    await schema.upgrade_async(own_database_url)
    async with client_for(settings) as client:
        assert (await client.get("/readyz")).status_code == 200
        await schema.downgrade_async(own_database_url, "base")
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["migrations"] == (
        f"at none, expected {schema.head_revision()}: run 'keepdesk upgrade'"
    )
    assert "Traceback" not in response.text


async def test_readyz_is_503_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=f"postgresql://keepdesk:secret-pw@127.0.0.1:{closed_port}/keepdesk",
    )
    async with client_for(settings) as client:
        response = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("unreachable: ")
    assert "secret-pw" not in response.text
    assert "Traceback" not in response.text
    assert alive.status_code == 200


async def test_api_answers_and_api_errors_carry_the_security_headers(
    world: World, anonymous: httpx.AsyncClient
) -> None:
    ok = await world.client("bob").get("/api/v1/agents/me")
    assert ok.status_code == 200
    assert_security_headers(ok)
    assert_security_headers(await anonymous.get("/api/v1/openapi.json"))
    assert_json_error(await anonymous.get("/api/v1/agents/me"), 401, "unauthenticated")
    assert_json_error(await world.client("bob").get("/api/v1/teams/999"), 404, "not_found")
    assert_json_error(
        await world.client("alice").post("/api/v1/teams", json={"name": ""}), 422, "invalid_input"
    )
    assert_json_error(
        await world.client("alice").post("/api/v1/teams", content=b"{not json"),
        422,
        "invalid_input",
    )
    assert_json_error(
        await world.client("bob").post("/api/v1/teams", json={"name": "x"}), 403, "admin_only"
    )


async def test_a_sane_request_id_is_echoed(web: httpx.AsyncClient) -> None:
    response = await web.get("/healthz", headers={"X-Request-ID": "lb-42.Abc_def"})
    assert response.headers["x-request-id"] == "lb-42.Abc_def"


@pytest.mark.parametrize(
    "hostile",
    ["", "a b", "<script>alert(1)</script>", "x" * 65, "id;rm -rf /", "caf\u00e9".encode()],
)
async def test_a_hostile_request_id_is_replaced(
    web: httpx.AsyncClient, hostile: str | bytes
) -> None:
    response = await web.get("/healthz", headers={"X-Request-ID": hostile})
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])


async def test_every_request_without_an_id_gets_a_fresh_one(web: httpx.AsyncClient) -> None:
    first, second = await web.get("/healthz"), await web.get("/healthz")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_unknown_api_routes_are_json_404(web: httpx.AsyncClient) -> None:
    for path in ("/api/v1/nope", "/api/v2/tickets", "/api/"):
        response = await web.get(path)
        assert_json_error(response, 404, "not_found")
        assert response.json()["error"]["message"] == "no such endpoint"


async def test_unknown_pages_outside_the_api_are_html(web: httpx.AsyncClient) -> None:
    response = await web.get("/no-such-page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert_security_headers(response)


async def test_a_wrong_method_is_json_405(web: httpx.AsyncClient) -> None:
    response = await web.delete("/api/v1/agents")
    assert_json_error(response, 405, "method_not_allowed")
    # Starlette names only the first matching route's methods (GET, not POST) in Allow.
    assert "GET" in response.headers["allow"]
    assert_json_error(await web.post("/healthz"), 405, "method_not_allowed")
