"""Full-text search over a ticket's subject, messages and requester, in the database's own
engine: an FTS5 table on SQLite, a tsvector with a GIN index on PostgreSQL (migration 0003).

The service calls `index_ticket` whenever a ticket's text changes; `search_tickets` answers with
the newest matching tickets the actor may see. What the user typed is never passed on as query
syntax: it is cut into words, and each whitespace-separated chunk becomes one quoted phrase.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import TableClause

from keepdesk.accounts.access import Actor
from keepdesk.db import collecting
from keepdesk.errors import InvalidInput
from keepdesk.pagination import Page, decode_cursor, encode_cursor
from keepdesk.tickets import rows
from keepdesk.tickets.models import Ticket
from keepdesk.tickets.queries import (
    TicketFilter,
    _cursor_id,
    _dialect,
    _visible_in_lists,
)
from keepdesk.tickets.rows import TicketRow

SEARCH_TABLE = "ticket_search"
# Words only: FTS5's unicode61 and PostgreSQL's parser both split on "_" and punctuation, so
# "carol@customer.test" is the phrase "carol customer test" to both.
_WORD = re.compile(r"[^\W_]+")
MAX_PHRASES = 16
MAX_WORD = 100

# The statements that index tickets, the same the migration runs for every ticket, with the
# `{where}` that picks them. Bodies are cut at 200,000 characters: a PostgreSQL tsvector holds
# at most 1 MB.
_INDEX_SQLITE = (
    "INSERT OR REPLACE INTO ticket_search (rowid, subject, body, requester) "
    "SELECT t.id, t.subject, "
    "substr(coalesce((SELECT group_concat(m.body_text, ' ') FROM "
    "(SELECT body_text FROM messages WHERE ticket_id = t.id ORDER BY id) AS m), ''), "
    "1, 200000), "
    "c.email || ' ' || c.name "
    "FROM tickets AS t JOIN contacts AS c ON c.id = t.requester_id{where}"
)
# The punctuation becomes spaces first: PostgreSQL's parser would keep an email address or a
# host name as one word, where FTS5 and the query's phrases see several.
_INDEX_POSTGRES = (
    "INSERT INTO ticket_search (ticket_id, document) "
    "SELECT t.id, to_tsvector('simple', regexp_replace("
    "t.subject || ' ' || left(coalesce((SELECT string_agg(m.body_text, ' ' ORDER BY m.id) "
    "FROM messages AS m WHERE m.ticket_id = t.id), ''), 200000) "
    "|| ' ' || c.email || ' ' || c.name, "
    "'[[:punct:][:space:][:cntrl:]]+', ' ', 'g')) "
    "FROM tickets AS t JOIN contacts AS c ON c.id = t.requester_id{where} "
    "ON CONFLICT (ticket_id) DO UPDATE SET document = excluded.document"
)
_INDEX = {"sqlite": _INDEX_SQLITE, "postgresql": _INDEX_POSTGRES}
_INDEX_SOME = {
    dialect: text(sql.format(where=" WHERE t.id IN :ticket_ids")).bindparams(
        bindparam("ticket_ids", expanding=True)
    )
    for dialect, sql in _INDEX.items()
}
_INDEX_ALL = {dialect: text(sql.format(where="")) for dialect, sql in _INDEX.items()}

# The FTS5 table's hidden column of its own name is what MATCH takes.
_fts = table(SEARCH_TABLE, column("rowid", Integer), column(SEARCH_TABLE))
_tsv = table(SEARCH_TABLE, column("ticket_id", Integer), column("document"))


def is_search_table(name: str | None) -> bool:
    """The search tables the migration makes and the models do not describe (FTS5 adds its
    `ticket_search_*` shadow tables): autogenerate and the schema tests leave them out."""
    return name is not None and (name == SEARCH_TABLE or name.startswith(SEARCH_TABLE + "_"))


# session.info key: the tickets a `batched_index` block changed, indexed at its end.
_BATCH = "keepdesk.search.batch"


async def index_ticket(session: AsyncSession, ticket_id: int) -> None:
    """Write the ticket's current subject, messages and requester to the search index (inside
    `batched_index`: at the end of the block)."""
    batch: set[int] | None = session.info.get(_BATCH)
    if batch is not None:
        batch.add(ticket_id)
        return
    await _index(session, {ticket_id})


async def _index(session: AsyncSession, ticket_ids: set[int]) -> None:
    await session.execute(_INDEX_SOME[_dialect(session)], {"ticket_ids": sorted(ticket_ids)})


@asynccontextmanager
async def batched_index(session: AsyncSession) -> AsyncIterator[None]:
    """The tickets whose text changes inside are indexed at its end, each once, in one
    statement (the fetcher's batch transaction: one statement for ten mails). For a block that
    does not search for what it writes; after an error inside nothing is indexed, and the
    transaction is rolled back anyway."""
    batch: set[int]
    with collecting(session, _BATCH, set()) as batch:
        yield
    if batch:
        await _index(session, batch)


async def reindex_all(session: AsyncSession) -> None:
    """Rebuild the whole index (after a restore, which carries rows, not the index)."""
    await session.execute(_INDEX_ALL[_dialect(session)])


def search_phrases(query: str) -> list[str]:
    """The user's query as phrases of plain words, lowercased: `"NEAR(a b"` is `["near", "a b"]`.
    A query with no word in it is refused."""
    phrases = []
    for chunk in query.split():
        words = [w[:MAX_WORD] for w in _WORD.findall(chunk.lower())]
        if words:
            phrases.append(" ".join(words))
    if not phrases:
        raise InvalidInput("type at least one word to search for", code="invalid_query")
    return phrases[:MAX_PHRASES]


async def search_tickets(
    session: AsyncSession, *, actor: Actor, query: str, cursor: str | None, limit: int = 25
) -> Page[TicketRow]:
    """The newest tickets (by number) that hold every phrase of `query` and that the actor may
    see, a page at a time.

    The index is walked backwards by ticket id with a limit, not sorted by date: sorting every
    match cost 104 ms (FTS5) and 325 ms (tsvector) for a common word at a million tickets
    (shared/notes/performance-baselines.md)."""
    phrases = search_phrases(query)
    dialect = _dialect(session)
    source: TableClause
    key: ColumnElement[int]
    matched: ColumnElement[bool]
    if dialect == "sqlite":
        # Each phrase double-quoted: FTS5 reads OR, NEAR, * and ^ inside quotes as plain words,
        # and the words hold no quote that could end one.
        match = " ".join(f'"{p}"' for p in phrases)
        source, key = _fts, _fts.c.rowid
        matched = _fts.c[SEARCH_TABLE].match(match)
    else:
        config: ColumnElement[Any] = literal_column("'simple'::regconfig")
        terms: list[ColumnElement[Any]] = [func.phraseto_tsquery(config, p) for p in phrases]
        tsquery = terms[0]
        for term in terms[1:]:
            tsquery = tsquery.op("&&")(term)
        source, key = _tsv, _tsv.c.ticket_id
        matched = _tsv.c.document.op("@@")(tsquery)
    clauses: list[ColumnElement[bool]] = [matched]
    visible = _visible_in_lists(actor, TicketFilter(), dialect)
    if visible is not None:
        clauses.append(visible)
    if cursor:
        _, after = decode_cursor(cursor, kind="search", size=2)
        clauses.append(key < _cursor_id(after))
    tickets_table = Ticket.__table__
    page = (
        select(tickets_table.c.id)
        .select_from(source)
        .join(tickets_table, tickets_table.c.id == key)
        .where(*clauses)
        .order_by(key.desc())
        .limit(limit + 1)
    )
    tickets = await rows.load(session, rows.page_query(page, (tickets_table.c.id.desc(),), dialect))
    more = len(tickets) > limit
    tickets = tickets[:limit]
    return Page(tickets, encode_cursor("search", tickets[-1].id) if more else None)
