"""The actions (transition, shadow, canary step, A/B, promote, rollback), the reconcile job
and the weight-refresh schedules, as Dagster definitions built from the fleet.

What an action is called, its op config and its run key are the core's vocabulary
(`modelops.actions`); this package holds the Dagster side that does the work.
"""

from jobs.actions import (
    ACTION_JOBS,
    ActionConfig,
    action_job,
    action_op,
    perform,
    reconcile_job,
    reconcile_op,
    slice_observation,
)
from jobs.job_defs import build_job_defs
from jobs.refresh import (
    REFRESH_KIND,
    refresh_defs,
    refresh_job,
    refresh_job_name,
    refresh_schedule_name,
)

__all__ = [
    "ACTION_JOBS",
    "REFRESH_KIND",
    "ActionConfig",
    "action_job",
    "action_op",
    "build_job_defs",
    "perform",
    "reconcile_job",
    "reconcile_op",
    "refresh_defs",
    "refresh_job",
    "refresh_job_name",
    "refresh_schedule_name",
    "slice_observation",
]
