"""SQLAlchemy Core tables. Only Alembic migrations create or change them in a database;
this module mirrors the head revision so queries are typed, and a test keeps the two equal.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = ["metadata"]

metadata = MetaData()

# BigInteger autoincrement ids are plain INTEGER on SQLite so they alias the rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")

models = Table(
    "models",
    metadata,
    Column("model_id", String(128), primary_key=True),
    Column("owner_team", String(128), nullable=False),
    Column("tier", String(4), nullable=False),
    Column("rollback_class", String(32), nullable=False),
    Column("model_class", String(32), nullable=False),
    Column("framework", String(32), nullable=False),
    Column("spec_json", Text, nullable=False),
    Column("next_version", Integer, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# One row per (model, slice): the serialization point for transitions and the desired state.
model_slices = Table(
    "model_slices",
    metadata,
    Column("model_id", String(128), nullable=False),
    Column("slice", String(128), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("desired_json", Text, nullable=False),
    Column("updated_at", String(32), nullable=False),
    PrimaryKeyConstraint("model_id", "slice"),
    ForeignKeyConstraint(["model_id"], ["models.model_id"]),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("weights_uri", Text, nullable=False),
    Column("weights_hash", String(64), nullable=False),
    Column("framework", String(32), nullable=False),
    Column("feature_contract_ref", String(200), nullable=True),
    Column("training_run_id", String(256), nullable=False),
    Column("parent_version", Integer, nullable=True),
    Column("archived", Boolean, nullable=False),
    Column("record_json", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    PrimaryKeyConstraint("model_id", "version"),
    ForeignKeyConstraint(["model_id"], ["models.model_id"]),
    UniqueConstraint("model_id", "weights_hash", "training_run_id", name="uq_version_idem"),
    Index("ix_versions_contract", "feature_contract_ref"),
)

slice_states = Table(
    "slice_states",
    metadata,
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("slice", String(128), nullable=False),
    Column("state", String(32), nullable=False),
    Column("percent", Integer, nullable=True),
    Column("params_json", Text, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("updated_at", String(32), nullable=False),
    PrimaryKeyConstraint("model_id", "version", "slice"),
    ForeignKeyConstraint(
        ["model_id", "version"], ["model_versions.model_id", "model_versions.version"]
    ),
    ForeignKeyConstraint(["model_id", "slice"], ["model_slices.model_id", "model_slices.slice"]),
    Index("ix_slice_states_state", "model_id", "slice", "state"),
    # Belt and braces for the one-prod rule that the registry also checks under its lock.
    Index(
        "uq_one_promoted",
        "model_id",
        "slice",
        unique=True,
        sqlite_where=text("state = 'PROMOTED'"),
        postgresql_where=text("state = 'PROMOTED'"),
    ),
)

state_changes = Table(
    "state_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("slice", String(128), nullable=False),
    Column("from_state", String(32), nullable=True),
    Column("state", String(32), nullable=False),
    Column("percent", Integer, nullable=True),
    Column("ts", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("gate_results_json", Text, nullable=False),
    Index("ix_state_changes_version", "model_id", "version"),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("uri", Text, nullable=False),
    Column("content_hash", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    PrimaryKeyConstraint("name", "version"),
)

dataset_pins = Table(
    "dataset_pins",
    metadata,
    Column("dataset_name", String(200), nullable=False),
    Column("dataset_version", Integer, nullable=False),
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("role", String(32), nullable=False),
    PrimaryKeyConstraint("dataset_name", "dataset_version", "model_id", "version", "role"),
    ForeignKeyConstraint(
        ["dataset_name", "dataset_version"], ["datasets.name", "datasets.version"]
    ),
    ForeignKeyConstraint(
        ["model_id", "version"], ["model_versions.model_id", "model_versions.version"]
    ),
    Index("ix_pins_version", "model_id", "version"),
)

feature_contracts = Table(
    "feature_contracts",
    metadata,
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("features_json", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    PrimaryKeyConstraint("name", "version"),
)

contract_features = Table(
    "contract_features",
    metadata,
    Column("contract_ref", String(200), nullable=False),
    Column("feature_name", String(200), nullable=False),
    PrimaryKeyConstraint("contract_ref", "feature_name"),
    Index("ix_contract_features_feature", "feature_name"),
)

dependencies = Table(
    "dependencies",
    metadata,
    Column("upstream_model", String(128), nullable=False),
    Column("upstream_version", Integer, nullable=False),  # 0: whichever version serves
    Column("downstream_model", String(128), nullable=False),
    Column("created_at", String(32), nullable=False),
    PrimaryKeyConstraint("upstream_model", "upstream_version", "downstream_model"),
    Index("ix_dependencies_downstream", "downstream_model"),
)

# The known teams: an actor's team and a model's owner_team must name one of these.
teams = Table(
    "teams",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("created_at", String(32), nullable=False),
)

actors = Table(
    "actors",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("team", String(128), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("role", String(16), nullable=True),  # NULL: registered before roles, an engineer
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("slice", String(128), nullable=False),
    Column("target_state", String(32), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("approver", String(256), nullable=False),
    Column("team", String(128), nullable=False),
    Column("ts", String(32), nullable=False),
    Column("statement", Text, nullable=True),  # the signed statement; NULL only on legacy rows
    Column("key_id", String(64), nullable=True),
    UniqueConstraint(
        "model_id", "version", "slice", "target_state", "epoch", "approver", name="uq_approval"
    ),
)

overrides = Table(
    "overrides",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("slice", String(128), nullable=False),
    Column("target_state", String(32), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("ts", String(32), nullable=False),
    Column("statement", Text, nullable=True),
    Column("key_id", String(64), nullable=True),
    Index("ix_overrides_key", "model_id", "version", "slice"),
)

# Governance (0004): keys are revoked, never deleted; nonces are consumed once.
actor_keys = Table(
    "actor_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("actor", String(256), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
    Column("revoked_reason", Text, nullable=True),
    Index("ix_actor_keys_actor", "actor"),
)

signed_nonces = Table(
    "signed_nonces",
    metadata,
    Column("nonce", String(32), primary_key=True),
    Column("signer", String(256), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("recorded_at", String(32), nullable=False),
)

break_glass = Table(
    "break_glass",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("slice", String(128), nullable=False),
    Column("team", String(128), nullable=False),
    Column("requester", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("statement", Text, nullable=False),
    Column("approvals_json", Text, nullable=False),
    Column("heightened_until", String(32), nullable=False),
    Column("ts", String(32), nullable=False),
    Index("ix_break_glass_team", "team", "ts"),
)

team_unlocks = Table(
    "team_unlocks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("team", String(128), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("statement", Text, nullable=False),
    Column("ts", String(32), nullable=False),
)

# Messages written with the change that causes them, delivered later with retries.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", String(32), nullable=False),
    Column("delivered_at", String(32), nullable=True),
    Column("last_error", Text, nullable=True),
)

spec_amendments = Table(
    "spec_amendments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model_id", String(128), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("from_sha256", String(64), nullable=False),
    Column("to_sha256", String(64), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("statement", Text, nullable=False),
    Column("approvals_json", Text, nullable=False),
    Column("ts", String(32), nullable=False),
    UniqueConstraint("model_id", "epoch", name="uq_spec_amendment_epoch"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("chain", String(160), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("model_id", String(128), nullable=True),
    Column("version", Integer, nullable=True),
    Column("action", String(64), nullable=False),
    Column("ts", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("chain", "seq", name="uq_audit_chain_seq"),
    Index("ix_audit_key", "model_id", "version", "action", "ts"),
)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("chain", String(160), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Orthogonal A/B layers: a capacity (percent of the layer's users) and the row an entry locks.
ab_layers = Table(
    "ab_layers",
    metadata,
    Column("layer", String(200), primary_key=True),
    Column("capacity", Integer, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# One row per entry to AB_TEST: layer, share and plan; live while the slice state keeps `epoch`.
ab_experiments = Table(
    "ab_experiments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("slice", String(128), nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("layer", String(200), nullable=False),
    Column("share", Integer, nullable=False),
    Column("plan_json", Text, nullable=False),
    Column("started_at", String(32), nullable=False),
    Column("conclusion_json", Text, nullable=True),
    Column("concluded_at", String(32), nullable=True),
    ForeignKeyConstraint(
        ["model_id", "version"], ["model_versions.model_id", "model_versions.version"]
    ),
    ForeignKeyConstraint(["layer"], ["ab_layers.layer"]),
    UniqueConstraint("model_id", "version", "slice", "epoch", name="uq_ab_entry"),
    Index("ix_ab_experiments_layer", "layer"),
)

# 0005_rollback: snapshots taken on entry to CANARY/AB_TEST and what rollbacks did with them.
state_snapshots = Table(
    "state_snapshots",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("slice", String(128), nullable=False),
    Column("target_state", String(32), nullable=False),
    Column("owner_model", String(128), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("uri", Text, nullable=False),
    Column("stores_json", Text, nullable=False),
    Column("audit_id", BigInteger, nullable=False),
    Column("created_at", String(32), nullable=False),
    ForeignKeyConstraint(
        ["model_id", "version"], ["model_versions.model_id", "model_versions.version"]
    ),
    Index("ix_state_snapshots_key", "model_id", "version", "slice"),
)

rollback_runs = Table(
    "rollback_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("rollback_audit_id", BigInteger, nullable=False),
    Column("model_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("slice", String(128), nullable=False),
    Column("rollback_class", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("snapshot_sha256", String(64), nullable=True),
    Column("progress_json", Text, nullable=False),
    Column("report_json", Text, nullable=True),
    Column("actor", String(256), nullable=False),
    Column("started_at", String(32), nullable=False),
    Column("finished_at", String(32), nullable=True),
    UniqueConstraint("rollback_audit_id", name="uq_rollback_run_audit"),
    Index("ix_rollback_runs_model", "model_id", "version"),
)

retrain_marks = Table(
    "retrain_marks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model_id", String(128), nullable=False),
    Column("source_model", String(128), nullable=False),
    Column("source_version", Integer, nullable=False),
    Column("run_id", BigInteger, nullable=False),
    Column("latest_version", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("marked_at", String(32), nullable=False),
    Index("ix_retrain_marks_model", "model_id"),
)

contaminated_features = Table(
    "contaminated_features",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("feature", String(200), nullable=False),
    Column("source_model", String(128), nullable=False),
    Column("source_version", Integer, nullable=False),
    Column("since", String(32), nullable=True),
    Column("run_id", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("flagged_at", String(32), nullable=False),
    Index("ix_contaminated_features_feature", "feature"),
)

decay_windows = Table(
    "decay_windows",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("model_id", String(128), nullable=False),
    Column("slice", String(128), nullable=False),
    Column("starts_at", String(32), nullable=False),
    Column("ends_at", String(32), nullable=False),
    Column("relax_factor", Float, nullable=False),
    Column("run_id", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_decay_windows_model", "model_id", "slice"),
)
