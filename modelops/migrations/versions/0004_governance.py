"""Governance: actor keys, signed statements, nonces, anchors and break-glass.

Revision ID: 0004_governance
Revises: 0003_ab_contract
"""

from __future__ import annotations

revision = "0004_governance"
down_revision = "0003_ab_contract"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
