"""ticket search: an FTS5 table on SQLite, a tsvector side table with a GIN index on PostgreSQL

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 07:05:00

Neither table is in the models (an FTS5 virtual table has no SQLAlchemy form): `migrations/env.py`
leaves them out of autogenerate. `keepdesk.tickets.search` keeps them up to date; the backfill
below is the same statement it runs for one ticket, run for all.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # rowid is the ticket id: "newest matches" walks the index backwards by rowid.
        op.execute(
            "CREATE VIRTUAL TABLE ticket_search USING fts5("
            "subject, body, requester, tokenize = 'unicode61 remove_diacritics 2')"
        )
        op.execute(
            "INSERT OR REPLACE INTO ticket_search (rowid, subject, body, requester) "
            "SELECT t.id, t.subject, "
            "substr(coalesce((SELECT group_concat(m.body_text, ' ') FROM "
            "(SELECT body_text FROM messages WHERE ticket_id = t.id ORDER BY id) AS m), ''), "
            "1, 200000), "
            "c.email || ' ' || c.name "
            "FROM tickets AS t JOIN contacts AS c ON c.id = t.requester_id"
        )
    else:
        op.execute(
            "CREATE TABLE ticket_search ("
            "ticket_id INTEGER PRIMARY KEY REFERENCES tickets (id) ON DELETE CASCADE, "
            "document TSVECTOR NOT NULL)"
        )
        op.execute("CREATE INDEX ix_ticket_search_document ON ticket_search USING gin (document)")
        op.execute(
            "INSERT INTO ticket_search (ticket_id, document) "
            "SELECT t.id, to_tsvector('simple', regexp_replace("
            "t.subject || ' ' || left(coalesce((SELECT string_agg(m.body_text, ' ' ORDER BY m.id) "
            "FROM messages AS m WHERE m.ticket_id = t.id), ''), 200000) "
            "|| ' ' || c.email || ' ' || c.name, "
            "'[[:punct:][:space:][:cntrl:]]+', ' ', 'g')) "
            "FROM tickets AS t JOIN contacts AS c ON c.id = t.requester_id"
        )


def downgrade() -> None:
    op.execute("DROP TABLE ticket_search")
