"""Rollback execution: restore records, NEEDS_RETRAIN marks and rollback reports.

Revision ID: 0005_rollback
Revises: 0004_governance
"""

from __future__ import annotations

revision = "0005_rollback"
down_revision = "0004_governance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
