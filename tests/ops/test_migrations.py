"""Migrations: they build exactly the models' schema, and go up, down and up again on both
databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from keepdesk import schema
from keepdesk.db import Database
from keepdesk.metadata import metadata
from keepdesk.tickets.search import is_search_table


def _differences(sync_conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        sync_conn,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            # As migrations/env.py: the hand-made search index is in no model.
            "include_object": lambda obj, name, type_, reflected, compare_to: (
                not (reflected and is_search_table(name if type_ == "table" else obj.table.name))
            ),
        },
    )
    return list(compare_metadata(context, metadata))


def _tables(sync_conn: Connection) -> set[str]:
    return {n for n in inspect(sync_conn).get_table_names() if not is_search_table(n)}


async def differences(db: Database) -> list[Any]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_differences)


async def tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_tables)


async def test_the_migrated_schema_is_exactly_the_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert await differences(db) == []
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
    url: str = request.getfixturevalue("fresh_pg_url")
    return url


async def test_migrations_go_up_down_and_up_again(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        assert await schema.is_empty(db)
        assert await schema.current_revision(db) is None

        await schema.upgrade_async(empty_database_url)
        assert await schema.current_revision(db) == schema.head_revision()
        assert not await schema.is_empty(db)
        assert await tables(db) == set(metadata.tables) | {"alembic_version"}

        await schema.downgrade_async(empty_database_url, "base")
        assert await schema.current_revision(db) is None
        assert await tables(db) == {"alembic_version"}

        await schema.upgrade_async(empty_database_url)
        assert await schema.current_revision(db) == schema.head_revision()
        assert await differences(db) == []
    finally:
        await db.dispose()


def test_there_is_one_head_and_every_revision_is_numbered() -> None:
    head = schema.head_revision()
    assert head.isdigit()
    versions = sorted(p.name for p in (schema.migrations_dir() / "versions").glob("*.py"))
    assert versions[-1].startswith(f"{head}_")
