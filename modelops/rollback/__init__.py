"""Rollback beyond the traffic cutover: snapshots on the way in, restores, plans and reports.

`entry` takes the state snapshot a move into CANARY or AB_TEST records; `plan` walks the
dependents graph; `run` carries a rollback out (registry, serving pass, restores,
dependents) idempotently; `report` is what it says it did.
"""

from modelops.rollback.entry import enter_with_snapshots, is_entry, take_entry_snapshots
from modelops.rollback.plan import (
    CASCADE_APPROVALS,
    CascadeApproval,
    DependentsGraph,
    GraphNode,
    PlannedDependent,
    RollbackPlan,
    plan_rollback,
)
from modelops.rollback.report import RollbackReport, report_id
from modelops.rollback.run import (
    RELAX_FACTOR,
    RestoreRefused,
    build_plan,
    parse_approvals,
    run_rollback,
)

__all__ = [
    "CASCADE_APPROVALS",
    "RELAX_FACTOR",
    "RestoreRefused",
    "CascadeApproval",
    "DependentsGraph",
    "GraphNode",
    "PlannedDependent",
    "RollbackPlan",
    "RollbackReport",
    "build_plan",
    "enter_with_snapshots",
    "is_entry",
    "parse_approvals",
    "plan_rollback",
    "report_id",
    "run_rollback",
    "take_entry_snapshots",
]
