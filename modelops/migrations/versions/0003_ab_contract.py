"""A/B contracts: the plan recorded on entry to AB_TEST, and layer capacity.

Revision ID: 0003_ab_contract
Revises: 0002_teams_audit_heads

- `ab_layers`: one row per orthogonal experiment layer, created the first time an A/B test
  enters it; its `capacity` (percent of the layer's users) bounds the summed shares of the
  experiments running in it, and its row is what an entry locks so two entries cannot both
  take the last of a layer.
- `ab_experiments`: one row per entry to AB_TEST: the layer, the experiment's share of the
  layer, and the plan (split, users per arm, planned days) computed from the model's policy
  when it entered. `epoch` is the version's slice-state epoch after entering, so the row is
  live exactly while the version is still in that AB_TEST (no row needs closing when it
  leaves by any path). The sequential test's conclusion is recorded on the row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_ab_contract"
down_revision = "0002_teams_audit_heads"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
S = sa.String


def upgrade() -> None:
    op.create_table(
        "ab_layers",
        sa.Column("layer", S(200), primary_key=True),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("created_at", S(32), nullable=False),
    )
    op.create_table(
        "ab_experiments",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("layer", S(200), nullable=False),
        sa.Column("share", sa.Integer, nullable=False),
        sa.Column("plan_json", sa.Text, nullable=False),
        sa.Column("started_at", S(32), nullable=False),
        sa.Column("conclusion_json", sa.Text, nullable=True),
        sa.Column("concluded_at", S(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id", "version"], ["model_versions.model_id", "model_versions.version"]
        ),
        sa.ForeignKeyConstraint(["layer"], ["ab_layers.layer"]),
        sa.UniqueConstraint("model_id", "version", "slice", "epoch", name="uq_ab_entry"),
        sa.Index("ix_ab_experiments_layer", "layer"),
    )


def downgrade() -> None:
    op.drop_table("ab_experiments")
    op.drop_table("ab_layers")
