"""Per-user windows: the keyed hash of the user key and the request's data slice.

`user_hash` is HMAC-SHA256(salt, user key) truncated to 32 hex characters
(serving.predlog.userhash): the raw user id is never stored. `segment` is the request's data
slice (a country, say), which the protected-slice harm tests aggregate by. Both are nullable:
rows logged before this revision, requests without a user key and shadow mirrors have none,
and the windows count them apart (`unkeyed_requests`).

The window index gains both columns at its end, so the per-user aggregates (users per arm,
requests and errors per user) are read off the index like the rest of a window, without
touching the wide rows.

Revision ID: predlog_0003
Revises: predlog_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "predlog_0003"
down_revision = "predlog_0002"
branch_labels = None
depends_on = None

OLD_INDEX = ("model_id", "ts", "version", "arm", "slice", "latency_ms", "error", "prompt_tokens")
NEW_INDEX = (*OLD_INDEX, "user_hash", "segment")


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("user_hash", sa.String(32), nullable=True))
        batch.add_column(sa.Column("segment", sa.String(), nullable=True))
    op.drop_index("ix_predictions_window", table_name="predictions")
    op.create_index("ix_predictions_window", "predictions", [*NEW_INDEX])


def downgrade() -> None:
    op.drop_index("ix_predictions_window", table_name="predictions")
    op.create_index("ix_predictions_window", "predictions", [*OLD_INDEX])
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("segment")
        batch.drop_column("user_hash")
