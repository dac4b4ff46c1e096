"""A sender killed (SIGKILL) at each of its crash points, then started again: every reply is
delivered, and a second copy can only follow a kill after the message went out, with the same
Message-ID (RELIABILITY.md F1, CP8-CP10)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from keepdesk import faults
from keepdesk.outbox.models import DeliveryStatus, OutboxMessage
from keepdesk.runtime import Runtime
from tests.conftest import World
from tests.mail_delivery.conftest import Sink, add_mailbox, send_due
from tests.mail_delivery.test_delivery import reply, support_ticket
from tests.support.clock import FakeClock

SENDER = """
import asyncio
from keepdesk.config import load_settings
from keepdesk.mail import delivery
from keepdesk.runtime import Runtime

async def main() -> None:
    async with Runtime.from_settings(load_settings()) as runtime:
        await delivery.send_due(runtime, holder="doomed-sender")

asyncio.run(main())
"""


async def run_sender_until_killed(runtime: Runtime, crash_point: str) -> int:
    settings = runtime.settings
    env = {
        "PATH": os.environ.get("PATH", ""),
        "KEEPDESK_DATA_DIR": str(settings.data_dir),
        "KEEPDESK_DATABASE_URL": settings.effective_database_url,
        "KEEPDESK_SECRET_KEY": runtime.secret.decode(),
        "KEEPDESK_FAULT": crash_point,
        "KEEPDESK_FAULTS_ENABLED": "1",
    }
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", SENDER, env=env)
    return await asyncio.wait_for(process.wait(), timeout=60)


async def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("crash_point", "copies"),
    [
        ("CP8", 1),  # claimed, nothing sent yet
        ("CP9", 2),  # the message and its "." are out; the answer was never read
        ("CP10", 2),  # the server said 250; the row still says sending
    ],
)
async def test_a_sender_killed_mid_delivery_is_resumed_with_the_same_message_id(
    world: World,
    runtime: Runtime,
    sink: Sink,
    clock: FakeClock,
    crash_point: str,
    copies: int,
) -> None:
    await add_mailbox(runtime, port=sink.port, team_id=world.ids["support"])
    number = await support_ticket(world)
    await reply(world.client("dave"), number)

    assert await run_sender_until_killed(runtime, crash_point) == -signal.SIGKILL

    await wait_for(lambda: len(sink.received) == copies - 1)
    async with runtime.db.session() as session:
        row = await session.scalar(select(OutboxMessage))
    assert row is not None and row.status == DeliveryStatus.sending
    assert row.claimed_until is not None
    # The dead sender's claim runs out; the next pass takes the row as possibly delivered.
    clock.advance(seconds=(row.claimed_until - clock.now()).total_seconds() + 1)
    assert await send_due(runtime) == 1

    async with runtime.db.session() as session:
        row = await session.scalar(select(OutboxMessage))
    assert row is not None and row.status == DeliveryStatus.sent
    assert len(sink.received) == copies
    assert {r.message["Message-ID"] for r in sink.received} == {row.message_id_header}


def test_a_crash_point_alone_is_refused_so_one_stray_variable_cannot_kill_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEPDESK_FAULT", "CP9")
    with pytest.raises(RuntimeError, match="not enabled"):
        faults.crash_point("CP9")

    monkeypatch.setenv("KEEPDESK_FAULTS_ENABLED", "1")
    faults.crash_point("CP10")  # armed, but for another point: carries on

    monkeypatch.delenv("KEEPDESK_FAULT")
    faults.crash_point("CP9")
