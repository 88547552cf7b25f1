"""Governance: actor keys, signed statements, nonces and gated spec amendments.

Revision ID: 0004_governance
Revises: 0003_ab_contract

- `actors.role`: engineer, senior, admin or service. NULL is an actor registered before
  roles existed and reads as engineer, so an upgrade gives nobody new powers.
- `actor_keys`: an actor's Ed25519 public keys; a key is revoked, never deleted, so what it
  signed before its revocation still verifies in `audit verify`.
- `signed_nonces`: every consumed nonce, unique, so a signed statement is used once even by
  two registries racing on one database.
- `approvals.statement` / `overrides.statement`: the signed statement (canonical JSON) the
  row was written on, and its key id. NULL only on rows from before this revision.
- `spec_amendments`: each accepted `model amend`, with its signed request and approvals; the
  count of a model's amendments is its spec epoch, which amendment signatures bind to.
- `break_glass`, `team_unlocks`: each break-glass deploy (its signed request and two signed
  senior approvals, and the end of its 24 h of heightened monitoring), and each admin's
  signed unlock of a team that used up its break-glass allowance.
- `outbox`: messages (the postmortem ticket) written in the transaction that causes them and
  delivered later with retries, so one is never lost while its receiver is down.
- On a registry that already has audit entries, one `enable_signatures` entry on the
  registry chain records the last entry id from before signatures, so `audit verify` can tell
  a legacy unsigned approval from one that skipped verification.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004_governance"
down_revision = "0003_ab_contract"
branch_labels = None
depends_on = None

S = sa.String
T = sa.Text
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("actors", sa.Column("role", S(16), nullable=True))
    op.create_table(
        "actor_keys",
        sa.Column("key_id", S(64), primary_key=True),
        sa.Column("actor", S(256), nullable=False),
        sa.Column("public_key", T, nullable=False),
        sa.Column("created_at", S(32), nullable=False),
        sa.Column("revoked_at", S(32), nullable=True),
        sa.Column("revoked_reason", T, nullable=True),
    )
    op.create_index("ix_actor_keys_actor", "actor_keys", ["actor"])
    op.create_table(
        "signed_nonces",
        sa.Column("nonce", S(32), primary_key=True),
        sa.Column("signer", S(256), nullable=False),
        sa.Column("kind", S(32), nullable=False),
        sa.Column("key_id", S(64), nullable=False),
        sa.Column("recorded_at", S(32), nullable=False),
    )
    for table in ("approvals", "overrides"):
        op.add_column(table, sa.Column("statement", T, nullable=True))
        op.add_column(table, sa.Column("key_id", S(64), nullable=True))
    op.create_table(
        "spec_amendments",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("from_sha256", S(64), nullable=False),
        sa.Column("to_sha256", S(64), nullable=False),
        sa.Column("actor", S(256), nullable=False),
        sa.Column("reason", T, nullable=False),
        sa.Column("statement", T, nullable=False),
        sa.Column("approvals_json", T, nullable=False),
        sa.Column("ts", S(32), nullable=False),
        sa.UniqueConstraint("model_id", "epoch", name="uq_spec_amendment_epoch"),
    )
    op.create_table(
        "break_glass",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("model_id", S(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slice", S(128), nullable=False),
        sa.Column("team", S(128), nullable=False),
        sa.Column("requester", S(256), nullable=False),
        sa.Column("reason", T, nullable=False),
        sa.Column("statement", T, nullable=False),
        sa.Column("approvals_json", T, nullable=False),
        sa.Column("heightened_until", S(32), nullable=False),
        sa.Column("ts", S(32), nullable=False),
    )
    op.create_index("ix_break_glass_team", "break_glass", ["team", "ts"])
    op.create_table(
        "team_unlocks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("team", S(128), nullable=False),
        sa.Column("actor", S(256), nullable=False),
        sa.Column("reason", T, nullable=False),
        sa.Column("statement", T, nullable=False),
        sa.Column("ts", S(32), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", S(64), nullable=False),
        sa.Column("payload", T, nullable=False),
        sa.Column("created_at", S(32), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", S(32), nullable=False),
        sa.Column("delivered_at", S(32), nullable=True),
        sa.Column("last_error", T, nullable=True),
    )
    _mark_legacy()


def _mark_legacy() -> None:
    from modelops import audit

    bind = op.get_bind()
    last = bind.execute(sa.text("SELECT MAX(id) FROM audit_log")).scalar()
    if last is None:
        return  # a fresh registry: every approval it will ever hold is signed
    audit.append(
        bind,
        model_id=None,
        version=None,
        action="enable_signatures",
        ts=datetime.now(UTC),
        actor="migration:0004",
        payload={"legacy_before_id": int(last)},
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("team_unlocks")
    op.drop_index("ix_break_glass_team", table_name="break_glass")
    op.drop_table("break_glass")
    op.drop_table("spec_amendments")
    for table in ("overrides", "approvals"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("key_id")
            batch.drop_column("statement")
    op.drop_table("signed_nonces")
    op.drop_index("ix_actor_keys_actor", table_name="actor_keys")
    op.drop_table("actor_keys")
    with op.batch_alter_table("actors") as batch:
        batch.drop_column("role")
