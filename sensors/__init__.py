"""The sensors that drive a version through its lifecycle, and the alerts around them.

- `modelops_candidate_sensor`: a version that passed its offline gates takes its next step.
- `modelops_online_metrics_sensor`: live versions are judged on the prediction log through
  one decision interface (`sensors.decision.DecisionEngine`).
- `modelops_reconcile_sensor`: actual serving state drifted from desired -> a reconcile run.
- `modelops_rollback_failure_sensor`: a failed rollback run raises an alert.

Sensors never act themselves: they launch action jobs (`jobs.requests`) with deterministic
run keys, so the same evidence seen on many ticks launches one run.
"""

from __future__ import annotations

import dagster as dg

from modelops.fleet import Fleet
from sensors.candidate import (
    CANDIDATE_ACTOR,
    CANDIDATE_SENSOR,
    CandidatePlan,
    build_candidate_sensor,
    plan_candidates,
)
from sensors.decision import (
    Decision,
    DecisionEngine,
    Evidence,
    GuardrailRule,
    Verdict,
    automated_path,
    wilson_interval,
)
from sensors.failure_sensor import build_rollback_failure_sensor
from sensors.online_metrics import (
    ONLINE_ACTOR,
    ONLINE_METRICS_SENSOR,
    OnlineMetricsEvaluator,
    build_online_metrics_sensor,
)
from sensors.reconcile_sensor import build_reconcile_sensor

__all__ = [
    "CANDIDATE_ACTOR",
    "CANDIDATE_SENSOR",
    "CandidatePlan",
    "Decision",
    "DecisionEngine",
    "Evidence",
    "GuardrailRule",
    "ONLINE_ACTOR",
    "ONLINE_METRICS_SENSOR",
    "OnlineMetricsEvaluator",
    "Verdict",
    "automated_path",
    "build_candidate_sensor",
    "build_online_metrics_sensor",
    "build_reconcile_sensor",
    "build_rollback_failure_sensor",
    "build_sensor_defs",
    "plan_candidates",
    "wilson_interval",
]


def build_sensor_defs(fleet: Fleet) -> dg.Definitions:
    """All four sensors. They target the action jobs `jobs.build_job_defs` defines (the same
    objects), and need the `registry` and `predlog` resources from `definitions.py`."""
    return dg.Definitions(
        sensors=[
            build_candidate_sensor(fleet),
            build_online_metrics_sensor(fleet),
            build_reconcile_sensor(fleet),
            build_rollback_failure_sensor(fleet),
        ]
    )
