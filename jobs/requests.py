"""How a sensor asks for an action: job names, op config and tags in one place.

Sensors never act; they return the `RunRequest` built here, and the job does the work
through the registry. The run key is deterministic in what the action is *about* (model,
slice, version, the state it acts from, the step it takes), so the same evidence seen on
two ticks, or by two sensors, launches one run.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Action",
    "ActionRequest",
    "JOB_NAMES",
    "OP_NAMES",
    "LOCK_TAG",
    "MODEL_TAG",
    "SLICE_TAG",
    "ACTION_TAG",
    "REASON_TAG",
    "RECONCILE_JOB",
    "action_run_request",
    "action_run_key",
    "run_config_for",
]

LOCK_TAG = "modelops/lock"  # value "model/slice": at most one action run per value at a time
MODEL_TAG = "modelops/model"
SLICE_TAG = "modelops/slice"
ACTION_TAG = "modelops/action"
REASON_TAG = "modelops/reason"
RECONCILE_JOB = "modelops_reconcile"


class Action(StrEnum):
    transition = "transition"
    start_shadow = "start_shadow"
    canary_step = "canary_step"
    start_ab = "start_ab"
    promote = "promote"
    rollback = "rollback"


JOB_NAMES: dict[Action, str] = {a: f"modelops_{a.value}" for a in Action}
OP_NAMES: dict[Action, str] = {a: f"{a.value}_op" for a in Action}


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


def action_run_key(action: Action, req: ActionRequest) -> str:
    """Same action on the same observed state -> same key, so one breach fires one run."""
    parts = [
        action.value,
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
    return f"{action.value}:{hashlib.sha256(text.encode()).hexdigest()}"


def run_config_for(action: Action, req: ActionRequest) -> dict[str, Any]:
    return {"ops": {OP_NAMES[action]: {"config": req.model_dump(mode="json")}}}


def action_run_request(
    action: Action, req: ActionRequest, *, run_key: str | None = None
) -> dg.RunRequest:
    return dg.RunRequest(
        job_name=JOB_NAMES[action],
        run_key=run_key or action_run_key(action, req),
        run_config=run_config_for(action, req),
        tags={
            LOCK_TAG: f"{req.model_id}/{req.slice}",
            MODEL_TAG: req.model_id,
            SLICE_TAG: req.slice,
            ACTION_TAG: action.value,
            REASON_TAG: req.reason[:200],
        },
    )
