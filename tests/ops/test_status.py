"""`GET /api/v1/status`: what an admin checks first, in one answer; and `/readyz` reporting the
backups' state without ever failing readiness for it."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from keepdesk.audit.service import COMMAND_LINE
from keepdesk.backup import schedule
from keepdesk.mail import mailboxes
from keepdesk.mail.fetcher import fetch_once
from keepdesk.runtime import Runtime
from keepdesk.workers.registry import Task
from keepdesk.workers.runner import run_workers
from tests.conftest import World, open_ticket

NO_BACKUP = "no verified backup within twice the schedule"


async def status_of(world: World, name: str = "alice") -> dict[str, Any]:
    response = await world.client(name).get("/api/v1/status")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_only_admins_see_the_status(world: World, anonymous: httpx.AsyncClient) -> None:
    bob = await world.client("bob").get("/api/v1/status")
    assert (bob.status_code, bob.json()["error"]["code"]) == (403, "admin_only")
    nobody = await anonymous.get("/api/v1/status")
    assert (nobody.status_code, nobody.json()["error"]["code"]) == (401, "unauthenticated")


async def test_a_new_instance_has_one_problem_no_backup_yet(
    world: World, anonymous: httpx.AsyncClient
) -> None:
    status = await status_of(world)
    assert status["problems"] == [f"backup: {NO_BACKUP}"]
    assert status["backup"]["enabled"] is True
    assert status["backup"]["last_ok_at"] is None
    assert status["backup"]["problems"] == [NO_BACKUP]
    assert status["mailboxes"] == []
    assert status["undelivered"] == {
        "queued": 0,
        "sending": 0,
        "retrying": 0,
        "uncertain": 0,
        "failed": 0,
    }
    # This app runs no background tasks (the tests start it without workers).
    assert status["tasks"] == {}

    ready = await anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "checks": {"database": "ok", "migrations": "ok", "backup": NO_BACKUP},
    }


async def test_after_a_verified_backup_and_a_drill_all_is_well(
    world: World, runtime: Runtime, anonymous: httpx.AsyncClient
) -> None:
    await schedule.take_backup(runtime)
    await schedule.maybe_drill(runtime)
    status = await status_of(world)
    assert status["problems"] == []
    assert status["backup"]["last_ok_path"].startswith(str(runtime.settings.backups_dir))
    assert status["backup"]["last_drill_at"] is not None
    ready = await anonymous.get("/readyz")
    assert (ready.status_code, ready.json()["checks"]["backup"]) == (200, "ok")


async def test_a_failed_backup_shows_but_the_instance_stays_ready(
    world: World, runtime: Runtime, anonymous: httpx.AsyncClient, tmp_path: Path
) -> None:
    # Where the backups should go, a file stands: the folder cannot be made.
    (tmp_path / "not-a-folder").write_text("")
    blocked = runtime.settings.model_copy(
        update={"backup_dir": tmp_path / "not-a-folder" / "backups"}
    )
    await schedule.take_backup(dataclasses.replace(runtime, settings=blocked))
    status = await status_of(world)
    assert status["backup"]["last_failure"].startswith(("FileExistsError", "NotADirectoryError"))
    assert (
        f"backup: the last backup failed: {status['backup']['last_failure']}" in status["problems"]
    )
    ready = await anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"
    assert "the last backup failed: " in ready.json()["checks"]["backup"]


async def test_a_mailbox_that_cannot_be_fetched_shows_with_its_error(
    world: World, runtime: Runtime
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    async with runtime.db.session(write=True) as session:
        box = await mailboxes.add_mailbox(
            session,
            by=COMMAND_LINE,
            address="help@acme.example",
            imap_url=f"imap://help:pw@127.0.0.1:{closed}/INBOX",
            smtp_url=f"smtp://127.0.0.1:{closed}",
            secret=runtime.secret,
            now=runtime.clock.now(),
        )
        await session.commit()
    report = await fetch_once(runtime, box.id)
    assert report.errors

    status = await status_of(world)
    [seen] = status["mailboxes"]
    assert (seen["address"], seen["is_active"], seen["alert"]) == ("help@acme.example", True, None)
    assert seen["fetch_log"]["last_error"] == report.errors[0]
    assert seen["fetch_log"]["last_success_at"] is None
    assert f"help@acme.example: fetching fails: {report.errors[0]}" in status["problems"]


async def test_undelivered_replies_are_counted_by_state(world: World) -> None:
    alice = world.client("alice")
    for _ in range(2):
        ticket = await open_ticket(alice)
        reply = await alice.post(
            f"/api/v1/tickets/{ticket['number']}/messages",
            json={"kind": "reply", "body": "We are on it."},
        )
        assert reply.status_code == 201, reply.text
    status = await status_of(world)
    assert status["undelivered"]["queued"] == 2
    assert sum(status["undelivered"].values()) == 2


async def _always_fails(runtime: Runtime) -> None:
    raise ConnectionError("the mail server said no")


async def test_a_failing_background_task_shows(world: World, runtime: Runtime) -> None:
    stop = asyncio.Event()
    task = Task("always-fails", _always_fails, timedelta(hours=1), exclusive=False)
    workers = asyncio.create_task(run_workers(runtime, stop, (task,)))
    try:
        deadline = time.monotonic() + 10
        while "always-fails" not in runtime.tasks or not runtime.tasks["always-fails"].last_error:
            assert time.monotonic() < deadline, "the task never ran"
            await asyncio.sleep(0.01)  # polling, bounded by the deadline
    finally:
        stop.set()
        await workers
    status = await status_of(world)
    failing = status["tasks"]["always-fails"]
    assert failing["failures_in_a_row"] == 1
    assert failing["last_error"] == "ConnectionError: the mail server said no"
    assert failing["last_success_at"] is None
    assert (
        "task always-fails: 1 failures in a row, last: ConnectionError: the mail server said no"
        in status["problems"]
    )


async def test_tasks_run_by_another_process_of_the_machine_show(
    world: World, runtime: Runtime
) -> None:
    """`serve --no-workers` beside `keepdesk worker`, or a serving process of
    `serve --processes N` other than the first: the state comes from the one that runs them."""
    stop = asyncio.Event()
    task = Task("always-fails", _always_fails, timedelta(hours=1), exclusive=False)
    async with Runtime.from_settings(runtime.settings, clock=runtime.clock) as worker:
        workers = asyncio.create_task(run_workers(worker, stop, (task,)))
        try:
            deadline = time.monotonic() + 10
            while not worker.tasks_file.exists():
                assert time.monotonic() < deadline, "the task never ran"
                await asyncio.sleep(0.01)  # polling, bounded by the deadline
        finally:
            stop.set()
            await workers
    assert not runtime.runs_tasks and not runtime.tasks
    status = await status_of(world)
    assert status["tasks"]["always-fails"]["last_error"] == (
        "ConnectionError: the mail server said no"
    )
    assert status["tasks"]["always-fails"]["last_failure_at"] is not None
    assert any(p.startswith("task always-fails: 1 failures") for p in status["problems"])

    # A file that cannot be read is no state, not a failed status page.
    runtime.tasks_file.write_text("{not json")
    assert (await status_of(world))["tasks"] == {}


async def test_metrics_name_the_route_with_its_api_prefix(world: World, app: FastAPI) -> None:
    await status_of(world)
    await world.client("bob").get("/api/v1/tickets/1042")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keepdesk.test"
    ) as client:
        metrics = (await client.get("/metrics")).text
    assert (
        'keepdesk_http_requests_total{method="GET",route="/api/v1/status",status="200"} 1.0'
        in metrics
    )
    assert 'route="/api/v1/tickets/{number}",status="404"' in metrics
