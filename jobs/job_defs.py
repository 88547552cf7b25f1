"""The jobs of one fleet as a Definitions: what `definitions.py` merges and hands on to the
sensor builders, which target these very job objects."""

from __future__ import annotations

import dagster as dg

from jobs.actions import ACTION_JOBS, reconcile_job
from jobs.governance_jobs import governance_defs
from jobs.refresh import refresh_defs
from modelops.fleet import Fleet

__all__ = ["build_job_defs"]


def build_job_defs(fleet: Fleet) -> dg.Definitions:
    """Every action job, the reconcile job, each model's refresh job and schedule, and the
    governance jobs and schedules.

    Resources are not bound here; `definitions.py` supplies `resources.default_resources()`.
    """
    refresh_jobs, schedules = refresh_defs(fleet)
    return dg.Definitions.merge(
        dg.Definitions(
            jobs=[*ACTION_JOBS.values(), reconcile_job, *refresh_jobs],
            schedules=schedules,
        ),
        governance_defs(),  # break-glass, the chain-head anchors, the ticket outbox
    )
