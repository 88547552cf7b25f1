"""Run-failure alert: a rollback run that fails is an incident, not a log line.

A rollback is what the control plane does when a version hurts users; if that run fails,
traffic may still be on the bad version. The sensor logs the failure at ERROR and writes an
"alert" entry to the model's audit chain (tamper-evident, like every action), naming the
model, slice, version, run and the failure message. It never raises: an alert that crashes
its own sensor is an alert lost.
"""

from typing import Any

import dagster as dg

from modelops.actions import JOB_NAMES, MODEL_TAG, OP_NAMES, SLICE_TAG, ActionKind
from modelops.fleet import Fleet
from resources import RegistryResource

__all__ = ["ROLLBACK_FAILURE_SENSOR", "ALERT_KIND", "build_rollback_failure_sensor"]

ROLLBACK_FAILURE_SENSOR = "modelops_rollback_failure_sensor"
ALERT_KIND = "rollback_failed"
ALERT_ACTOR = "system:dagster-alerts"


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _op_config(run: Any) -> dict[str, Any]:
    try:
        cfg = run.run_config["ops"][OP_NAMES[ActionKind.rollback]]["config"]
        return dict(cfg) if isinstance(cfg, dict) else {}
    except (KeyError, TypeError):
        return {}


def _failure_message(context: Any) -> str:
    """The step's own failure description (the registry's one line) when there is one."""
    msgs: list[str] = []
    try:
        for ev in context.get_step_failure_events():
            data = ev.step_failure_data
            user = getattr(data, "user_failure_data", None)
            text = getattr(user, "description", None) or (data.error.message if data.error else "")
            if text:
                msgs.append(_one_line(text))
    except Exception:  # noqa: BLE001 - the event log may be unreadable; fall back below
        pass
    if not msgs and context.failure_event is not None:
        msgs.append(_one_line(context.failure_event.message or "run failed"))
    return "; ".join(msgs) or "run failed"


def build_rollback_failure_sensor(
    fleet: Fleet, rollback_job: dg.JobDefinition | None = None
) -> dg.SensorDefinition:
    """`modelops_rollback_failure_sensor`. Without `rollback_job` it watches every job of its
    code location and keeps only `modelops_rollback` runs, known by name."""

    @dg.run_failure_sensor(
        name=ROLLBACK_FAILURE_SENSOR,
        monitored_jobs=[rollback_job] if rollback_job is not None else None,
        minimum_interval_seconds=fleet.durations.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="a failed rollback run raises an alert: an ERROR log and a registry "
        "audit entry of kind rollback_failed",
    )
    def modelops_rollback_failure_sensor(
        context: dg.RunFailureSensorContext, registry: RegistryResource
    ) -> None:
        run = context.dagster_run
        if run.job_name != JOB_NAMES[ActionKind.rollback]:
            return
        cfg = _op_config(run)
        model_id = run.tags.get(MODEL_TAG) or cfg.get("model_id")
        slice_ = run.tags.get(SLICE_TAG) or cfg.get("slice") or "global"
        version = cfg.get("version")
        message = _failure_message(context)
        detail = (
            f"rollback of {model_id}@{version} on slice {slice_!r} failed "
            f"(run {run.run_id}): {message}"
        )
        context.log.error(f"ALERT {ALERT_KIND}: {detail}")
        if not model_id:
            context.log.error("the failed rollback run names no model; no registry alert written")
            return
        try:
            registry.get().record_alert(
                model_id,
                kind=ALERT_KIND,
                detail=detail,
                payload={
                    "run_id": run.run_id,
                    "slice": slice_,
                    "version": version,
                    "message": message,
                },
                actor=ALERT_ACTOR,
            )
        except Exception as exc:  # noqa: BLE001 - never raise; the log line above stands
            context.log.error(f"could not record the {ALERT_KIND} alert for {model_id}: {exc}")

    return modelops_rollback_failure_sensor
