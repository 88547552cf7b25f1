"""The reconcile sensor (drift between the registry and the serving plane -> one reconcile
run) and the rollback run-failure sensor (a failed rollback -> an alert in the audit log),
evaluated the way the daemon would, against a real Triton and a real gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from test_jobs import Gateway, new_model, resources, run

from jobs import reconcile_job
from modelops.actions import RECONCILE_JOB, ActionKind
from modelops.fleet import Fleet
from sensors.failure_sensor import (
    ALERT_KIND,
    ROLLBACK_FAILURE_SENSOR,
    build_rollback_failure_sensor,
)
from sensors.reconcile_sensor import DriftCursor, build_reconcile_sensor


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    with Gateway(tmp_path) as gw:
        yield gw


def tick(
    sensor: dg.SensorDefinition, res: dict[str, Any], cursor: str | None = None
) -> tuple[list[dg.RunRequest], str | None, str | None]:
    """One evaluation: its run requests, the cursor it left, and its skip message."""
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources=res, cursor=cursor
    ) as ctx:
        data = sensor.evaluate_tick(ctx)
    return list(data.run_requests or []), data.cursor, data.skip_message


def aged(cursor: str | None, seconds: float) -> str:
    """The cursor as a later tick sees it: the drift episode began `seconds` earlier."""
    c = DriftCursor.model_validate_json(cursor or "{}")
    return c.model_copy(update={"since": (c.since or time.time()) - seconds}).dump()


@pytest.mark.xdist_group("triton")
def test_reconcile_sensor_sees_drift_once_and_quiets_after_a_reconcile(
    home: Path, triton: Any, gateway: Gateway, demo_fleet: Fleet
) -> None:
    reg, mid = new_model(home, versions=2)
    res = resources(triton, gateways=[gateway.url])
    sensor = build_reconcile_sensor(demo_fleet, grace_s=5.0)
    assert sensor.minimum_interval_seconds == demo_fleet.durations.sensor_interval_s
    assert sensor.default_status is dg.DefaultSensorStatus.RUNNING

    assert run(ActionKind.promote, res, model_id=mid, version=1)[0].success
    reqs, cursor, skip = tick(sensor, res)
    assert reqs == [] and skip and "matches" in skip
    assert json.loads(cursor or "{}")["last_drift"] == []

    # the registry moves without a controller pass: Triton lacks v2, the gateway is behind
    for st in ("APPROVED_SHADOW", "SHADOW"):
        reg.transition(mid, 2, st, actor="oncall")
    gen = reg.desired_state(mid).generation
    # first sighting: an action run's own controller pass may still be loading; wait
    reqs, cursor, skip = tick(sensor, res, cursor)
    assert reqs == [] and skip and "waiting 5s" in skip
    reqs, cursor, _ = tick(sensor, res, aged(cursor, 6.0))
    (req,) = reqs
    assert req.job_name == RECONCILE_JOB
    drift = json.loads(cursor or "{}")["last_drift"]
    assert f"{mid}/global: v2 (shadow) is not loaded ({mid}__v2)" in drift
    assert any(f"has generation {gen - 1}, desired generation {gen}" in d for d in drift)
    # the same drift on the next tick is the same run key: one episode, one run
    again, cursor2, _ = tick(sensor, res, cursor)
    assert [r.run_key for r in again] == [req.run_key]
    assert json.loads(cursor2 or "{}")["since"] == json.loads(cursor or "{}")["since"]
    # still there past the retry window: a fresh key, so a failed reconcile is retried
    old = DriftCursor.model_validate_json(cursor or "{}")
    stale = old.model_copy(update={"since": time.time() - 3600}).dump()
    reqs, fresh, skip = tick(sensor, res, stale)
    assert reqs == [] and skip  # a new episode starts its own grace
    (retry,) = tick(sensor, res, aged(fresh, 6.0))[0]
    assert retry.run_key != req.run_key

    result = reconcile_job.execute_in_process(
        resources=res, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    reqs, cursor, skip = tick(sensor, res, cursor)
    assert reqs == [] and skip
    assert json.loads(cursor or "{}")["last_drift"] == []


def test_reconcile_sensor_treats_an_unreachable_plane_as_drift(
    home: Path, demo_fleet: Fleet
) -> None:
    reg, mid = new_model(home, versions=1)
    reg.transition(mid, 1, "PROMOTED", actor="oncall")
    res = resources(None)
    res["controller"] = res["controller"].model_copy(update={"gateways": ["http://127.0.0.1:9"]})
    sensor = build_reconcile_sensor(demo_fleet, grace_s=0.0)
    (req,), cursor, _ = tick(sensor, res)
    drift = json.loads(cursor or "{}")["last_drift"]
    assert "gateway http://127.0.0.1:9 is unreachable" in drift
    assert any("backend triton" in d and "unreachable" in d for d in drift)
    assert req.run_key == tick(sensor, res, cursor)[0][0].run_key


def test_failed_rollback_raises_an_alert(home: Path, demo_fleet: Fleet) -> None:
    reg, mid = new_model(home, versions=1)
    instance = dg.DagsterInstance.ephemeral()
    # v1 was never promoted: the rollback is refused and the run fails
    from jobs import ACTION_JOBS
    from modelops.actions import ActionRequest, run_config_for
    from sensors import action_run_request

    req = ActionRequest(model_id=mid, version=1, expected="PROMOTED", reason="breach")
    result = ACTION_JOBS[ActionKind.rollback].execute_in_process(
        run_config=run_config_for(ActionKind.rollback, req),
        resources=resources(None),
        instance=instance,
        raise_on_error=False,
        tags=action_run_request(ActionKind.rollback, req).tags,
    )
    assert not result.success
    sensor = build_rollback_failure_sensor(demo_fleet)
    assert sensor.name == ROLLBACK_FAILURE_SENSOR
    ctx = dg.build_run_status_sensor_context(
        sensor_name=ROLLBACK_FAILURE_SENSOR,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"registry": resources(None)["registry"]},
    )
    sensor(ctx)
    alerts = [e for e in reg.audit_entries(mid) if e.action == "alert"]
    (alert,) = alerts
    assert alert.payload["kind"] == ALERT_KIND
    assert alert.payload["run_id"] == result.run_id
    assert alert.payload["slice"] == "global" and alert.payload["version"] == 1
    assert "conflict" in alert.payload["detail"] and mid in alert.payload["detail"]
    assert reg.verify_audit(mid).ok

    # a failed run of another job is none of this sensor's business
    other = ACTION_JOBS[ActionKind.promote].execute_in_process(
        run_config=run_config_for(ActionKind.promote, req),
        resources=resources(None),
        instance=instance,
        raise_on_error=False,
    )
    assert not other.success
    sensor(
        dg.build_run_status_sensor_context(
            sensor_name=ROLLBACK_FAILURE_SENSOR,
            dagster_event=other.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=other.dagster_run,
            resources={"registry": resources(None)["registry"]},
        )
    )
    assert len([e for e in reg.audit_entries(mid) if e.action == "alert"]) == 1


def test_failure_sensor_never_raises_for_an_unknown_model(home: Path, demo_fleet: Fleet) -> None:
    new_model(home, versions=1)
    instance = dg.DagsterInstance.ephemeral()
    from jobs import ACTION_JOBS
    from modelops.actions import ActionRequest, run_config_for

    req = ActionRequest(model_id="no_such_model", version=1)
    result = ACTION_JOBS[ActionKind.rollback].execute_in_process(
        run_config=run_config_for(ActionKind.rollback, req),
        resources=resources(None),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    sensor = build_rollback_failure_sensor(demo_fleet)
    sensor(
        dg.build_run_status_sensor_context(
            sensor_name=ROLLBACK_FAILURE_SENSOR,
            dagster_event=result.get_run_failure_event(),
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"registry": resources(None)["registry"]},
        )
    )  # logs the alert and that it could not be recorded; does not raise


def test_sensors_load_beside_the_jobs(demo_fleet: Fleet) -> None:
    from jobs import build_job_defs
    from resources import default_resources

    stubs = [
        dg.asset(key=[kind, m.model_id])(lambda: None)
        for m in demo_fleet.models
        for kind in ("models", "eval_reports")
    ]
    defs = dg.Definitions.merge(
        build_job_defs(demo_fleet),
        dg.Definitions(
            assets=stubs,
            sensors=[
                build_reconcile_sensor(demo_fleet),
                build_rollback_failure_sensor(demo_fleet),
            ],
            resources=default_resources(),
        ),
    )
    repo = defs.get_repository_def()
    assert repo.get_sensor_def("modelops_reconcile_sensor").job_name == RECONCILE_JOB
    failure = repo.get_sensor_def(ROLLBACK_FAILURE_SENSOR)
    assert failure.default_status is dg.DefaultSensorStatus.RUNNING
    assert failure.minimum_interval_seconds == demo_fleet.durations.sensor_interval_s
