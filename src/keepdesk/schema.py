"""The database schema's state and its migrations, driven through Alembic's API.

Alembic's environment runs its own event loop, so callers inside a running loop use the
`*_async` wrappers, which run it in a worker thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

import keepdesk
from keepdesk.db import Database


def migrations_dir() -> Path:
    """The Alembic folder: inside the installed package (wheel) or at the repository root."""
    package = Path(keepdesk.__file__).resolve().parent
    for candidate in (package / "migrations", package.parent.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the migrations folder is missing from this installation")


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # Alembic reads this through ConfigParser: escape % so URL-encoded passwords survive.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["keepdesk_url"] = database_url
    return cfg


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"expected one migration head, found {heads}")
    return heads[0]


def is_known_revision(revision: str) -> bool:
    """False for a revision this keepdesk has never heard of: a newer keepdesk migrated it."""
    try:
        return (
            ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(revision)
            is not None
        )
    except Exception:  # alembic raises several types for an unknown id
        return False


def newer_schema_message(revision: str) -> str:
    return (
        f"the database is at schema revision {revision}, which a newer keepdesk made; "
        "run that newer version, or restore a backup taken before it"
    )


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


def _current(sync_conn: object) -> str | None:
    context = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
    return context.get_current_revision()


async def is_empty(db: Database) -> bool:
    """True when the database has no keepdesk tables at all (a fresh install)."""
    async with db.engine.connect() as conn:
        return await conn.run_sync(_has_no_tables)


def _has_no_tables(sync_conn: object) -> bool:
    from sqlalchemy import inspect

    return not inspect(sync_conn).get_table_names()


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, database_url, revision)


async def downgrade_async(database_url: str, revision: str) -> None:
    await asyncio.to_thread(downgrade, database_url, revision)


__all__ = [
    "AsyncConnection",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_empty",
    "migrations_dir",
    "upgrade",
]
