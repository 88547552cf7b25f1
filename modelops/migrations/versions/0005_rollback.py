"""Rollback execution: state snapshots, restore records, NEEDS_RETRAIN marks, contaminated
features and decay windows.

Revision ID: 0005_rollback
Revises: 0004_governance

- `state_snapshots`: one row per snapshot taken on entry to CANARY or AB_TEST, written in
  the transition's own transaction, so a version never enters those states without it.
  `owner_model` is the model whose stores were snapshotted (the version's own model, or a
  STATE_SNAPSHOT dependent whose state derives from it).
- `rollback_runs`: one row per registry rollback the rollback job completes, keyed by the
  rollback's audit entry. `progress_json` records each store as it is restored, so a run
  killed midway and rerun restores only what it had not, and never a store twice.
- `retrain_marks`: NEEDS_RETRAIN on a downstream model; `latest_version` is the model's
  newest version when marked, so registering a newer version clears the mark.
- `contaminated_features`: features an IRREVERSIBLE model's outputs fed, flagged since its
  promotion.
- `decay_windows`: alert thresholds relaxed after an IRREVERSIBLE rollback, with the reason.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_rollback"
down_revision = "0004_governance"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
S = sa.String
T = sa.Text


def upgrade() -> None:
    op.create_table(
        "state_snapshots",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("target_state", S(32), nullable=False),
        sa.Column("owner_model", S(128), nullable=False),
        sa.Column("sha256", S(64), nullable=False),
        sa.Column("uri", T, nullable=False),
        sa.Column("stores_json", T, nullable=False),
        sa.Column("audit_id", sa.BigInteger, nullable=False),
        sa.Column("created_at", S(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id", "version"], ["model_versions.model_id", "model_versions.version"]
        ),
    )
    op.create_index("ix_state_snapshots_key", "state_snapshots", ["model_id", "version", "slice"])
    op.create_table(
        "rollback_runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("rollback_audit_id", sa.BigInteger, nullable=False),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("rollback_class", S(32), nullable=False),
        sa.Column("status", S(16), nullable=False),
        sa.Column("snapshot_sha256", S(64), nullable=True),
        sa.Column("progress_json", T, nullable=False),
        sa.Column("report_json", T, nullable=True),
        sa.Column("actor", S(256), nullable=False),
        sa.Column("started_at", S(32), nullable=False),
        sa.Column("finished_at", S(32), nullable=True),
        sa.UniqueConstraint("rollback_audit_id", name="uq_rollback_run_audit"),
    )
    op.create_index("ix_rollback_runs_model", "rollback_runs", ["model_id", "version"])
    op.create_table(
        "retrain_marks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("source_model", S(128), nullable=False),
        sa.Column("source_version", sa.Integer, nullable=False),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("reason", T, nullable=False),
        sa.Column("marked_at", S(32), nullable=False),
    )
    op.create_index("ix_retrain_marks_model", "retrain_marks", ["model_id"])
    op.create_table(
        "contaminated_features",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("feature", S(200), nullable=False),
        sa.Column("source_model", S(128), nullable=False),
        sa.Column("source_version", sa.Integer, nullable=False),
        sa.Column("since", S(32), nullable=True),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("reason", T, nullable=False),
        sa.Column("flagged_at", S(32), nullable=False),
    )
    op.create_index(
        "ix_contaminated_features_feature", "contaminated_features", ["feature"]
    )
    op.create_table(
        "decay_windows",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("starts_at", S(32), nullable=False),
        sa.Column("ends_at", S(32), nullable=False),
        sa.Column("relax_factor", sa.Float, nullable=False),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("reason", T, nullable=False),
    )
    op.create_index("ix_decay_windows_model", "decay_windows", ["model_id", "slice"])


def downgrade() -> None:
    for name in (
        "decay_windows",
        "contaminated_features",
        "retrain_marks",
        "rollback_runs",
        "state_snapshots",
    ):
        op.drop_table(name)
