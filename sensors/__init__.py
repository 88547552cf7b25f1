"""The sensors that drive a version through its lifecycle, and the alerts around them.

- `modelops_candidate_sensor`: a version that passed its offline gates takes its next step.
- `modelops_online_metrics_sensor`: live versions are judged on the prediction log through
  one decision interface (`modelops.evaluation.decision.DecisionEngine`).
- `modelops_heightened_monitoring_sensor`: the same, on a shorter interval, for what a
  break-glass put under heightened monitoring.
- `modelops_reconcile_sensor`: actual serving state drifted from desired -> a reconcile run.
- `modelops_rollback_failure_sensor`: a failed rollback run raises an alert.

Sensors never act themselves: they launch action jobs with deterministic run keys
(`modelops.actions`), so the same evidence seen on many ticks launches one run. They never
import `jobs` either: `definitions.py` hands the job objects to the builders.
"""

from sensors.candidate import (
    CANDIDATE_ACTOR,
    CANDIDATE_SENSOR,
    CandidatePlan,
    build_candidate_sensor,
    plan_candidates,
)
from sensors.failure_sensor import (
    ALERT_KIND,
    ROLLBACK_FAILURE_SENSOR,
    build_rollback_failure_sensor,
)
from sensors.launch import ActionJobs, action_run_request, jobs_for
from sensors.online_metrics import (
    ONLINE_ACTOR,
    ONLINE_METRICS_SENSOR,
    OnlineMetricsEvaluator,
    build_online_metrics_sensor,
    run_request_for,
)
from sensors.reconcile_sensor import RECONCILE_SENSOR, DriftCursor, build_reconcile_sensor
from sensors.sensor_defs import build_sensor_defs

__all__ = [
    "ALERT_KIND",
    "CANDIDATE_ACTOR",
    "CANDIDATE_SENSOR",
    "ONLINE_ACTOR",
    "ONLINE_METRICS_SENSOR",
    "RECONCILE_SENSOR",
    "ROLLBACK_FAILURE_SENSOR",
    "ActionJobs",
    "CandidatePlan",
    "DriftCursor",
    "OnlineMetricsEvaluator",
    "action_run_request",
    "build_candidate_sensor",
    "build_online_metrics_sensor",
    "build_reconcile_sensor",
    "build_rollback_failure_sensor",
    "build_sensor_defs",
    "jobs_for",
    "plan_candidates",
    "run_request_for",
]
