"""Reconcile trigger: compare what the serving plane has against what the registry wants,
and launch one `modelops_reconcile` run when they differ.

The check only reads (`ControllerResource.drift`, i.e. `Controller.drift`). Desired states
come from one registry query; what the backend has loaded is one call per backend; each
gateway answers `GET /admin/routes` once. A backend or gateway that does not answer is drift
too (the reconcile run will say why it cannot heal it), never an error of the tick. Only
versions that take traffic count (prod, canary, A/B arms, shadow): the warm rollback target
follows the controller's retention window, which a read-only check cannot judge without each
version's history.

Run keys hash the drift list and the tick on which that drift was first seen, both kept in
the JSON cursor. The same drift on many ticks is one run; the same drift after a clean tick,
or still there after `retry_after_s`, is a new episode and a new run.
"""

import json
import time

import dagster as dg
from pydantic import BaseModel

from modelops.actions import RECONCILE_JOB, reconcile_run_fields
from modelops.fleet import Fleet
from resources import ArtifactStoreResource, ControllerResource, RegistryResource

__all__ = [
    "RECONCILE_SENSOR",
    "DriftCursor",
    "build_reconcile_sensor",
]

RECONCILE_SENSOR = "modelops_reconcile_sensor"
PROBE_TIMEOUT_S = 3.0  # a hung backend or gateway must not stall the tick


class DriftCursor(BaseModel):
    """The sensor's JSON cursor: the last drift seen, when its episode began, the last tick."""

    last_drift: list[str] = []
    since: float | None = None
    checked_at: float | None = None

    @classmethod
    def parse(cls, raw: str | None) -> "DriftCursor":
        if not raw:
            return cls()
        try:
            return cls.model_validate(json.loads(raw))
        except (ValueError, TypeError):
            return cls()  # an unreadable cursor starts afresh rather than stopping the sensor

    def dump(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def build_reconcile_sensor(
    fleet: Fleet, *, retry_after_s: float | None = None, grace_s: float | None = None
) -> dg.SensorDefinition:
    """`modelops_reconcile_sensor`: drift -> one `modelops_reconcile` run per drift episode.

    Drift must outlast `grace_s` first: every action run makes its own controller pass right
    after its transition, so drift seen for a moment is usually that pass still loading, and a
    reconcile run launched for it would only compete for the same CPU.
    """
    interval = fleet.durations.sensor_interval_s
    retry = retry_after_s if retry_after_s is not None else max(60.0, 10.0 * interval)
    grace = grace_s if grace_s is not None else max(10.0, 2.0 * interval)

    @dg.sensor(
        name=RECONCILE_SENSOR,
        job_name=RECONCILE_JOB,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="compares the registry's desired state with what the backends have loaded "
        "and what each gateway routes; launches a reconcile run when they differ",
    )
    def modelops_reconcile_sensor(
        context: dg.SensorEvaluationContext,
        registry: RegistryResource,
        artifacts: ArtifactStoreResource,
        controller: ControllerResource,
    ) -> dg.SensorResult | dg.SkipReason:
        now = time.time()
        prev = DriftCursor.parse(context.cursor)
        try:
            drift = controller.drift(
                registry.get(), artifacts.get(), timeout_s=PROBE_TIMEOUT_S, log=context.log
            )
        except Exception as exc:  # noqa: BLE001 - the registry itself failed; say so, retry
            context.log.error(f"drift check failed: {exc}")
            return dg.SkipReason(f"drift check failed: {' '.join(str(exc).split())}")
        if not drift:
            context.update_cursor(DriftCursor(last_drift=[], since=None, checked_at=now).dump())
            return dg.SkipReason("actual serving state matches the desired state")
        since = prev.since
        if drift != prev.last_drift or since is None or now - since >= retry + grace:
            since = now
        cursor = DriftCursor(last_drift=drift, since=since, checked_at=now)
        if now - since < grace:
            context.update_cursor(cursor.dump())
            return dg.SkipReason(
                f"{len(drift)} drift item(s) seen for {now - since:.0f}s; waiting {grace:.0f}s "
                "for the action run's own controller pass"
            )
        for item in drift:
            context.log.info(f"drift: {item}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(**reconcile_run_fields(drift, since))],
            cursor=cursor.dump(),
        )

    return modelops_reconcile_sensor
