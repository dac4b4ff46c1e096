"""A fetcher killed with SIGKILL at each crash point, on the first, a middle and the last mail of
a batch, then run again: every mail becomes exactly one ticket, nothing is lost, and nothing was
moved or deleted on the server before its receipt was committed (RELIABILITY.md F1, AC-1, AC-5).

The killed process is the real `keepdesk mail fetch-once`; the three batches of a crash point
(k = 1, 3, 6) are three mailboxes of one instance, killed side by side.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest

from keepdesk import faults
from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.models import Mailbox, ProcessedAction
from keepdesk.runtime import Runtime
from tests.mail_faults.conftest import (
    add_box,
    assert_each_mail_once,
    assert_nothing_lost_or_doubled,
    deliver,
    keepdesk,
    killed,
)
from tests.mail_fetch.conftest import ImapAccount
from tests.support.dovecot import DovecotServer

BATCH = 6
KS = (1, 3, 6)

# Where each point leaves mail k: is its receipt committed, and what did the server see?
COMMITTED_AT_CRASH = {"CP6", "CP7"}


@dataclass
class Batch:
    k: int
    account: ImapAccount
    mailbox: Mailbox
    expected: list[str]


@pytest.mark.parametrize("point", ["CP1", "CP2", "CP3", "CP4", "CP5", "CP6", "CP7"])
async def test_a_fetcher_killed_at_a_crash_point_loses_nothing_and_doubles_nothing(
    runtime: Runtime, dovecot: DovecotServer, point: str
) -> None:
    # CP7 sits between UID STORE \Deleted and UID EXPUNGE: only deleting reaches it.
    action = ProcessedAction.delete if point == "CP7" else ProcessedAction.move
    run = uuid.uuid4().hex[:8]
    batches: list[Batch] = []
    for k in KS:
        account = ImapAccount(server=dovecot, user=f"{point.lower()}-k{k}-{run}@example.com")
        expected = await deliver(account, f"{point.lower()}k{k}{run}", BATCH)
        box = await add_box(
            runtime, address=f"support-k{k}@example.com", imap_url=account.url, action=action
        )
        if point == "CP1" and k > 1:
            # CP1 comes once per pass, after SELECT: the first k-1 mails came in an earlier pass.
            assert (await fetch_once(runtime, box.id, max_messages=k - 1)).ingested == k - 1
        batches.append(Batch(k, account, box, expected))

    runs = await asyncio.gather(
        *(
            keepdesk(
                runtime.settings,
                "mail",
                "fetch-once",
                "--mailbox",
                b.mailbox.address,
                fault=point,
                after=1 if point == "CP1" else b.k,
            )
            for b in batches
        )
    )
    for b, finished in zip(batches, runs, strict=True):
        assert killed(finished), f"k={b.k}: {finished.returncode}\n{finished.output}"

    # Right after the kill: mails 1..k-1 are done, mail k is where the point left it.
    for b in batches:
        db, server = await assert_nothing_lost_or_doubled(
            runtime, b.account, b.mailbox.id, b.expected
        )
        done = b.expected[: b.k - 1]
        crashed_on = b.expected[b.k - 1]
        committed_now = done + ([crashed_on] if point in COMMITTED_AT_CRASH else [])
        assert sorted(db.receipts) == sorted(committed_now), f"k={b.k}"
        acted_on = [mid for mid, rs in db.receipts.items() if all(r.imap_done for r in rs)]
        assert sorted(acted_on) == sorted(done), f"k={b.k}"
        in_inbox = {h.message_id: h.flags for h in server if h.folder == "INBOX"}
        assert sorted(in_inbox) == sorted(b.expected[b.k - 1 :]), f"k={b.k}"
        deleted_flag = {mid for mid, flags in in_inbox.items() if "\\Deleted" in flags}
        assert deleted_flag == ({crashed_on} if point == "CP7" else set()), f"k={b.k}"

    # Started again without the fault: the pass finishes what the dead one left.
    for b in batches:
        report = await fetch_once(runtime, b.mailbox.id)
        assert report.errors == [], f"k={b.k}"
        await assert_each_mail_once(runtime, b.account, b.mailbox, b.expected)


COUNTING = """
from keepdesk.faults import crash_point
for n in range(1, 4):
    crash_point("CP3")
    print(n, flush=True)
"""


@pytest.mark.parametrize(("after", "printed"), [("1", ""), ("3", "1\n2\n")])
def test_a_crash_point_fires_the_nth_time_it_is_reached(after: str, printed: str) -> None:
    env = {"KEEPDESK_FAULTS_ENABLED": "1", "KEEPDESK_FAULT": "CP3", "KEEPDESK_FAULT_AFTER": after}
    done = subprocess.run(
        [sys.executable, "-c", COUNTING], env=env, capture_output=True, text=True, timeout=30
    )
    assert (done.returncode, done.stdout) == (-signal.SIGKILL, printed), done.stderr


def test_a_crash_count_is_refused_without_faults_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPDESK_FAULT", "CP3")
    monkeypatch.setenv("KEEPDESK_FAULT_AFTER", "2")
    with pytest.raises(RuntimeError, match="not enabled"):
        faults.crash_point("CP3")
    monkeypatch.setenv("KEEPDESK_FAULTS_ENABLED", "1")
    monkeypatch.setenv("KEEPDESK_FAULT_AFTER", "0")
    with pytest.raises(RuntimeError, match="KEEPDESK_FAULT_AFTER"):
        faults.crash_point("CP3")
