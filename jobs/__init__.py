"""The actions (transition, shadow, canary step, A/B, promote, rollback), the reconcile job
and the weight-refresh schedules, as Dagster definitions built from the fleet."""

from __future__ import annotations

import dagster as dg

from jobs.actions import (
    ACTION_JOBS,
    ActionConfig,
    action_job,
    action_op,
    perform,
    reconcile_job,
    slice_observation,
)
from jobs.refresh import refresh_defs, refresh_job, refresh_job_name, refresh_schedule_name
from jobs.requests import (
    ACTION_TAG,
    JOB_NAMES,
    LOCK_TAG,
    MODEL_TAG,
    OP_NAMES,
    REASON_TAG,
    RECONCILE_JOB,
    SLICE_TAG,
    Action,
    ActionRequest,
    action_run_key,
    action_run_request,
    run_config_for,
)
from modelops.fleet import Fleet

__all__ = [
    "ACTION_JOBS",
    "ACTION_TAG",
    "JOB_NAMES",
    "LOCK_TAG",
    "MODEL_TAG",
    "OP_NAMES",
    "REASON_TAG",
    "RECONCILE_JOB",
    "SLICE_TAG",
    "Action",
    "ActionConfig",
    "ActionRequest",
    "action_job",
    "action_op",
    "action_run_key",
    "action_run_request",
    "build_job_defs",
    "perform",
    "reconcile_job",
    "refresh_defs",
    "refresh_job",
    "refresh_job_name",
    "refresh_schedule_name",
    "run_config_for",
    "slice_observation",
]


def build_job_defs(fleet: Fleet) -> dg.Definitions:
    """Every action job, the reconcile job, and each model's refresh job and schedule.

    Resources are not bound here; `definitions.py` supplies `resources.default_resources()`.
    """
    refresh_jobs, schedules = refresh_defs(fleet)
    return dg.Definitions(
        jobs=[*ACTION_JOBS.values(), reconcile_job, *refresh_jobs],
        schedules=schedules,
    )
