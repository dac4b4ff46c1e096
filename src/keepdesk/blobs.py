"""Content-addressed blob store for attachments and raw mail: `blobs/ab/cd/<sha256>`.

`put` returns only after the bytes and their directory entry are on disk (fsync), so the row
that points at a blob can be committed safely afterwards. Keys are always our own sha256 hex;
no part of a path ever comes from message data.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError("not a blob key")
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self.path_for(key)
        if path.exists():
            return key
        created = self._make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename is durable once the directory entry is; new directories need their own
        # entries in their parents made durable too.
        for directory in [path.parent, *created]:
            _fsync_dir(directory)
        return key

    def _make_dirs(self, leaf: Path) -> list[Path]:
        """Create the fan-out directories; the parents of those created, deepest first."""
        missing = [d for d in (leaf.parent.parent, leaf.parent, leaf) if not d.exists()]
        created: list[Path] = []
        for directory in missing:
            directory.mkdir(parents=True, exist_ok=True)
            created.append(directory.parent)
        return list(reversed(created))

    def get(self, key: str) -> bytes:
        return self.path_for(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
