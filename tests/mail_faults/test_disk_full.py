"""The blob store's disk fills up while mail comes in: the pass stops with the reason, nothing of
the batch is recorded and nothing is touched on the server; once there is room again, the next
pass brings every mail in once (RELIABILITY.md F12, AC-25).

The full disk is a real one: a 1 MiB tmpfs holding the blob store, filled up by a file. Mounting
it needs root, as CI has.
"""

from __future__ import annotations

import dataclasses
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepdesk.blobs import BlobStore
from keepdesk.mail.fetcher import fetch_once
from keepdesk.mail.models import Mailbox
from keepdesk.runtime import Runtime
from tests.mail_faults.conftest import (
    add_box,
    assert_each_mail_once,
    assert_nothing_lost_or_doubled,
    deliver,
)
from tests.mail_fetch.conftest import ImapAccount
from tests.support.services import missing


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "small-disk"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "keepdesk-test", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        missing(
            f"a full disk here is a small tmpfs, and mounting one failed (root only): "
            f"{mounted.stderr.strip()}"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the file system has no room left."""
    with path.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 16384)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


async def test_a_full_disk_stops_the_pass_with_nothing_recorded_and_nothing_touched(
    runtime: Runtime, imap_account: ImapAccount, small_disk: Path
) -> None:
    expected = await deliver(imap_account, "f12", 4)
    on_small_disk = dataclasses.replace(runtime, blobs=BlobStore(small_disk / "blobs"))
    box = await add_box(runtime, address="support@example.com", imap_url=imap_account.url)
    filler = small_disk / "filler"
    fill(filler)

    report = await fetch_once(on_small_disk, box.id)

    assert report.ingested == 0 and report.errors != []
    assert "No space left on device" in report.errors[0]
    db, server = await assert_nothing_lost_or_doubled(on_small_disk, imap_account, box.id, expected)
    assert db.receipts == {} and not db.messages and not db.quarantined, "a partial row"
    assert all(h.folder == "INBOX" and not h.flags for h in server), "touched on the server"
    async with runtime.db.session() as session:
        stored = await session.get(Mailbox, box.id)
    assert stored is not None and stored.last_uid == 0
    assert stored.last_error is not None and "No space left on device" in stored.last_error

    filler.unlink()
    again = await fetch_once(on_small_disk, box.id)
    assert again.errors == [] and again.ingested == 4
    await assert_each_mail_once(on_small_disk, imap_account, box, expected)
