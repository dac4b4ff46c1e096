"""`keepdesk serve --processes 2` on SQLite, as a sysadmin runs it: one port, two serving
processes under a supervisor. Whichever process a request reaches, the answer is the same:
presence crosses them (Unix datagram sockets in the data directory), the status shows the
background tasks that run in the first, and /metrics counts every process's requests. A
serving process that dies is started again; SIGTERM stops them all.

Requests go out on fresh connections (`Connection: close`), so the kernel hands each to
whichever process accepts first, as it does with many browsers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.support import processes
from tests.web.conftest import csrf_of

FRESH = {"Connection": "close"}
# Enough requests on fresh connections that two processes both answer some (seen: about half
# each); a process that never answered fails the test that needs both.
SPREAD = 40


@dataclass
class Served:
    running: processes.Running
    base: str
    token: str

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.running.log().splitlines() if line.strip()]

    def serving_pids(self) -> set[int]:
        return set(processes.spawned_children(self.running.pid))

    def answered_by(self) -> set[int]:
        return {e["pid"] for e in self.entries() if e["logger"] == "keepdesk.requests"}


def _serve(tmp_path: Path) -> Iterator[Served]:
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    env = processes.environment(
        KEEPDESK_DATA_DIR=str(tmp_path / "data"),
        KEEPDESK_SERVER_BASE_URL=base,
        KEEPDESK_BACKUP_EVERY_HOURS="0",
    )
    processes.ok(processes.keepdesk("upgrade", "--no-backup", env=env))
    for name in ("alice", "carol"):
        created = processes.keepdesk(
            *("user", "create", f"{name}@keepdesk.test", "--name", f"{name.title()} Admin"),
            *("--role", "admin", "--password-stdin"),
            env=env,
            stdin=PASSWORD,
        )
        processes.ok(created)
    token = processes.ok(processes.keepdesk("token", "create", "alice@keepdesk.test", env=env))
    token = token.strip()
    running = processes.start(
        [
            *(processes.KEEPDESK, "serve", "--port", str(port)),
            *("--processes", "2", "--log-format", "json"),
        ],
        env=env,
        log_path=tmp_path / "serve.log",
    )
    try:
        processes.wait_until_healthy(running, f"{base}/healthz")
        served = Served(running, base, token)
        # /healthz answers once the first process serves; the supervisor says when all do.
        _wait("every process serving", lambda: "with 2 processes" in running.log())
        yield served
    finally:
        running.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    if "sqlite" not in os.environ.get("KEEPDESK_TEST_DATABASES", "sqlite"):
        pytest.skip("KEEPDESK_TEST_DATABASES leaves SQLite out")
    yield from _serve(tmp_path)


async def _sign_in(base: str, name: str) -> tuple[httpx.AsyncClient, str]:
    """A browser session; each of its requests on a connection of its own."""
    client = httpx.AsyncClient(base_url=base, headers=FRESH, timeout=10)
    form = await client.get("/sign-in")
    response = await client.post(
        "/sign-in",
        data={
            "email": f"{name}@keepdesk.test",
            "password": PASSWORD,
            "csrf_token": csrf_of(form.text),
        },
    )
    assert response.status_code == 303, response.text
    account = await client.get("/account")
    return client, csrf_of(account.text)


def _wait(what: str, done: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds:.0f}s"
        time.sleep(0.1)  # polling, bounded by the deadline


async def test_both_processes_answer_and_every_answer_is_the_whole_truth(served: Served) -> None:
    children = served.serving_pids()
    assert len(children) == 2
    auth = {"Authorization": f"Bearer {served.token}", **FRESH}
    async with httpx.AsyncClient(base_url=served.base, timeout=10) as client:
        gate = asyncio.Semaphore(4)

        async def health() -> None:
            async with gate:
                assert (await client.get("/healthz", headers=FRESH)).status_code == 200

        # Which process accepts a connection is the kernel's choice: on a busy machine one of
        # them can take forty in a row, so rounds of them go out until both have answered.
        for _ in range(10):
            await asyncio.gather(*(health() for _ in range(SPREAD)))
            if served.answered_by() == children:
                break
        assert served.answered_by() == children, "both processes answered"

        # Counts add up over the processes, whichever answers the scrape.
        for _ in range(6):
            text = (await client.get("/metrics", headers=FRESH)).text
            counted = re.search(
                r'keepdesk_http_requests_total\{method="GET",route="/healthz",status="200"\} '
                r"([0-9.]+)",
                text,
            )
            assert counted is not None, text
            # The fixture's own wait polled /healthz too, until the first 200.
            assert float(counted.group(1)) >= SPREAD + 1

        # The background tasks run in the first process; every process reports them.
        for _ in range(6):
            status = (await client.get("/api/v1/status", headers=auth)).json()
            assert {"fetch-mail", "send-mail"} <= status["tasks"].keys(), status

        # Presence: Alice's one heartbeat reaches one process; Carol sees her through both.
        ticket = await client.post(
            "/api/v1/tickets",
            headers=auth,
            json={
                "subject": "Printer on fire",
                "body": "It started smoking after the update.",
                "requester": {"email": "eve@customer.test", "name": "Eve Customer"},
            },
        )
        assert ticket.status_code == 201, ticket.text
    url = f"/tickets/{ticket.json()['number']}/presence"
    alice, alice_csrf = await _sign_in(served.base, "alice")
    carol, carol_csrf = await _sign_in(served.base, "carol")
    try:
        beat = await alice.post(url, data={"csrf_token": alice_csrf, "typing": "1"})
        assert beat.status_code == 200, beat.text
        seen = [(await carol.post(url, data={"csrf_token": carol_csrf})).text for _ in range(10)]
    finally:
        await alice.aclose()
        await carol.aclose()
    assert all("Alice Admin</strong> (typing a reply)" in page for page in seen), seen


def test_a_serving_process_that_dies_is_started_again(served: Served) -> None:
    first = served.serving_pids()
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    _wait("a new serving process", lambda: len(served.serving_pids() - {victim}) == 2)
    new = (served.serving_pids() - first).pop()
    _wait("the new process answering", lambda: new in _answered_after(served, SPREAD))
    assert any(
        "ended unasked" in e["message"] and str(victim) in e["message"] for e in served.entries()
    )

    assert served.running.stop() == 0
    remaining = served.serving_pids() | {p for p in first | {new} if Path(f"/proc/{p}").exists()}
    assert not remaining
    assert any(e["message"] == "all serving processes stopped" for e in served.entries())


def _answered_after(served: Served, requests: int) -> set[int]:
    for _ in range(requests):
        httpx.get(f"{served.base}/healthz", headers=FRESH, timeout=10)
    return served.answered_by()


def test_a_port_in_use_is_one_readable_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = processes.keepdesk(
            *("serve", "--port", str(port), "--processes", "2"),
            env=processes.environment(KEEPDESK_DATA_DIR=str(tmp_path / "data")),
        )
    assert done.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
