"""an index for a team's queue filtered by priority

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 09:30:00

A team's queue filtered by priority ("open, high") found its rows through
`ix_tickets_team_status_updated` and read each ticket to test its priority; the queue's capped
count read thousands (10 ms at a million tickets on SQLite, the page 23 ms). With priority
before status, the filter and the count are read from the index alone (0.07 ms), and queries
without a priority keep the old index (priority is not a prefix they can use).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_tickets_team_priority_status_updated",
        "tickets",
        ["team_id", "priority", "status", "updated_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_team_priority_status_updated", table_name="tickets")
