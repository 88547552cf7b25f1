"""One outcome per (request id, outcome name): a replayed post can no longer count twice.

Duplicates already in the log are removed first, keeping the earliest row of each pair
(the one the gateway accepted first), so the windows computed after the upgrade count each
request once. The unique index replaces the plain one on the same columns, which served the
outcome join and still does.

Revision ID: predlog_0002
Revises: predlog_0001
"""

from __future__ import annotations

from alembic import op

revision = "predlog_0002"
down_revision = "predlog_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DELETE FROM outcomes o USING outcomes d "
            "WHERE o.request_id = d.request_id AND o.name = d.name AND o.id > d.id"
        )
    else:
        op.execute(
            "DELETE FROM outcomes WHERE id NOT IN "
            "(SELECT MIN(id) FROM outcomes GROUP BY request_id, name)"
        )
    op.drop_index("ix_outcomes_request", table_name="outcomes")
    op.create_index("uq_outcomes_request_name", "outcomes", ["request_id", "name"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_outcomes_request_name", table_name="outcomes")
    op.create_index("ix_outcomes_request", "outcomes", ["request_id", "name"])
