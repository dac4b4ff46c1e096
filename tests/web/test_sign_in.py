"""Signing in and out, sessions, passwords and the first-admin setup, through the pages."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from keepdesk.accounts import self_service
from keepdesk.runtime import Runtime
from tests.conftest import PASSWORD
from tests.support.clock import FakeClock
from tests.web.conftest import Pages, csrf_of


async def test_a_signed_out_visitor_is_sent_to_sign_in_and_comes_back(pages: Pages) -> None:
    visitor = pages.anonymous()
    response = await visitor.get("/queue/unassigned?status=open")
    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in?next=%2Fqueue%2Funassigned%3Fstatus%3Dopen"

    form = await visitor.get(response.headers["location"])
    assert 'name="next" value="/queue/unassigned?status=open"' in form.text
    visitor.csrf = csrf_of(form.text)
    signed_in = await visitor.post(
        "/sign-in",
        {"email": "dave@keepdesk.test", "password": PASSWORD, "next": "/queue/unassigned"},
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/queue/unassigned"
    assert (await visitor.get("/queue/unassigned")).status_code == 200


async def test_the_session_cookie_is_httponly_and_samesite(pages: Pages) -> None:
    visitor = pages.anonymous()
    visitor.csrf = csrf_of((await visitor.get("/sign-in")).text)
    response = await visitor.post("/sign-in", {"email": "bob@keepdesk.test", "password": PASSWORD})
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("keepdesk_session=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    # Plain http here (the test's base URL): Secure would make the browser drop the cookie.
    assert "Secure" not in cookie


async def test_behind_https_the_session_cookie_is_secure(
    tmp_path: object, database_url: str, clock: FakeClock, world: object
) -> None:
    from asgi_lifespan import LifespanManager

    from keepdesk.app import create_app
    from keepdesk.config import load_settings

    settings = load_settings(
        data_dir=tmp_path / "https-data",  # type: ignore[operator]
        database_url=database_url,
        secret_key="test-secret-" + "x" * 32,
        server_base_url="https://help.example.org",
    )
    app = create_app(settings, start_workers=False, clock=clock)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://help.example.org"
        ) as client,
    ):
        form = await client.get("/sign-in")
        assert "Secure" in form.headers["set-cookie"]
        response = await client.post(
            "/sign-in",
            data={
                "csrf_token": csrf_of(form.text),
                "email": "bob@keepdesk.test",
                "password": PASSWORD,
            },
        )
        assert response.status_code == 303, response.text
        session_cookie = next(
            c for c in response.headers.get_list("set-cookie") if c.startswith("keepdesk_session=")
        )
        assert "Secure" in session_cookie
        assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_a_wrong_password_is_said_plainly_and_keeps_the_email(pages: Pages) -> None:
    visitor = pages.anonymous()
    visitor.csrf = csrf_of((await visitor.get("/sign-in")).text)
    response = await visitor.post(
        "/sign-in", {"email": "bob@keepdesk.test", "password": "not the password"}
    )
    assert response.status_code == 401
    assert "wrong email address or password" in response.text
    assert 'value="bob@keepdesk.test"' in response.text
    assert "keepdesk_session" not in response.headers.get("set-cookie", "")


async def test_too_many_failures_are_throttled_readably(pages: Pages, runtime: Runtime) -> None:
    visitor = pages.anonymous()
    visitor.csrf = csrf_of((await visitor.get("/sign-in")).text)
    limit = runtime.settings.auth_max_failures_per_account
    for _ in range(limit):
        await visitor.post("/sign-in", {"email": "bob@keepdesk.test", "password": "nope nope"})
    response = await visitor.post("/sign-in", {"email": "bob@keepdesk.test", "password": PASSWORD})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    assert "too many failed sign-ins; try again in" in response.text


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example/",
        "/\\evil.example/",
        "/\\/evil.example/",
        "https:evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example",
        " //evil.example",
        "evil.example",
    ],
)
async def test_sign_in_never_redirects_to_another_site(pages: Pages, next_url: str) -> None:
    visitor = pages.anonymous()
    form = await visitor.get("/sign-in", params={"next": next_url})
    assert "evil.example" not in form.text
    visitor.csrf = csrf_of(form.text)
    response = await visitor.post(
        "/sign-in", {"email": "bob@keepdesk.test", "password": PASSWORD, "next": next_url}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/queue/mine"


async def test_signing_out_ends_the_session(pages: Pages) -> None:
    bob = await pages.sign_in("bob")
    response = await bob.post("/sign-out")
    assert response.status_code == 303
    assert response.headers["location"] == "/sign-in"
    # Even a copy of the old cookie no longer works.
    assert (await bob.get("/queue/mine")).status_code == 303


async def test_an_agent_sees_and_revokes_their_other_sessions(pages: Pages) -> None:
    laptop = await pages.sign_in("dave")
    phone = await pages.sign_in("dave")
    page = await laptop.get("/account")
    assert page.text.count("Sign out there") == 1
    assert "this browser" in page.text

    other_id = int(page.text.split('action="/account/sessions/')[1].split("/")[0])
    fragment = await laptop.post(f"/account/sessions/{other_id}/revoke", htmx=True)
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<table id="sessions"')
    assert "Sign out there" not in fragment.text
    assert (await phone.get("/queue/mine")).status_code == 303
    assert (await laptop.get("/queue/mine")).status_code == 200


async def test_changing_the_password_signs_out_the_other_browsers(pages: Pages) -> None:
    laptop = await pages.sign_in("bob")
    phone = await pages.sign_in("bob")
    wrong = await laptop.post(
        "/account/password",
        {
            "current_password": "not it at all",
            "new_password": "a brand new passphrase",
            "repeat_password": "a brand new passphrase",
        },
    )
    assert wrong.status_code == 422
    assert "the current password is not right" in wrong.text

    done = await laptop.post(
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": "a brand new passphrase",
            "repeat_password": "a brand new passphrase",
        },
    )
    assert done.status_code == 200
    assert "Your password is changed" in done.text
    assert (await laptop.get("/queue/mine")).status_code == 200
    assert (await phone.get("/queue/mine")).status_code == 303
    await pages.sign_in("bob", password="a brand new passphrase")


async def test_the_setup_page_is_gone_once_an_admin_exists(pages: Pages) -> None:
    visitor = pages.anonymous()
    response = await visitor.get("/setup")
    assert response.status_code == 404
    assert "keepdesk has an administrator already" in response.text
    assert (await visitor.get("/sign-in")).status_code == 200


async def test_the_first_admin_is_made_on_the_setup_page(app: FastAPI, runtime: Runtime) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keepdesk.test"
    ) as visitor:
        assert (await visitor.get("/queue/mine")).headers["location"].startswith("/sign-in")
        to_setup = await visitor.get("/sign-in")
        assert to_setup.headers["location"] == "/setup"
        form = await visitor.get("/setup")
        token = csrf_of(form.text)
        mismatch = await visitor.post(
            "/setup",
            data={
                "csrf_token": token,
                "email": "root@example.org",
                "name": "Rita Root",
                "password": "first admin password",
                "repeat_password": "something else entirely",
            },
        )
        assert mismatch.status_code == 422
        assert "differ" in mismatch.text
        created = await visitor.post(
            "/setup",
            data={
                "csrf_token": token,
                "email": "root@example.org",
                "name": "Rita Root",
                "password": "first admin password",
                "repeat_password": "first admin password",
            },
        )
        assert created.status_code == 303, created.text
        assert created.headers["location"] == "/queue/mine"
        home = await visitor.get("/queue/mine")
        assert "Rita Root" in home.text
        assert "All tickets" in home.text
    async with runtime.db.session() as session:
        assert not await self_service.needs_first_admin(session)
