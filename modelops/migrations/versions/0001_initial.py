"""The registry's first schema: models, versions, per-slice states, lineage, append-only audit.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
S = sa.String
T = sa.Text


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("model_id", S(128), primary_key=True),
        sa.Column("owner_team", S(128), nullable=False),
        sa.Column("tier", S(4), nullable=False),
        sa.Column("rollback_class", S(32), nullable=False),
        sa.Column("model_class", S(32), nullable=False),
        sa.Column("framework", S(32), nullable=False),
        sa.Column("spec_json", T, nullable=False),
        sa.Column("next_version", sa.Integer, nullable=False),
        sa.Column("created_at", S(32), nullable=False),
    )
    op.create_table(
        "model_slices",
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("desired_json", T, nullable=False),
        sa.Column("updated_at", S(32), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "slice"),
        sa.ForeignKeyConstraint(["model_id"], ["models.model_id"]),
    )
    op.create_table(
        "model_versions",
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("weights_uri", T, nullable=False),
        sa.Column("weights_hash", S(64), nullable=False),
        sa.Column("framework", S(32), nullable=False),
        sa.Column("feature_contract_ref", S(200), nullable=True),
        sa.Column("training_run_id", S(256), nullable=False),
        sa.Column("parent_version", sa.Integer, nullable=True),
        sa.Column("archived", sa.Boolean, nullable=False),
        sa.Column("record_json", T, nullable=False),
        sa.Column("created_at", S(32), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "version"),
        sa.ForeignKeyConstraint(["model_id"], ["models.model_id"]),
        sa.UniqueConstraint("model_id", "weights_hash", "training_run_id", name="uq_version_idem"),
    )
    op.create_index("ix_versions_contract", "model_versions", ["feature_contract_ref"])
    op.create_table(
        "slice_states",
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("state", S(32), nullable=False),
        sa.Column("percent", sa.Integer, nullable=True),
        sa.Column("params_json", T, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("updated_at", S(32), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "version", "slice"),
        sa.ForeignKeyConstraint(
            ["model_id", "version"], ["model_versions.model_id", "model_versions.version"]
        ),
        sa.ForeignKeyConstraint(
            ["model_id", "slice"], ["model_slices.model_id", "model_slices.slice"]
        ),
    )
    op.create_index("ix_slice_states_state", "slice_states", ["model_id", "slice", "state"])
    op.create_index(
        "uq_one_promoted",
        "slice_states",
        ["model_id", "slice"],
        unique=True,
        sqlite_where=sa.text("state = 'PROMOTED'"),
        postgresql_where=sa.text("state = 'PROMOTED'"),
    )
    op.create_table(
        "state_changes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("from_state", S(32), nullable=True),
        sa.Column("state", S(32), nullable=False),
        sa.Column("percent", sa.Integer, nullable=True),
        sa.Column("ts", S(32), nullable=False),
        sa.Column("actor", S(256), nullable=False),
        sa.Column("reason", T, nullable=False),
        sa.Column("gate_results_json", T, nullable=False),
    )
    op.create_index("ix_state_changes_version", "state_changes", ["model_id", "version"])
    op.create_table(
        "datasets",
        sa.Column("name", S(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("kind", S(16), nullable=False),
        sa.Column("uri", T, nullable=False),
        sa.Column("content_hash", S(64), nullable=True),
        sa.Column("created_at", S(32), nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    op.create_table(
        "dataset_pins",
        sa.Column("dataset_name", S(200), nullable=False),
        sa.Column("dataset_version", sa.Integer, nullable=False),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("role", S(32), nullable=False),
        sa.PrimaryKeyConstraint("dataset_name", "dataset_version", "model_id", "version", "role"),
        sa.ForeignKeyConstraint(
            ["dataset_name", "dataset_version"], ["datasets.name", "datasets.version"]
        ),
        sa.ForeignKeyConstraint(
            ["model_id", "version"], ["model_versions.model_id", "model_versions.version"]
        ),
    )
    op.create_index("ix_pins_version", "dataset_pins", ["model_id", "version"])
    op.create_table(
        "feature_contracts",
        sa.Column("name", S(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("features_json", T, nullable=False),
        sa.Column("created_at", S(32), nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    op.create_table(
        "contract_features",
        sa.Column("contract_ref", S(200), nullable=False),
        sa.Column("feature_name", S(200), nullable=False),
        sa.PrimaryKeyConstraint("contract_ref", "feature_name"),
    )
    op.create_index("ix_contract_features_feature", "contract_features", ["feature_name"])
    op.create_table(
        "dependencies",
        sa.Column("upstream_model", S(128), nullable=False),
        sa.Column("upstream_version", sa.Integer, nullable=False),
        sa.Column("downstream_model", S(128), nullable=False),
        sa.Column("created_at", S(32), nullable=False),
        sa.PrimaryKeyConstraint("upstream_model", "upstream_version", "downstream_model"),
    )
    op.create_index("ix_dependencies_downstream", "dependencies", ["downstream_model"])
    op.create_table(
        "actors",
        sa.Column("name", S(256), primary_key=True),
        sa.Column("team", S(128), nullable=False),
        sa.Column("created_at", S(32), nullable=False),
    )
    op.create_table(
        "approvals",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("target_state", S(32), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("approver", S(256), nullable=False),
        sa.Column("team", S(128), nullable=False),
        sa.Column("ts", S(32), nullable=False),
        sa.UniqueConstraint(
            "model_id",
            "version",
            "slice",
            "target_state",
            "epoch",
            "approver",
            name="uq_approval",
        ),
    )
    op.create_table(
        "overrides",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("target_state", S(32), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("kind", S(64), nullable=False),
        sa.Column("actor", S(256), nullable=False),
        sa.Column("reason", T, nullable=False),
        sa.Column("ts", S(32), nullable=False),
    )
    op.create_index("ix_overrides_key", "overrides", ["model_id", "version", "slice"])
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("chain", S(160), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("model_id", S(128), nullable=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("action", S(64), nullable=False),
        sa.Column("ts", S(32), nullable=False),
        sa.Column("actor", S(256), nullable=False),
        sa.Column("payload", T, nullable=False),
        sa.Column("prev_hash", S(64), nullable=False),
        sa.Column("hash", S(64), nullable=False),
        sa.UniqueConstraint("chain", "seq", name="uq_audit_chain_seq"),
    )
    op.create_index("ix_audit_key", "audit_log", ["model_id", "version", "action", "ts"])
    op.create_table(
        "audit_heads",
        sa.Column("chain", S(160), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", S(64), nullable=False),
    )
    _append_only_triggers()


def _append_only_triggers() -> None:
    """Invariant 3 lives in the database, so no code path (ours or anyone's) can rewrite history."""
    if op.get_bind().dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )
    else:
        op.execute(
            "CREATE FUNCTION modelops_audit_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION modelops_audit_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION modelops_audit_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS modelops_audit_append_only()")
    for name in (
        "audit_heads",
        "audit_log",
        "overrides",
        "approvals",
        "actors",
        "dependencies",
        "contract_features",
        "feature_contracts",
        "dataset_pins",
        "datasets",
        "state_changes",
        "slice_states",
        "model_versions",
        "model_slices",
        "models",
    ):
        op.drop_table(name)
