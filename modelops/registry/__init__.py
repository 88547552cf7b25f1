"""The Registry: the one authority over versions, their per-slice states, lineage and audit.

Every mutation is one transaction holding the lock of what it changes, and writes its
state change, its desired state and exactly one audit entry together, so a crash or a
refusal leaves nothing partial behind. `Registry` is the one facade; its parts live in
this package by what they govern (catalog, versions, transitions, rollback, governance,
lineage, audit), over the shared statements and write helper in `statements`.
"""

from __future__ import annotations

from .audit_ops import AuditOps
from .checkpoints import Checkpoint, CheckpointOps, CheckpointRollback
from .checks import actor_name, non_finite, team_name
from .diagnosis import Diagnosis, DiagnosisOps, DiagnosisStep, Observations
from .experiments import ABExperiment, ExperimentOps, LayerUsage
from .governance import GovernanceOps
from .lineage import LineageOps
from .records import (
    IRREVERSIBLE_OVERRIDE,
    OVERRIDE_KINDS,
    SLO_NOT_MEASURED_OVERRIDE,
    ApprovalRecord,
    Candidate,
    Clock,
    DatasetInput,
    DatasetRecord,
    LiveState,
    ModelDependents,
    TransitionResult,
    VersionKey,
)
from .rollback import RollbackOps

__all__ = [
    "Registry",
    "actor_name",
    "team_name",
    "non_finite",
    "Clock",
    "IRREVERSIBLE_OVERRIDE",
    "SLO_NOT_MEASURED_OVERRIDE",
    "OVERRIDE_KINDS",
    "LiveState",
    "DatasetRecord",
    "DatasetInput",
    "Candidate",
    "TransitionResult",
    "ApprovalRecord",
    "VersionKey",
    "ModelDependents",
    "ABExperiment",
    "LayerUsage",
    "Diagnosis",
    "DiagnosisStep",
    "Observations",
    "Checkpoint",
    "CheckpointRollback",
]


class Registry(
    CheckpointOps, GovernanceOps, RollbackOps, DiagnosisOps, LineageOps, AuditOps, ExperimentOps
):
    """Entry point for the CLI, the Dagster resources, the controller and the gateway."""
