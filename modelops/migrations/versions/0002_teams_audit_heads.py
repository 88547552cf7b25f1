"""Known teams, and audit heads that only move forward.

Revision ID: 0002_teams_audit_heads
Revises: 0001_initial

- `teams`: the known set an actor's team and a model's owner_team must come from, so the
  cross-team approval rule cannot be satisfied by spelling a team differently. A registry
  upgraded from 0001 gets the valid teams its actors and models already name, each with an
  `add_team` audit entry, so `audit verify` can still account for every team row.
- `audit_heads`: no DELETE, no TRUNCATE, and an INSERT or UPDATE must point the head at an
  existing entry of its own chain with a higher seq. A head that could move back would let
  whoever can write the table hide appended entries from the end of a chain.
- `audit_log` on SQLite: INSERT OR REPLACE deletes the row it replaces without firing the
  delete trigger, so an insert that collides with an existing entry is refused outright.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002_teams_audit_heads"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_TEAM = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")

_HEAD_MSG = "audit_heads moves forward only"


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    _seed_teams()
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_triggers()
    else:
        _postgres_triggers()


def _seed_teams() -> None:
    """Teams an existing registry already uses become known, each with its audit entry."""
    from modelops import audit

    bind = op.get_bind()
    names = {
        str(t).strip().lower()
        for t in bind.execute(
            sa.text("SELECT team FROM actors UNION SELECT owner_team FROM models")
        ).scalars()
    }
    ts = datetime.now(UTC)
    for name in sorted(n for n in names if _TEAM.match(n)):
        bind.execute(
            sa.text("INSERT INTO teams (name, created_at) VALUES (:n, :t)"),
            {"n": name, "t": ts.isoformat()},
        )
        audit.append(
            bind,
            model_id=None,
            version=None,
            action="add_team",
            ts=ts,
            actor="migration:0002",
            payload={"name": name},
        )


def _sqlite_triggers() -> None:
    op.execute(
        "CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log "
        "WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id "
        "OR (chain = NEW.chain AND seq = NEW.seq)) "
        "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
    )
    op.execute(
        "CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads "
        f"BEGIN SELECT RAISE(ABORT, '{_HEAD_MSG}'); END"
    )
    op.execute(
        "CREATE TRIGGER audit_heads_insert BEFORE INSERT ON audit_heads "
        "WHEN EXISTS (SELECT 1 FROM audit_heads WHERE chain = NEW.chain) "
        "OR NOT EXISTS (SELECT 1 FROM audit_log WHERE chain = NEW.chain AND seq = NEW.seq "
        "AND hash = NEW.hash) "
        f"BEGIN SELECT RAISE(ABORT, '{_HEAD_MSG}: a head names an existing entry'); END"
    )
    op.execute(
        "CREATE TRIGGER audit_heads_forward BEFORE UPDATE ON audit_heads "
        "WHEN NEW.chain IS NOT OLD.chain OR NEW.seq <= OLD.seq "
        "OR NOT EXISTS (SELECT 1 FROM audit_log WHERE chain = NEW.chain AND seq = NEW.seq "
        "AND hash = NEW.hash) "
        f"BEGIN SELECT RAISE(ABORT, '{_HEAD_MSG}'); END"
    )


def _postgres_triggers() -> None:
    op.execute(
        "CREATE FUNCTION modelops_audit_heads_forward() RETURNS trigger AS $$ "
        "BEGIN "
        "IF TG_OP IN ('DELETE', 'TRUNCATE') THEN "
        f"  RAISE EXCEPTION '{_HEAD_MSG}: % is not allowed', TG_OP; "
        "END IF; "
        "IF TG_OP = 'UPDATE' AND (NEW.chain <> OLD.chain OR NEW.seq <= OLD.seq) THEN "
        f"  RAISE EXCEPTION '{_HEAD_MSG}: % seq % -> %', OLD.chain, OLD.seq, NEW.seq; "
        "END IF; "
        "IF NOT EXISTS (SELECT 1 FROM audit_log WHERE chain = NEW.chain AND seq = NEW.seq "
        "AND hash = NEW.hash) THEN "
        f"  RAISE EXCEPTION '{_HEAD_MSG}: a head names an existing entry'; "
        "END IF; "
        "RETURN NEW; "
        "END $$ LANGUAGE plpgsql"
    )
    op.execute(
        "CREATE TRIGGER audit_heads_forward BEFORE INSERT OR UPDATE OR DELETE ON audit_heads "
        "FOR EACH ROW EXECUTE FUNCTION modelops_audit_heads_forward()"
    )
    op.execute(
        "CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads "
        "FOR EACH STATEMENT EXECUTE FUNCTION modelops_audit_heads_forward()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in (
            "audit_heads_forward",
            "audit_heads_insert",
            "audit_heads_no_delete",
            "audit_log_no_replace",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_heads_no_truncate ON audit_heads")
        op.execute("DROP TRIGGER IF EXISTS audit_heads_forward ON audit_heads")
        op.execute("DROP FUNCTION IF EXISTS modelops_audit_heads_forward()")
    op.drop_table("teams")
