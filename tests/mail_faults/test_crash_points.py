"""A fetcher killed with SIGKILL at each crash point, on the first, a middle and the last mail of
a folder, then run again: every mail becomes exactly one ticket, nothing is lost, and nothing was
moved or deleted on the server before its receipt was committed (RELIABILITY.md F1, AC-1, AC-5).

The killed process is the real `keepdesk mail fetch-once`, recording four mails to a transaction
(`mail_fetch_batch`) and acting on them on the server in one command, so the six mails of a
folder come in two batches: mail 1 starts the first, mail 3 is inside it, mail 6 ends the
second. The three folders of a crash point (k = 1, 3, 6)
are three mailboxes of one instance, killed side by side.
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
FETCH_BATCH = 4

# The points after a batch's commit, before (CP6) or amid (CP7) its server actions.
COMMITTED_AT_CRASH = {"CP6", "CP7"}
# The points reached once a batch (CP4: a batch's blobs are made durable together); the
# others once a mail, and CP1 once a pass.
ONCE_A_BATCH = {"CP4", "CP5", "CP6", "CP7"}


def fires_after(point: str, k: int) -> int:
    """How often the killed fetcher reaches `point` up to mail k."""
    if point == "CP1":
        return 1
    if point in ONCE_A_BATCH:
        return (k - 1) // FETCH_BATCH + 1
    return k


def left_at_crash(
    point: str, k: int, mails: list[str]
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Right after the kill on mail k: the mails done (committed, acted on and marked so), the
    mails committed, the mails still in the INBOX, and those flagged deleted there."""
    if point == "CP1":  # the first k-1 mails came in an earlier, finished pass
        return mails[: k - 1], mails[: k - 1], mails[k - 1 :], []
    first = (k - 1) // FETCH_BATCH * FETCH_BATCH  # where mail k's batch starts
    batch = mails[first : first + FETCH_BATCH]
    done = mails[:first]
    if point == "CP6":
        return done, done + batch, mails[first:], []
    if point == "CP7":  # between UID STORE \Deleted and UID EXPUNGE of the batch
        return done, done + batch, mails[first:], batch
    return done, done, mails[first:], []


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
                after=fires_after(point, b.k),
                env={"KEEPDESK_MAIL_FETCH_BATCH": str(FETCH_BATCH)},
            )
            for b in batches
        )
    )
    for b, finished in zip(batches, runs, strict=True):
        assert killed(finished), f"k={b.k}: {finished.returncode}\n{finished.output}"

    # Right after the kill: earlier batches are done, mail k's batch is where the point left it.
    for b in batches:
        db, server = await assert_nothing_lost_or_doubled(
            runtime, b.account, b.mailbox.id, b.expected
        )
        done, committed_now, inbox_now, deleted = left_at_crash(point, b.k, b.expected)
        assert sorted(db.receipts) == sorted(committed_now), f"k={b.k}"
        marked_done = [mid for mid, rs in db.receipts.items() if all(r.imap_done for r in rs)]
        assert sorted(marked_done) == sorted(done), f"k={b.k}"
        in_inbox = {h.message_id: h.flags for h in server if h.folder == "INBOX"}
        assert sorted(in_inbox) == sorted(inbox_now), f"k={b.k}"
        deleted_flag = {mid for mid, flags in in_inbox.items() if "\\Deleted" in flags}
        assert deleted_flag == set(deleted), f"k={b.k}"

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
