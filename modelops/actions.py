"""The action vocabulary: what a sensor may ask for, and how the run that does it is named.

Sensors decide and jobs act; both read this one module, so neither imports the other and the
names can never drift apart. It is plain data (no Dagster): job and op names, tag names, the
op config of an action (`ActionRequest`), and the run key, which is deterministic in what the
action is *about* (model, slice, version, the state it acts from, the step it takes), so the
same evidence seen on two ticks, or by two sensors, launches one run.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ACTION_TAG",
    "DRIFT_TAG",
    "JOB_NAMES",
    "KIND_TAG",
    "LOCK_TAG",
    "MODEL_TAG",
    "OP_NAMES",
    "REASON_TAG",
    "RECONCILE_JOB",
    "RECONCILE_OP",
    "SLICE_TAG",
    "ActionKind",
    "ActionRequest",
    "action_run_fields",
    "action_run_key",
    "action_run_tags",
    "reconcile_run_fields",
    "reconcile_run_key",
    "run_config_for",
]

LOCK_TAG = "modelops/lock"  # value "model/slice": at most one action run per value at a time
MODEL_TAG = "modelops/model"
SLICE_TAG = "modelops/slice"
ACTION_TAG = "modelops/action"
REASON_TAG = "modelops/reason"
KIND_TAG = "modelops/kind"  # what a job is: "action", "reconcile", "refresh"
DRIFT_TAG = "modelops/drift"  # a reconcile run's number of drift items
RECONCILE_JOB = "modelops_reconcile"
RECONCILE_OP = "reconcile_op"


class ActionKind(StrEnum):
    """The steps a sensor can launch; each is one job (`JOB_NAMES`) with one op (`OP_NAMES`)."""

    transition = "transition"
    start_shadow = "start_shadow"
    canary_step = "canary_step"
    start_ab = "start_ab"
    promote = "promote"
    rollback = "rollback"


JOB_NAMES: dict[ActionKind, str] = {a: f"modelops_{a.value}" for a in ActionKind}
OP_NAMES: dict[ActionKind, str] = {a: f"{a.value}_op" for a in ActionKind}


class ActionRequest(BaseModel):
    """Everything an action run needs; it is also the op config (see jobs.actions)."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    slice: str = "global"
    version: int = Field(ge=1)
    target: str | None = Field(default=None, description="transition only: the target state")
    expected: str | None = Field(
        default=None, description="the state the sensor saw; the registry compares and sets"
    )
    expected_percent: int | None = None
    percent: int | None = None
    actor: str = "system:dagster"
    reason: str = ""
    automated: bool = True
    cascade: bool = Field(
        default=False, description="rollback only: roll dependents back too (with approvals)"
    )
    approvals: list[str] = Field(
        default_factory=list, description="rollback only: signed cascade approvals (JSON)"
    )


def action_run_key(kind: ActionKind, req: ActionRequest) -> str:
    """Same action on the same observed state -> same key, so one breach fires one run."""
    parts = [
        kind.value,
        req.model_id,
        req.slice,
        str(req.version),
        req.expected or "-",
        str(req.expected_percent if req.expected_percent is not None else "-"),
        req.target or "-",
        str(req.percent if req.percent is not None else "-"),
    ]
    text = ":".join(parts)
    if len(text) <= 200:
        return text
    return f"{kind.value}:{hashlib.sha256(text.encode()).hexdigest()}"


def run_config_for(kind: ActionKind, req: ActionRequest) -> dict[str, Any]:
    return {"ops": {OP_NAMES[kind]: {"config": req.model_dump(mode="json")}}}


def action_run_tags(kind: ActionKind, req: ActionRequest) -> dict[str, str]:
    """The lock tag holds the instance's run queue to one action run per (model, slice)."""
    return {
        LOCK_TAG: f"{req.model_id}/{req.slice}",
        MODEL_TAG: req.model_id,
        SLICE_TAG: req.slice,
        ACTION_TAG: kind.value,
        REASON_TAG: req.reason[:200],
    }


def action_run_fields(
    kind: ActionKind, req: ActionRequest, *, run_key: str | None = None
) -> dict[str, Any]:
    """The keyword arguments of the run request that launches this action."""
    return {
        "job_name": JOB_NAMES[kind],
        "run_key": run_key or action_run_key(kind, req),
        "run_config": run_config_for(kind, req),
        "tags": action_run_tags(kind, req),
    }


def reconcile_run_key(drift: list[str], since: float | None) -> str:
    """One key per drift episode: the same drift list first seen at the same time."""
    text = json.dumps({"drift": sorted(drift), "since": since}, sort_keys=True)
    return f"reconcile:{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def reconcile_run_fields(drift: list[str], since: float | None) -> dict[str, Any]:
    """The keyword arguments of the run request that launches one reconcile pass."""
    return {
        "job_name": RECONCILE_JOB,
        "run_key": reconcile_run_key(drift, since),
        "tags": {KIND_TAG: "reconcile", DRIFT_TAG: str(len(drift))},
    }
