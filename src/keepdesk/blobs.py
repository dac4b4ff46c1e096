"""Content-addressed blob store for attachments and raw mail: `blobs/ab/cd/<sha256>`.

`put` returns only after the bytes and their directory entry are on disk (fsync), so the row
that points at a blob can be committed safely afterwards; `put_many` does the same for a batch
(the fetcher's) with two syncs in all instead of two a blob. Keys are always our own sha256
hex; no part of a path ever comes from message data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}$")

# `put_many` syncs the blob store's whole filesystem at once only while the machine has less
# than this waiting to be written anywhere: past it, the sync could wait on other programs'
# writes, and each blob is fsynced on its own instead.
SYNCFS_MAX_DIRTY = 64 * 1024 * 1024


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError("not a blob key")
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        """The blob's key, once its bytes and its directory entry are on disk (an fsync each)."""
        return self._put([data], together=False)[0]

    def _make_dirs(self, leaf: Path) -> list[Path]:
        """Create the fan-out directories; the parents of those created, deepest first."""
        missing = [d for d in (leaf.parent.parent, leaf.parent, leaf) if not d.exists()]
        created: list[Path] = []
        for directory in missing:
            directory.mkdir(parents=True, exist_ok=True)
            created.append(directory.parent)
        return list(reversed(created))

    def put_many(self, items: Sequence[bytes]) -> list[str]:
        """Each item's key, as `put` gives it, with all of them on disk when it returns.

        A blob a mail later points at must never be empty or cut short, so the order is `put`'s
        for the whole batch: every new blob written to a temporary file, the files made
        durable, renamed into place, the renames made durable. On Linux each "made durable" is
        one `syncfs` of the store's filesystem (`_syncing`): at 20 mails a batch that
        took the fetcher's blob writes from 43 to 11-14 ms a batch on this machine's disk,
        where every fsync is a flush of the device's cache."""
        return self._put(items, together=True)

    def _put(self, items: Sequence[bytes], *, together: bool) -> list[str]:
        keys = [hashlib.sha256(data).hexdigest() for data in items]
        written: dict[str, tuple[str, Path]] = {}  # key: temporary file, final path
        directories: dict[Path, None] = {}  # whose entries change, in order
        if not self.root.exists():  # the very first blob: `_syncing` opens the root
            self.root.mkdir(parents=True, exist_ok=True)
            directories[self.root.parent] = None
        with _syncing(self.root, together=together) as sync:
            try:
                for key, data in zip(keys, items, strict=True):
                    path = self.path_for(key)
                    if key in written or path.exists():
                        continue
                    created = self._make_dirs(path.parent)
                    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
                    written[key] = (tmp, path)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    directories.update(dict.fromkeys([path.parent, *created]))
                if not written:
                    return keys
                sync([Path(tmp) for tmp, _ in written.values()])
                placed = list(written.values())
                for tmp, path in placed:
                    os.replace(tmp, path)
                    del written[path.name]
                sync(list(directories))
            finally:
                for tmp, _ in written.values():  # those not renamed into place
                    Path(tmp).unlink(missing_ok=True)
        return keys

    def get(self, key: str) -> bytes:
        return self.path_for(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()


def _fsync_each(paths: Sequence[Path]) -> None:
    for path in paths:  # files and directories alike, opened read-only
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        syncfs: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return syncfs


_SYNCFS = _load_syncfs()


def _dirty_bytes() -> int | None:
    """What the kernel has waiting to be written (all filesystems): /proc/meminfo's Dirty."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"Dirty:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# The local filesystems whose `syncfs` writes every file's data and metadata, commits the
# journal and flushes the disk's cache. Elsewhere (NFS, FUSE, ...) each blob is fsynced.
_SYNCFS_FILESYSTEMS = frozenset({"ext4", "xfs", "btrfs", "f2fs"})


@functools.cache
def _filesystem_type(root: Path) -> str | None:
    """The type of the filesystem `root` is on, from the longest mount point above it in
    /proc/self/mounts (mount points with spaces are written with escapes there, and so are
    simply not matched)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    where = str(root.resolve())
    best, kind = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


@contextmanager
def _syncing(root: Path, *, together: bool) -> Iterator[Callable[[Sequence[Path]], None]]:
    """How to make files durable: for a batch (`together`), one `syncfs` of `root`'s
    filesystem (all of its written data and metadata, ours among it, and a flush of the disk's
    cache) on a local Linux filesystem while little else is waiting to be written; an fsync of
    each otherwise. Entered before the batch is written: since Linux 5.8, syncfs reports any
    write error on the filesystem after the descriptor it is given was opened, ours included."""
    syncfs = _SYNCFS if together else None
    dirty = _dirty_bytes() if syncfs is not None else None
    if (
        syncfs is None
        or dirty is None
        or dirty > SYNCFS_MAX_DIRTY
        or _filesystem_type(root) not in _SYNCFS_FILESYSTEMS
    ):
        yield _fsync_each
        return
    fd = os.open(root, os.O_RDONLY)

    def sync(_paths: Sequence[Path]) -> None:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncing the blob store failed: {os.strerror(err)}")

    try:
        yield sync
    finally:
        os.close(fd)
