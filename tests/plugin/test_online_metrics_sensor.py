"""The online-metrics sensor against a real registry and a real prediction log.

A model sits at CANARY 1% over a prod version; the test writes predictions and clicks to the
log the gateway writes, then evaluates the sensor with `build_sensor_context`. Time is the
sensor's injected clock, never a sleep.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from jobs import ACTION_JOBS
from modelops.actions import ActionKind, ActionRequest, action_run_key
from modelops.fleet import Fleet
from modelops.registry import Registry
from modelops.spec import State
from resources import PredictionLogResource, RegistryResource
from sensors import build_online_metrics_sensor
from sensors.online_metrics import ONLINE_ACTOR
from serving.predlog import PredictionLog
from serving.records import Outcome, PredictionRecord

MODEL = "ctr_gbdt"  # L1 in the demo fleet: min_requests 20, min_samples 20, max drop 0.3


def _version(reg: Registry, label: str) -> int:
    v = reg.register_version(
        MODEL,
        weights_hash=hashlib.sha256(label.encode()).hexdigest(),
        weights_uri=f"file:///weights/{label}.onnx",
        training_run_id=f"run-{label}",
        training_data="ctr_clicks@1",
        eval_set="ctr_eval@1",
        feature_contract_ref="ctr_features@1",
    )
    reg.record_gate_result(MODEL, v.version, passed=True, results={"auc": 0.7})
    return v.version


@pytest.fixture
def canary(home: Path, demo_fleet: Fleet) -> Registry:
    """v1 PROMOTED, v2 at CANARY 1% on slice global."""
    reg = Registry()
    reg.register_dataset("ctr_clicks", 1, "file:///data/ctr_clicks/v1.npz")
    reg.register_dataset("ctr_eval", 1, "file:///data/ctr_eval/v1.npz", kind="eval_set")
    reg.register_contract(demo_fleet.contract("ctr_features"))
    reg.add_team(demo_fleet.model(MODEL).spec.owner_team)
    reg.create_model(demo_fleet.model(MODEL).spec)
    v1 = _version(reg, "a")
    reg.transition(MODEL, v1, State.PROMOTED, actor="ops")
    v2 = _version(reg, "b")
    for target, kw in (
        (State.APPROVED_SHADOW, {}),
        (State.SHADOW, {"percent": 100, "mode": "live"}),
        (State.APPROVED_CANARY, {}),
        (State.CANARY, {"percent": 1}),
    ):
        reg.transition(MODEL, v2, target, actor="ops", **kw)
    return reg


def traffic(version: int, arm: str, n: int, click_rate: float, *, errors: int = 0) -> None:
    """n served requests on one arm, the first round(n * rate) of them clicked."""
    clicked = round(n * click_rate)
    with PredictionLog() as log:
        for i in range(n):
            rid = f"{arm}-{version}-{i}-{time.monotonic_ns()}"
            log.submit(
                PredictionRecord(
                    request_id=rid,
                    ts=time.time(),
                    model_id=MODEL,
                    version=version,
                    arm=arm,
                    slice="global",
                    latency_ms=5.0 + i % 7,
                    error="backend_5xx" if i < errors else None,
                )
            )
            log.submit_outcome(
                Outcome(request_id=rid, ts=time.time(), name="click", value=float(i < clicked))
            )
        assert log.flush()


def sensor(fleet: Fleet, ahead_s: float = 60.0) -> dg.SensorDefinition:
    return build_online_metrics_sensor(fleet, jobs=ACTION_JOBS, clock=lambda: time.time() + ahead_s)


def tick(s: dg.SensorDefinition, cursor: str | None = None) -> Any:
    resources = {"registry": RegistryResource(), "predlog": PredictionLogResource()}
    with dg.build_sensor_context(resources=resources, cursor=cursor) as ctx:
        return s.evaluate_tick(ctx)


def valid_for_the_real_job(rr: dg.RunRequest) -> None:
    """The request's config is accepted by the action job the daemon will launch."""
    job = {j.name: j for j in ACTION_JOBS.values()}[rr.job_name]
    assert dg.validate_run_config(job, rr.run_config)


def test_healthy_canary_steps_to_five_percent(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 200, 0.2)
    traffic(2, "canary", 40, 0.2)
    result = tick(sensor(demo_fleet))
    assert len(result.run_requests) == 1
    rr = result.run_requests[0]
    want = ActionRequest(
        model_id=MODEL, version=2, expected="CANARY", expected_percent=1, percent=5
    )
    assert rr.run_key == action_run_key(ActionKind.canary_step, want)
    assert rr.run_key == "canary_step:ctr_gbdt:global:2:CANARY:1:-:5"
    assert rr.job_name == "modelops_canary_step"
    cfg = rr.run_config["ops"]["canary_step_op"]["config"]
    assert (cfg["percent"], cfg["expected"], cfg["expected_percent"]) == (5, "CANARY", 1)
    assert cfg["actor"] == ONLINE_ACTOR and "step to 5%" in cfg["reason"]
    assert rr.tags["modelops/lock"] == f"{MODEL}/global"
    valid_for_the_real_job(rr)
    cursor = json.loads(result.cursor)
    assert cursor["tick"] == 1
    assert cursor["last_decisions"][f"{MODEL}/global/v2"] == "ADVANCE v2 CANARY 1"


def test_regressed_clicks_roll_back_once(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 200, 0.2)
    traffic(2, "canary", 40, 0.0)  # Wilson upper bound 0.088 < 0.2 * (1 - 0.3)
    s = sensor(demo_fleet)
    first = tick(s)
    assert [r.job_name for r in first.run_requests] == ["modelops_rollback"]
    rr = first.run_requests[0]
    cfg = rr.run_config["ops"]["rollback_op"]["config"]
    assert (cfg["expected"], cfg["expected_percent"], cfg["version"]) == ("CANARY", 1, 2)
    assert "click" in cfg["reason"] and "below prod" in cfg["reason"]
    assert rr.run_key == "rollback:ctr_gbdt:global:2:CANARY:1:-:-"
    valid_for_the_real_job(rr)
    # The next tick sees the same evidence: the same run key, so the daemon launches one run.
    second = tick(s, first.cursor)
    assert [r.run_key for r in second.run_requests] == [rr.run_key]
    assert json.loads(second.cursor)["tick"] == 2


def test_error_breach_rolls_back(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 100, 0.2)
    traffic(2, "canary", 40, 0.2, errors=8)
    result = tick(sensor(demo_fleet))
    assert [r.job_name for r in result.run_requests] == ["modelops_rollback"]
    assert "error rate 20.0%" in result.run_requests[0].tags["modelops/reason"]


def test_too_few_samples_launches_nothing(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 200, 0.2)
    traffic(2, "canary", 10, 0.0)
    result = tick(sensor(demo_fleet))
    assert result.run_requests == []
    assert result.skip_message and "holding" in result.skip_message
    assert json.loads(result.cursor)["last_decisions"] == {f"{MODEL}/global/v2": "HOLD v2 CANARY 1"}


def test_dwell_holds_without_a_clock_jump(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 200, 0.2)
    traffic(2, "canary", 40, 0.2)
    result = tick(sensor(demo_fleet, ahead_s=0.0))  # canary_step_s is 8 s; none has passed
    assert result.run_requests == []


def test_promoted_version_is_watched_and_rolled_back(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 200, 0.2)  # the previous prod's baseline, before the promotion
    canary.transition(MODEL, 2, State.PROMOTED, actor="ops")
    assert canary.desired_state(MODEL).rollback_target == 1
    traffic(2, "prod", 60, 0.0)
    result = tick(sensor(demo_fleet, ahead_s=10.0))  # inside watch_s (40 s)
    assert [r.job_name for r in result.run_requests] == ["modelops_rollback"]
    cfg = result.run_requests[0].run_config["ops"]["rollback_op"]["config"]
    assert (cfg["expected"], cfg["version"]) == ("PROMOTED", 2)
    # After the watch the promoted version is no longer judged.
    late = tick(sensor(demo_fleet, ahead_s=demo_fleet.durations.watch_s + 5))
    assert late.run_requests == []


def test_engine_is_pluggable_and_sees_both_arms(canary: Registry, demo_fleet: Fleet) -> None:
    from modelops.evaluation.decision import Decision, Evidence, Verdict

    seen: list[Evidence] = []

    class Recorder:
        def decide(self, evidence: Evidence) -> Decision:
            seen.append(evidence)
            return Decision(verdict=Verdict.HOLD, reason="recording")

    traffic(1, "prod", 30, 0.2)
    traffic(2, "canary", 25, 0.2)
    s = build_online_metrics_sensor(
        demo_fleet, Recorder(), jobs=ACTION_JOBS, clock=lambda: time.time() + 60
    )
    assert tick(s).run_requests == []
    [ev] = seen
    assert (ev.state, ev.percent, ev.version, ev.tier.value) == (State.CANARY, 1, 2, "L1")
    assert ev.candidate is not None and (ev.candidate.arm, ev.candidate.requests) == ("canary", 25)
    assert ev.baseline is not None and (ev.baseline.version, ev.baseline.arm) == (1, "prod")
    assert ev.online == demo_fleet.model(MODEL).online
    assert ev.is_weight_refresh is False  # only computed for L2, where it changes the path


def test_sensor_defs_hold_all_four_sensors(demo_fleet: Fleet) -> None:
    from sensors import build_sensor_defs

    defs = build_sensor_defs(demo_fleet, jobs=ACTION_JOBS)
    by_name = {s.name: s for s in defs.sensors}
    assert set(by_name) == {
        "modelops_candidate_sensor",
        "modelops_online_metrics_sensor",
        "modelops_reconcile_sensor",
        "modelops_rollback_failure_sensor",
    }
    online = by_name["modelops_online_metrics_sensor"]
    assert online.minimum_interval_seconds == demo_fleet.durations.sensor_interval_s
    assert online.default_status is dg.DefaultSensorStatus.RUNNING
    assert {j.name for j in online.jobs} == {
        "modelops_canary_step",
        "modelops_start_ab",
        "modelops_promote",
        "modelops_rollback",
    }
    assert {j.name for j in by_name["modelops_candidate_sensor"].jobs} == {
        "modelops_promote",
        "modelops_start_shadow",
    }
