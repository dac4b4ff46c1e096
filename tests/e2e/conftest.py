"""Browser tests: a real keepdesk served by uvicorn on a free port, driven by Playwright through
Debian's Chromium (`apt-get install chromium`; never `playwright install`).

Each test gets its own SQLite database (copied from the migrated template) and server; data is
made through the services, in a thread of its own, like the `world` of the HTTP tests. Without
Chromium or Playwright the tests skip, saying which is missing (under CI they fail instead).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import uvicorn

from keepdesk.accounts import auth
from keepdesk.accounts import service as accounts
from keepdesk.accounts.models import AgentRole
from keepdesk.app import create_app
from keepdesk.audit.service import COMMAND_LINE
from keepdesk.config import load_settings
from keepdesk.runtime import Runtime
from tests.conftest import PASSWORD
from tests.support.clock import FakeClock
from tests.support.services import missing

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

try:
    import playwright.sync_api  # noqa: F401

    HAVE_PLAYWRIGHT = True
except ImportError:
    HAVE_PLAYWRIGHT = False

# The browser tests cannot even be imported without Playwright: leave them out, and let
# test_browser_available.py say why (and fail under CI).
collect_ignore = (
    []
    if HAVE_PLAYWRIGHT
    else [
        p.name
        for p in Path(__file__).parent.glob("test_*.py")
        if p.stem != "test_browser_available"
    ]
)
PLAYWRIGHT_MISSING = (
    "Playwright is not installed: .venv/bin/pip install 'playwright==1.65.2' pytest-playwright "
    "(the browser tests drive Debian's chromium; no browser download)"
)
CHROMIUM_MISSING = "no Chromium at /usr/bin/chromium: apt-get install chromium"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
T = TypeVar("T")


@pytest.fixture(scope="package")
def playwright_instance() -> Iterator[Playwright]:
    if not HAVE_PLAYWRIGHT:
        missing(PLAYWRIGHT_MISSING)
    if not CHROMIUM.exists():
        missing(CHROMIUM_MISSING)
    from playwright.sync_api import sync_playwright

    # Package scope: the Playwright loop is gone before the async tests of other packages run.
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def chromium(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _in_thread(fn: Callable[[], T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


@dataclass
class LiveServer:
    """keepdesk on 127.0.0.1:<port>, and a way to change its data through the services."""

    url: str
    runtime: Runtime
    clock: FakeClock
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return self.url

    def run(self, work: Callable[[Runtime], Awaitable[T]]) -> T:
        """Run `work(runtime)` on a loop of its own, in a thread (the test's thread belongs to
        Playwright), with a database connection of its own."""

        async def main() -> T:
            async with Runtime.from_settings(self.runtime.settings, clock=self.clock) as rt:
                return await work(rt)

        return _in_thread(lambda: asyncio.run(main()))

    def actor(self, name: str) -> Callable[[Runtime], Awaitable[Any]]:
        async def load(rt: Runtime) -> Any:
            async with rt.db.session() as session:
                return await auth.actor_for_agent(session, self.ids[name])

        return load


async def _people(rt: Runtime) -> dict[str, int]:
    """alice (admin), bob (Billing), dave (Support): the same people as the HTTP tests."""
    now = rt.clock.now()
    ids: dict[str, int] = {}
    async with rt.db.session(write=True) as session:
        billing = await accounts.create_team(session, actor=None, name="Billing", now=now)
        support = await accounts.create_team(session, actor=None, name="Support", now=now)
        for key, name, role, teams in [
            ("alice", "Alice Admin", AgentRole.admin, []),
            ("bob", "Bob Billing", AgentRole.agent, [billing.id]),
            ("dave", "Dave Support", AgentRole.agent, [support.id]),
        ]:
            agent = await accounts.create_agent(
                session,
                by=COMMAND_LINE,
                email=f"{key}@keepdesk.test",
                name=name,
                role=role,
                team_ids=teams,
                password=PASSWORD,
                now=now,
            )
            ids[key] = agent.id
        ids.update(billing=billing.id, support=support.id)
        await session.commit()
    return ids


@pytest.fixture
def live_server(tmp_path: Path, sqlite_template: Path) -> Iterator[LiveServer]:
    database = tmp_path / "keepdesk.sqlite3"
    shutil.copyfile(sqlite_template, database)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{database}",
        secret_key="e2e-secret-" + "x" * 32,
        server_base_url=url,
    )
    clock = FakeClock()
    app = create_app(settings, start_workers=False, clock=clock)
    live = LiveServer(url=url, runtime=app.state.runtime, clock=clock)
    live.ids = live.run(_people)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="keepdesk-e2e", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        # Waiting for a condition with a deadline: the thread ends early only if start failed.
        thread.join(timeout=0.02)
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the keepdesk test server did not start")
    try:
        yield live
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@dataclass
class Watched:
    """What the page did that a test wants to know: every request, the ones that were about to
    leave for another host (stopped there), dialogs, console errors."""

    requests: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def watched() -> Watched:
    return Watched()


@pytest.fixture
def page(chromium: Browser, live_server: LiveServer, watched: Watched) -> Iterator[Page]:
    context = chromium.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 800}
    )
    context.set_default_timeout(10_000)
    own = f"{live_server.url}/"

    def leave(route: Any) -> None:
        # Reached only by requests the browser really sends (a CSP-blocked one never gets here).
        watched.elsewhere.append(route.request.url)
        route.abort()

    context.route(lambda url: not url.startswith(own), leave)
    tab = context.new_page()
    tab.on("request", lambda request: watched.requests.append(request.url))

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", on_dialog)
    tab.on(
        "console",
        lambda message: watched.errors.append(message.text) if message.type == "error" else None,
    )
    tab.on("pageerror", lambda error: watched.errors.append(str(error)))
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Page, name: str) -> None:
    from playwright.sync_api import expect

    page.goto("/sign-in")
    page.get_by_label("Email address").fill(f"{name}@keepdesk.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="My tickets")).to_be_visible()
