"""the assignee index carries the team, for the unassigned queue's count

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 20:10:00

The count of a queue page's side list includes "Unassigned in my teams" (no assignee, an
active status, one of the agent's teams). `ix_tickets_assignee_status_updated` found those
rows but not their team, so the capped count read each of up to a thousand tickets from the
table: 0.70 ms of every queue page at a million tickets on SQLite. With the team as the
index's last column the count reads the index alone (0.11 ms); the queues that use the index
for their order (assignee, status, then updated_at and id) use it as before.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_tickets_assignee_status_updated"


def upgrade() -> None:
    op.drop_index(NAME, table_name="tickets")
    op.create_index(NAME, "tickets", ["assignee_id", "status", "updated_at", "id", "team_id"])


def downgrade() -> None:
    op.drop_index(NAME, table_name="tickets")
    op.create_index(NAME, "tickets", ["assignee_id", "status", "updated_at", "id"])
