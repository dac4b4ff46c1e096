"""Taking, verifying and restoring backups.

A backup is one tar archive: `manifest.json` (versions, schema revision, row counts, the sha256
of every member), one JSON-lines file per table, and every blob the rows point at. Rows are
read in one snapshot transaction while the server runs, and blobs are written before the rows
that name them commit, so the archive is consistent. The row format is the same for SQLite and
PostgreSQL: a backup of one restores into the other, which is how a team moves stores.

A backup is reported successful only after it has been verified; a failed one leaves no file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import DateTime, MetaData, Table, func, insert, select, text
from sqlalchemy.engine import Connection

import keepdesk
from keepdesk import schema
from keepdesk.backup import crypto
from keepdesk.blobs import BlobStore
from keepdesk.db import Database
from keepdesk.errors import Conflict, InvalidInput, KeepdeskError
from keepdesk.tickets import search

FORMAT = 1
# Every column that names a blob. A test fails when a model grows one that is not listed here.
BLOB_COLUMNS = (
    ("attachments", "blob_key"),
    ("mail_messages", "raw_blob_key"),
    ("quarantined_mail", "blob_key"),
    ("outbox", "blob_key"),
)
_BATCH = 1000

Progress = Callable[[int, int], None]


class BackupError(KeepdeskError):
    """The backup could not be made, or the archive is not sound."""

    code = "backup_failed"


@dataclass
class Manifest:
    format: int
    keepdesk_version: str
    schema_revision: str
    created_at: str
    source: str
    counts: dict[str, int]
    files: dict[str, str] = field(default_factory=dict)
    includes_secret: bool = False

    @property
    def blob_count(self) -> int:
        return sum(1 for name in self.files if name.startswith("blobs/"))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value  # StrEnum
    return value


# --- dumping ----------------------------------------------------------------------------------


def _tables(conn: Connection) -> list[Table]:
    """The tables as the database has them now (an older schema before an upgrade, too)."""
    reflected = MetaData()
    reflected.reflect(conn)
    # The search index is derived from the rows and dialect-specific: rebuilt after a restore.
    return [
        t
        for t in reflected.sorted_tables
        if t.name != "alembic_version" and not search.is_search_table(t.name)
    ]


def _dump(conn: Connection, staging: Path) -> tuple[dict[str, int], set[str]]:
    """Every table to JSON lines, inside the caller's snapshot transaction."""
    counts: dict[str, int] = {}
    blobs: set[str] = set()
    blob_columns = dict(BLOB_COLUMNS)
    (staging / "db").mkdir()
    for table in _tables(conn):
        count = 0
        order = list(table.primary_key.columns)
        column = blob_columns.get(table.name)
        with (staging / "db" / f"{table.name}.jsonl").open("w", encoding="utf-8") as out:
            for row in conn.execute(select(table).order_by(*order)).mappings():
                out.write(
                    json.dumps(
                        {k: _encode(v) for k, v in row.items()},
                        separators=(",", ":"),
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                count += 1
                if column and row.get(column):
                    blobs.add(row[column])
        counts[table.name] = count
    return counts, blobs


async def _snapshot(db: Database, staging: Path) -> tuple[dict[str, int], set[str]]:
    async with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return await conn.run_sync(_dump, staging)


async def create_backup(
    *,
    db: Database,
    blobs: BlobStore,
    output: Path,
    now: datetime,
    secret_file: Path | None = None,
    passphrase: str | None = None,
    public_key: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Write a verified backup to `output`; on any failure nothing is left at `output`."""
    if passphrase is not None and public_key is not None:
        raise InvalidInput("give a passphrase or a public key, not both")
    output = output.resolve()  # noqa: ASYNC240 - one stat, at the start
    if output.exists():
        raise Conflict(f"{output} exists already; choose another name", code="exists")
    output.parent.mkdir(parents=True, exist_ok=True)
    revision = await schema.current_revision(db)
    if revision is None:
        raise BackupError("the database has no keepdesk schema to back up")
    partial = output.with_name(output.name + ".partial")
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".keepdesk-backup-") as tmp:
        staging = Path(tmp)
        try:
            counts, keys = await _snapshot(db, staging)
            manifest = Manifest(
                format=FORMAT,
                keepdesk_version=keepdesk.__version__,
                schema_revision=revision,
                created_at=now.astimezone(UTC).isoformat(),
                source=db.dialect,
                counts=counts,
            )
            await asyncio.to_thread(
                _write_archive,
                staging,
                manifest,
                blobs,
                sorted(keys),
                partial,
                secret_file,
                passphrase,
                public_key,
                progress,
            )
            await asyncio.to_thread(
                verify_archive,
                partial,
                passphrase=passphrase,
                private_key=None,
                skip_decrypt=public_key is not None,
            )
            partial.rename(output)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return manifest


def _write_archive(
    staging: Path,
    manifest: Manifest,
    blobs: BlobStore,
    keys: list[str],
    target: Path,
    secret_file: Path | None,
    passphrase: str | None,
    public_key: str | None,
    progress: Progress | None,
) -> None:
    for path in sorted((staging / "db").iterdir()):
        manifest.files[f"db/{path.name}"] = _sha256_file(path)
    if secret_file is not None and secret_file.is_file():
        shutil.copyfile(secret_file, staging / "secret_key")
        manifest.files["secret_key"] = _sha256_file(staging / "secret_key")
        manifest.includes_secret = True
    for key in keys:
        manifest.files[f"blobs/{key}"] = key
    (staging / "manifest.json").write_text(json.dumps(asdict(manifest), indent=1))
    plain = target if passphrase is None and public_key is None else staging / "archive.tar"
    # A backup holds every customer's data and the instance secret: owner-only from the start.
    for path in {plain, target}:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    total = len(keys)
    with tarfile.open(plain, "w") as tar:
        tar.add(staging / "manifest.json", arcname="manifest.json")
        for name in manifest.files:
            if name.startswith("db/") or name == "secret_key":
                tar.add(staging / name, arcname=name)
        for done, key in enumerate(keys, start=1):
            path = blobs.path_for(key)
            if not path.is_file():
                raise BackupError(f"blob {key} is missing from the blob store")
            if _sha256_file(path) != key:
                raise BackupError(f"blob {key} in the blob store is damaged")
            tar.add(path, arcname=f"blobs/{key}")
            if progress is not None:
                progress(done, total)
    if plain != target:
        with plain.open("rb") as src, target.open("wb") as out:
            file_key = crypto.write_header(out, passphrase=passphrase, public_key=public_key)
            crypto.encrypt_stream(file_key, src, out)
    with target.open("rb") as f:
        os.fsync(f.fileno())


# --- reading and verifying --------------------------------------------------------------------


class _Decrypted:
    """A read-only file object over a decrypted stream (tarfile reads it in stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


@contextlib.contextmanager
def _open_tar(
    path: Path, passphrase: str | None, private_key: str | None
) -> Iterator[tarfile.TarFile]:
    with path.open("rb") as raw:
        head = raw.read(len(crypto.MAGIC))
        raw.seek(0)
        source: BinaryIO | _Decrypted = raw
        if crypto.is_encrypted(head):
            key = crypto.read_header(raw, passphrase=passphrase, private_key=private_key)
            source = _Decrypted(crypto.decrypt_stream(key, raw))
        try:
            with tarfile.open(fileobj=source, mode="r|") as tar:  # type: ignore[call-overload]
                yield tar
        except tarfile.TarError as exc:
            raise BackupError(f"the archive is damaged: {exc}") from None


def _walk(
    path: Path, passphrase: str | None, private_key: str | None, extract_to: Path | None
) -> Manifest:
    """Read every member once, checking each against the manifest; optionally extract."""
    manifest: Manifest | None = None
    seen: set[str] = set()
    with _open_tar(path, passphrase, private_key) as tar:
        for member in tar:
            if not member.isfile() or member.name.startswith("/") or ".." in member.name:
                raise BackupError(f"unexpected member {member.name!r} in the archive")
            handle = tar.extractfile(member)
            assert handle is not None
            if member.name == "manifest.json":
                manifest = Manifest(**json.loads(handle.read()))
                if manifest.format != FORMAT:
                    raise BackupError(f"backup format {manifest.format} is not supported")
                continue
            if manifest is None:
                raise BackupError("the archive does not start with its manifest")
            expected = manifest.files.get(member.name)
            if expected is None:
                raise BackupError(f"{member.name} is not in the manifest")
            digest = hashlib.sha256()
            out = None
            if extract_to is not None:
                target = extract_to / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                out = target.open("wb")
            try:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    if out is not None:
                        out.write(chunk)
            finally:
                if out is not None:
                    out.close()
            if digest.hexdigest() != expected:
                raise BackupError(f"checksum mismatch in {member.name}: the archive is damaged")
            seen.add(member.name)
    if manifest is None:
        raise BackupError("the archive has no manifest")
    if missing := set(manifest.files) - seen:
        raise BackupError(
            f"{len(missing)} files of the manifest are missing, e.g. {sorted(missing)[0]}"
        )
    return manifest


def verify_archive(
    path: Path,
    *,
    passphrase: str | None = None,
    private_key: str | None = None,
    skip_decrypt: bool = False,
) -> Manifest | None:
    """Check every checksum. `skip_decrypt` (a backup for a public key, whose private key we do
    not have) checks only that the file is a readable encrypted archive."""
    if skip_decrypt:
        with path.open("rb") as f:
            if not crypto.is_encrypted(f.read(len(crypto.MAGIC))):
                raise BackupError("the archive is not encrypted as asked")
        return None
    return _walk(path, passphrase, private_key, extract_to=None)


# --- restoring --------------------------------------------------------------------------------


def _decoder(table: Table, dialect: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    times = [c.name for c in table.columns if isinstance(c.type, DateTime)]

    def decode(row: dict[str, Any]) -> dict[str, Any]:
        for name in times:
            if row.get(name) is not None:
                value = datetime.fromisoformat(row[name])
                # SQLite keeps naive UTC; PostgreSQL wants it aware.
                row[name] = value if value.tzinfo else value.replace(tzinfo=UTC)
                if dialect == "sqlite":
                    row[name] = row[name].astimezone(UTC).replace(tzinfo=None)
        return row

    return decode


async def _has_rows(db: Database) -> bool:
    if await schema.is_empty(db):
        return False
    async with db.engine.connect() as conn:
        for table in ("agents", "tickets", "contacts", "mailboxes"):
            try:
                # Table names from the fixed tuple above, never from input.
                if await conn.scalar(text(f"SELECT 1 FROM {table} LIMIT 1")):  # noqa: S608
                    return True
            except Exception:  # a table missing in an odd schema state is not "data"
                await conn.rollback()
    return False


def _load(conn: Connection, extracted: Path) -> None:
    tables = _tables(conn)
    for table in reversed(tables):
        conn.execute(table.delete())
    for table in tables:
        path = extracted / "db" / f"{table.name}.jsonl"
        if not path.is_file():
            continue
        decode = _decoder(table, conn.dialect.name)
        batch: list[dict[str, Any]] = []
        with path.open(encoding="utf-8") as rows:
            for line in rows:
                batch.append(decode(json.loads(line)))
                if len(batch) >= _BATCH:
                    conn.execute(insert(table), batch)
                    batch = []
        if batch:
            conn.execute(insert(table), batch)
        if conn.dialect.name == "postgresql":
            # Rows came with their ids; move each id sequence past them.
            for column in table.primary_key.columns:
                if column.autoincrement is True or (
                    column.autoincrement == "auto"
                    and column.type.python_type is int
                    and len(table.primary_key.columns) == 1
                ):
                    # Names from the database's own catalog, never from the archive.
                    name, col = table.name, column.name
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{name}', '{col}'), "  # noqa: S608
                            f"COALESCE((SELECT MAX({col}) FROM {name}), 0) + 1, false)"
                        )
                    )


async def restore_backup(
    *,
    db: Database,
    blobs: BlobStore,
    archive: Path,
    data_dir: Path,
    force: bool = False,
    passphrase: str | None = None,
    private_key: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Restore into this instance's database and blob store, which must be empty (or `force`).

    The schema is built to the backup's revision, the rows go in, then any newer migrations run.
    """
    if await _has_rows(db) and not force:
        raise Conflict(
            "this instance already holds data; restore into an empty one, or pass "
            "--force to replace everything in it",
            code="not_empty",
        )
    with tempfile.TemporaryDirectory(prefix="keepdesk-restore-") as tmp:
        extracted = Path(tmp)
        manifest = await asyncio.to_thread(_walk, archive, passphrase, private_key, extracted)
        if await schema.is_empty(db):
            await schema.upgrade_async(db.url, manifest.schema_revision)
        else:
            current = await schema.current_revision(db)
            if current != manifest.schema_revision:
                await schema.downgrade_async(db.url, "base")
                await schema.upgrade_async(db.url, manifest.schema_revision)
        async with db.engine.begin() as conn:
            if db.dialect == "sqlite":
                await conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
            await conn.run_sync(_load, extracted)
        keys = [n.removeprefix("blobs/") for n in manifest.files if n.startswith("blobs/")]
        for done, key in enumerate(keys, start=1):
            stored = await asyncio.to_thread(blobs.put, (extracted / "blobs" / key).read_bytes())
            if stored != key:
                raise BackupError(f"blob {key} changed while restoring")
            if progress is not None:
                progress(done, len(keys))
        if manifest.includes_secret:
            await asyncio.to_thread(_install_secret, extracted / "secret_key", data_dir)
        await schema.upgrade_async(db.url)
        async with db.session(write=True) as session:
            await search.reindex_all(session)
            await session.commit()
    return manifest


def _install_secret(source: Path, data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / "secret_key"
    shutil.copyfile(source, target)
    target.chmod(0o600)


async def count_rows(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_count_rows)


def _count_rows(conn: Connection) -> dict[str, int]:
    return {
        table.name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
        for table in _tables(conn)
    }


async def verify_by_restoring(
    archive: Path, *, passphrase: str | None, private_key: str | None
) -> str:
    """Checksums first, then a real restore into a scratch SQLite instance with the counts
    compared against the manifest. Raises BackupError on any difference."""
    with tempfile.TemporaryDirectory(prefix="keepdesk-verify-") as tmp:
        scratch = Path(tmp)
        db = Database(f"sqlite+aiosqlite:///{scratch / 'verify.sqlite3'}")
        try:
            manifest = await restore_backup(
                db=db,
                blobs=BlobStore(scratch / "blobs"),
                archive=archive,
                data_dir=scratch / "data",
                passphrase=passphrase,
                private_key=private_key,
            )
            restored = await count_rows(db)
        finally:
            await db.dispose()
    wrong = {t: (n, restored.get(t)) for t, n in manifest.counts.items() if restored.get(t) != n}
    if wrong:
        table, (want, got) = next(iter(wrong.items()))
        raise BackupError(f"restored {got} rows of {table} but the backup holds {want}")
    return (
        f"ok: {len(manifest.files)} checksums match; a scratch restore holds all "
        f"{sum(manifest.counts.values())} rows and {manifest.blob_count} files "
        f"(backup of {manifest.created_at}, schema {manifest.schema_revision})"
    )
