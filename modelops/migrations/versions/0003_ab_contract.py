"""A/B contracts: the plan recorded on entry to AB_TEST, and layer capacity.

Revision ID: 0003_ab_contract
Revises: 0002_teams_audit_heads
"""

from __future__ import annotations

revision = "0003_ab_contract"
down_revision = "0002_teams_audit_heads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
