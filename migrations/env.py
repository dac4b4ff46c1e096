"""Alembic environment: runs migrations on keepdesk's async engine (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import JSON
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from keepdesk.db import UTCDateTime
from keepdesk.metadata import metadata
from keepdesk.tickets.search import is_search_table

config = context.config


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    # Migrations must not import keepdesk's own types: render them as plain SQLAlchemy.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, JSON) and getattr(obj, "_variant_mapping", None):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return "sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')"
    return False


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    # The search index (migration 0003) is made by hand and is in no model (FTS5 has no
    # SQLAlchemy form): autogenerate must neither drop it nor describe it.
    return not (type_ == "table" and reflected and compare_to is None and is_search_table(name))


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_item=render_item,
        include_object=include_object,
        compare_type=True,
        render_as_batch=sqlite,
        # SQLite can roll DDL back too: a failed migration leaves the previous revision intact.
        transactional_ddl=True,
        transaction_per_migration=True,
    )
    if connection.dialect.name == "postgresql":
        # Two processes upgrading at once (serve and worker started together) take turns; the
        # second finds the schema at head and does nothing.
        connection.exec_driver_sql("SELECT pg_advisory_lock(7201002)")
    try:
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_unlock(7201002)")


async def _run_async(url: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                await connection.exec_driver_sql("PRAGMA busy_timeout=30000")
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(
        _run_async(
            config.attributes.get("keepdesk_url") or config.get_main_option("sqlalchemy.url") or ""
        )
    )
