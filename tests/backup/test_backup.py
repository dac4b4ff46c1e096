"""Backups a sysadmin can trust: taken while keepdesk runs, verified before they count,
restorable into SQLite or PostgreSQL, and loud when anything is wrong."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keepdesk.backup import crypto
from keepdesk.backup import service as backups
from keepdesk.blobs import BlobStore
from keepdesk.db import Database
from keepdesk.errors import Conflict
from keepdesk.metadata import metadata
from keepdesk.runtime import Runtime
from tests.conftest import World, open_ticket


async def _some_work(world: World) -> dict[str, object]:
    dave = world.client("dave")
    attachment = {
        "filename": "invoice.pdf",
        "content_type": "application/pdf",
        "content_base64": base64.b64encode(b"%PDF-1.4 bytes").decode(),
    }
    ticket = await open_ticket(dave, attachments=[attachment])
    number = ticket["number"]
    await dave.post(f"/api/v1/tickets/{number}/messages", json={"kind": "note", "body": "Hm."})
    await dave.patch(f"/api/v1/tickets/{number}", json={"status": "pending"})
    return ticket


async def test_backup_verify_restore_round_trip_keeps_everything(
    world: World, runtime: Runtime, tmp_path: Path
) -> None:
    ticket = await _some_work(world)
    archive = tmp_path / "backup.tar"
    manifest = await backups.create_backup(
        db=runtime.db, blobs=runtime.blobs, output=archive, now=runtime.clock.now()
    )
    assert archive.is_file() and not (tmp_path / "backup.tar.partial").exists()
    assert manifest.counts["tickets"] == 1 and manifest.blob_count == 1
    before = await backups.count_rows(runtime.db)

    report = await backups.verify_by_restoring(archive, passphrase=None, private_key=None)
    assert report.startswith("ok:")

    # Into a fresh SQLite instance, whatever the source was.
    target = Database(f"sqlite+aiosqlite:///{tmp_path / 'restored.sqlite3'}")
    try:
        await backups.restore_backup(
            db=target,
            blobs=BlobStore(tmp_path / "blobs"),
            archive=archive,
            data_dir=tmp_path / "data",
        )
        assert await backups.count_rows(target) == before
    finally:
        await target.dispose()
    assert (tmp_path / "blobs").rglob("*").__next__()
    assert ticket["number"] >= 1000


async def test_a_flipped_byte_is_caught(world: World, runtime: Runtime, tmp_path: Path) -> None:
    await _some_work(world)
    archive = tmp_path / "backup.tar"
    await backups.create_backup(
        db=runtime.db, blobs=runtime.blobs, output=archive, now=runtime.clock.now()
    )
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name == "db/tickets.jsonl")
    data[member.offset_data + 5] ^= 0x01
    archive.write_bytes(bytes(data))
    with pytest.raises(backups.BackupError, match=r"checksum mismatch in db/tickets\.jsonl"):
        backups.verify_archive(archive)


async def test_encrypted_backups_need_their_passphrase_or_key(
    world: World, runtime: Runtime, tmp_path: Path
) -> None:
    await _some_work(world)
    sealed = tmp_path / "backup.tar.kdenc"
    await backups.create_backup(
        db=runtime.db,
        blobs=runtime.blobs,
        output=sealed,
        now=runtime.clock.now(),
        passphrase="correct horse battery",
    )
    assert b"Printer on fire" not in sealed.read_bytes()
    assert backups.verify_archive(sealed, passphrase="correct horse battery") is not None
    with pytest.raises(crypto.BackupKeyError):
        backups.verify_archive(sealed, passphrase="wrong horse battery")
    truncated = tmp_path / "truncated.kdenc"
    truncated.write_bytes(sealed.read_bytes()[:-100])
    with pytest.raises((crypto.BackupKeyError, backups.BackupError)):
        backups.verify_archive(truncated, passphrase="correct horse battery")

    public, private = crypto.generate_keypair()
    for_key = tmp_path / "for-key.kdenc"
    await backups.create_backup(
        db=runtime.db,
        blobs=runtime.blobs,
        output=for_key,
        now=runtime.clock.now(),
        public_key=public,
    )
    assert backups.verify_archive(for_key, private_key=private) is not None
    _, other_private = crypto.generate_keypair()
    with pytest.raises(crypto.BackupKeyError):
        backups.verify_archive(for_key, private_key=other_private)


async def test_restore_refuses_an_instance_with_data(
    world: World, runtime: Runtime, tmp_path: Path
) -> None:
    await _some_work(world)
    archive = tmp_path / "backup.tar"
    await backups.create_backup(
        db=runtime.db, blobs=runtime.blobs, output=archive, now=runtime.clock.now()
    )
    with pytest.raises(Conflict, match="already holds data"):
        await backups.restore_backup(
            db=runtime.db, blobs=runtime.blobs, archive=archive, data_dir=tmp_path / "data"
        )
    before = await backups.count_rows(runtime.db)
    await backups.restore_backup(
        db=runtime.db, blobs=runtime.blobs, archive=archive, data_dir=tmp_path / "data", force=True
    )
    assert await backups.count_rows(runtime.db) == before


def test_every_blob_column_is_backed_up() -> None:
    named = {
        (t.name, c.name) for t in metadata.sorted_tables for c in t.columns if "blob" in c.name
    }
    assert named == set(backups.BLOB_COLUMNS)


@contextlib.contextmanager
def tiny_filesystem(size: str) -> Iterator[Path]:
    path = Path(f"/tmp/keepdesk-full-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=False)
    finally:
        path.rmdir()


async def test_a_backup_that_runs_out_of_disk_leaves_nothing_and_keeps_the_last_good_one(
    world: World, runtime: Runtime, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    await _some_work(world)
    big = {
        "filename": "big.bin",
        "content_type": "application/octet-stream",
        "content_base64": base64.b64encode(os.urandom(400_000)).decode(),
    }
    await open_ticket(world.client("dave"), attachments=[big])
    with tiny_filesystem("256k") as disk:
        good = disk / "small-enough.tar"
        good.write_bytes(b"the previous verified backup")
        with pytest.raises(OSError):
            await backups.create_backup(
                db=runtime.db, blobs=runtime.blobs, output=disk / "new.tar", now=runtime.clock.now()
            )
        assert sorted(p.name for p in disk.iterdir()) == ["small-enough.tar"]
        assert good.read_bytes() == b"the previous verified backup"


async def test_search_finds_restored_tickets(
    world: World, runtime: Runtime, tmp_path: Path
) -> None:
    """The search index is not in the archive (it is derived and dialect-specific); a restore
    rebuilds it, so restored tickets are found."""
    await open_ticket(world.client("dave"), subject="Quarterly zeppelin invoice")
    archive = tmp_path / "backup.tar"
    await backups.create_backup(
        db=runtime.db, blobs=runtime.blobs, output=archive, now=runtime.clock.now()
    )
    target = Database(f"sqlite+aiosqlite:///{tmp_path / 'restored.sqlite3'}")
    try:
        await backups.restore_backup(
            db=target,
            blobs=BlobStore(tmp_path / "blobs"),
            archive=archive,
            data_dir=tmp_path / "data",
        )
        async with target.session() as session:
            from keepdesk.accounts.auth import actor_for_agent
            from keepdesk.tickets import search

            alice = await actor_for_agent(session, world.ids["alice"])
            page = await search.search_tickets(
                session, actor=alice, query="zeppelin", cursor=None, limit=10
            )
        assert [t.subject for t in page.items] == ["Quarterly zeppelin invoice"]
    finally:
        await target.dispose()
