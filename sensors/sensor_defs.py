"""The sensors of one fleet as a Definitions, targeting the job objects the caller hands over."""

from __future__ import annotations

import dagster as dg

from modelops.fleet import Fleet
from sensors.candidate import build_candidate_sensor
from sensors.failure_sensor import build_rollback_failure_sensor
from sensors.launch import ActionJobs
from sensors.online_metrics import build_online_metrics_sensor
from sensors.reconcile_sensor import build_reconcile_sensor

__all__ = ["build_sensor_defs"]


def build_sensor_defs(fleet: Fleet, *, jobs: ActionJobs) -> dg.Definitions:
    """All five sensors (the online-metrics sensor twice: the fleet, and on a shorter interval
    what is under heightened monitoring after a break-glass). `jobs` is `jobs.ACTION_JOBS`
    (the objects `jobs.build_job_defs` defines), handed over by `definitions.py` so that
    sensors never import jobs; the sensors need the `registry`, `predlog`, `artifacts` and
    `controller` resources from there too."""
    return dg.Definitions(
        sensors=[
            build_candidate_sensor(fleet, jobs=jobs),
            build_online_metrics_sensor(fleet, jobs=jobs),
            build_online_metrics_sensor(fleet, jobs=jobs, heightened_only=True),
            build_reconcile_sensor(fleet),
            build_rollback_failure_sensor(fleet),
        ]
    )
