"""The blob store's batch writes (`BlobStore.put_many`, the fetcher's): the same keys and bytes
as one `put` a blob, duplicates and blobs already there written once, nothing half-written left
behind, with either way of making the batch durable."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from keepdesk import blobs
from keepdesk.blobs import BlobStore


@dataclass
class Way:
    name: str
    syncfs_calls: list[int] = field(default_factory=list)


def _stray_files(root: Path) -> list[Path]:
    return list(root.rglob(".tmp-*"))


@pytest.fixture(params=["syncfs", "fsync each"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Way:
    """Each way of making a batch durable; the syncfs calls counted."""
    chosen = Way(str(request.param))
    if chosen.name == "syncfs":
        syncfs = blobs._SYNCFS
        if syncfs is None:
            pytest.skip("syncfs is Linux's")

        def counted(fd: int) -> int:
            chosen.syncfs_calls.append(fd)
            return int(syncfs(fd))

        monkeypatch.setattr(blobs, "_SYNCFS", counted)
        monkeypatch.setattr(blobs, "SYNCFS_MAX_DIRTY", 1 << 62)
        monkeypatch.setattr(blobs, "_filesystem_type", lambda root: "ext4")
    else:
        monkeypatch.setattr(blobs, "SYNCFS_MAX_DIRTY", -1)
    return chosen


def test_a_batch_is_stored_as_single_puts_would_store_it(tmp_path: Path, way: Way) -> None:
    store = BlobStore(tmp_path / "blobs")
    items = [b"first mail", b"second mail", b"first mail", os.urandom(70_000)]
    already = store.put(b"second mail")

    keys = store.put_many(items)

    assert keys == [hashlib.sha256(i).hexdigest() for i in items]
    assert keys[1] == already
    assert [store.get(k) for k in keys] == items
    assert len({p for p in (tmp_path / "blobs").rglob("*") if p.is_file()}) == 3
    assert _stray_files(tmp_path / "blobs") == []
    # The data, then the renames: two syncs for the batch, not two a blob.
    assert len(way.syncfs_calls) == (2 if way.name == "syncfs" else 0)


def test_a_batch_with_nothing_new_writes_nothing(tmp_path: Path, way: Way) -> None:
    store = BlobStore(tmp_path / "blobs")
    key = store.put(b"kept")
    before = store.path_for(key).stat().st_mtime_ns

    assert store.put_many([b"kept", b"kept"]) == [key, key]
    assert store.put_many([]) == []
    assert store.path_for(key).stat().st_mtime_ns == before
    assert way.syncfs_calls == []


def test_a_busy_disk_or_a_network_filesystem_gets_an_fsync_a_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """syncfs would wait on everything else waiting to be written, or might not reach the
    server of a network filesystem: there, each blob is fsynced."""
    calls: list[int] = []

    def counted(fd: int) -> int:
        calls.append(fd)
        return 0

    monkeypatch.setattr(blobs, "_SYNCFS", counted)
    store = BlobStore(tmp_path / "blobs")

    monkeypatch.setattr(blobs, "_filesystem_type", lambda root: "nfs4")
    monkeypatch.setattr(blobs, "SYNCFS_MAX_DIRTY", 1 << 62)
    store.put_many([b"over the network"])
    monkeypatch.setattr(blobs, "_filesystem_type", lambda root: "ext4")
    monkeypatch.setattr(blobs, "SYNCFS_MAX_DIRTY", -1)
    store.put_many([b"on a busy disk"])
    assert calls == []

    monkeypatch.setattr(blobs, "SYNCFS_MAX_DIRTY", 1 << 62)
    store.put_many([b"on a quiet local disk"])
    assert len(calls) == 2


@pytest.mark.parametrize("failing", ["syncfs", "fsync each"])
def test_a_failed_sync_leaves_no_blob_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """When the data cannot be made durable, no blob appears under its key: a later mail that
    points at it could otherwise find it empty after a crash."""
    store = BlobStore(tmp_path / "blobs")
    if failing == "syncfs":

        def failing_syncfs(fd: int) -> int:
            ctypes.set_errno(errno.EIO)
            return -1

        monkeypatch.setattr(blobs, "_SYNCFS", failing_syncfs)
        monkeypatch.setattr(blobs, "SYNCFS_MAX_DIRTY", 1 << 62)
        monkeypatch.setattr(blobs, "_filesystem_type", lambda root: "ext4")
    else:

        def failing_fsyncs(paths: object) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(blobs, "SYNCFS_MAX_DIRTY", -1)
        monkeypatch.setattr(blobs, "_fsync_each", failing_fsyncs)
    with pytest.raises(OSError, match="Input/output error"):
        store.put_many([b"one", b"two"])

    assert not store.exists(hashlib.sha256(b"one").hexdigest())
    assert not store.exists(hashlib.sha256(b"two").hexdigest())
    assert _stray_files(tmp_path / "blobs") == []


def test_the_filesystem_type_is_that_of_the_nearest_mount_point(tmp_path: Path) -> None:
    mounts = Path("/proc/self/mounts")
    if not mounts.is_file():
        pytest.skip("no /proc/self/mounts (not Linux)")
    blobs._filesystem_type.cache_clear()
    assert blobs._filesystem_type(Path("/proc")) == "proc"
    assert blobs._filesystem_type(tmp_path) is not None
