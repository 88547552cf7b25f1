"""The online-metrics sensor against a real registry and a real prediction log.

A model sits at CANARY 1% over a prod version; the test writes predictions and clicks of
keyed users (salted user hashes, as the gateway writes them) to the log, then evaluates the
sensor with `build_sensor_context`. The default engine is the sequential one, so a verdict
needs users: every arm here has hundreds, each with correlated clicks of their own. Time is
the sensor's injected clock, never a sleep.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from jobs import ACTION_JOBS
from modelops.actions import ActionKind, ActionRequest, action_run_key
from modelops.fleet import Fleet
from modelops.registry import Registry
from modelops.spec import State
from resources import PredictionLogResource, RegistryResource
from sensors import build_online_metrics_sensor
from sensors.online_metrics import EVIDENCE_TAG, ONLINE_ACTOR, OnlineMetricsEvaluator
from serving.predlog import PredictionLog
from serving.predlog.userhash import hash_user
from serving.records import Outcome, PredictionRecord

# L1 in the demo fleet: min_requests 20, min_samples 20 (users per arm before a verdict),
# max_primary_drop 0.3 declared (the harm margin), protected slices us, de, br.
MODEL = "ctr_gbdt"


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


SALT = b"sensor-test-salt"


def traffic(
    version: int,
    arm: str,
    users: int,
    click_rate: float,
    *,
    per_user: int = 4,
    error_rate: float = 0.0,
    seed: int = 1,
    segment: str | None = None,
    user_prefix: str = "",
) -> None:
    """`users` keyed users on one arm, `per_user` requests each; each user clicks with a
    propensity of their own (Beta with mean click_rate, concentration 10), so a user's
    requests are correlated as real users' are."""
    rng = np.random.default_rng(seed)
    stamp = time.monotonic_ns()
    with PredictionLog() as log:
        for u in range(users):
            uh = hash_user(f"{user_prefix}{arm}-{version}-user-{u}", SALT)
            p = (
                rng.beta(10 * click_rate, 10 * (1 - click_rate))
                if 0 < click_rate < 1
                else click_rate
            )
            for j in range(per_user):
                rid = f"{arm}-{version}-{u}-{j}-{stamp}"
                err = "backend_5xx" if rng.random() < error_rate else None
                log.submit(
                    PredictionRecord(
                        request_id=rid,
                        ts=time.time(),
                        model_id=MODEL,
                        version=version,
                        arm=arm,
                        slice="global",
                        user_hash=uh,
                        segment=segment,
                        latency_ms=5.0 + (u + j) % 7,
                        error=err,
                    )
                )
                click = float(rng.random() < p)
                log.submit_outcome(
                    Outcome(request_id=rid, ts=time.time(), name="click", value=click)
                )
        assert log.flush()


def alerts(reg: Registry, kind: str) -> list[Any]:
    return [
        e for e in reg.audit_entries(MODEL) if e.action == "alert" and e.payload.get("kind") == kind
    ]


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
    # A 1% canary: 1% of the users (the SRM check holds anything else).
    traffic(1, "prod", 9900, 0.2, per_user=1)
    traffic(2, "canary", 100, 0.2, per_user=8, seed=2)
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
    assert cfg["actor"] == ONLINE_ACTOR and "no harm confirmed" in cfg["reason"]
    assert rr.tags["modelops/lock"] == f"{MODEL}/global"
    # What the step rests on, for the UI: users per arm, the lift and its interval.
    ev = json.loads(rr.tags[EVIDENCE_TAG])
    assert (ev["users_candidate"], ev["users_prod"]) == (100, 9900)
    assert ev["lift_low"] < ev["lift"] < ev["lift_high"] and ev["harm_margin"] == 0.3
    valid_for_the_real_job(rr)
    cursor = json.loads(result.cursor)
    assert cursor["tick"] == 1
    assert cursor["last_decisions"][f"{MODEL}/global/v2"] == "ADVANCE v2 CANARY 1"


def test_a_clearly_worse_canary_rolls_back_once(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 9900, 0.2, per_user=1)
    traffic(2, "canary", 100, 0.08, per_user=8, seed=2)  # 60% worse, 30% is the margin
    s = sensor(demo_fleet)
    first = tick(s)
    assert [r.job_name for r in first.run_requests] == ["modelops_rollback"]
    rr = first.run_requests[0]
    cfg = rr.run_config["ops"]["rollback_op"]["config"]
    assert (cfg["expected"], cfg["expected_percent"], cfg["version"]) == ("CANARY", 1, 2)
    assert "click harm confirmed" in cfg["reason"] and "likelihood ratio" in cfg["reason"]
    ev = json.loads(rr.tags[EVIDENCE_TAG])
    assert ev["state"] == "REJECT" and ev["lift_high"] < 0
    assert rr.run_key == "rollback:ctr_gbdt:global:2:CANARY:1:-:-"
    valid_for_the_real_job(rr)
    # The next tick sees the same evidence: the same run key, so the daemon launches one run.
    second = tick(s, first.cursor)
    assert [r.run_key for r in second.run_requests] == [rr.run_key]
    assert json.loads(second.cursor)["tick"] == 2


def test_a_canary_worse_on_one_protected_slice_rolls_back(
    canary: Registry, demo_fleet: Fleet
) -> None:
    """The whole slice looks fine; the harm test on segment de (Bonferroni over 1 + 3 tests)
    confirms the candidate is worse there."""
    for pct in (5, 10):
        canary.transition(MODEL, 2, State.CANARY, actor="ops", percent=pct)
    traffic(1, "prod", 2250, 0.2, per_user=1, segment="us")
    traffic(1, "prod", 2250, 0.2, per_user=1, segment="de", seed=3, user_prefix="de-")
    traffic(2, "canary", 250, 0.3, segment="us", seed=4)
    traffic(2, "canary", 250, 0.07, segment="de", seed=5, user_prefix="de-")
    result = tick(sensor(demo_fleet))
    assert [r.job_name for r in result.run_requests] == ["modelops_rollback"]
    reason = result.run_requests[0].run_config["ops"]["rollback_op"]["config"]["reason"]
    assert "on protected slice de" in reason and "Bonferroni over 4 tests" in reason
    ev = json.loads(result.run_requests[0].tags[EVIDENCE_TAG])
    assert ev["slice.de.state"] == "REJECT" and ev["slice.us.state"] != "REJECT"


def test_error_breach_rolls_back(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 100, 0.2)
    traffic(2, "canary", 40, 0.2, error_rate=0.25)
    result = tick(sensor(demo_fleet))
    assert [r.job_name for r in result.run_requests] == ["modelops_rollback"]
    assert "error rate" in result.run_requests[0].tags["modelops/reason"]


def test_thin_traffic_holds_and_says_so(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 990, 0.2, per_user=1)
    traffic(2, "canary", 10, 0.0)  # 10 users, no clicks: not a verdict either way
    result = tick(sensor(demo_fleet))
    assert result.run_requests == []
    assert result.skip_message and "holding" in result.skip_message
    assert json.loads(result.cursor)["last_decisions"] == {f"{MODEL}/global/v2": "HOLD v2 CANARY 1"}


def test_requests_without_user_keys_hold(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 1500, 0.2, per_user=1)
    with PredictionLog() as log:
        for i in range(600):
            log.submit(
                PredictionRecord(
                    request_id=f"anon-{i}", ts=time.time(), model_id=MODEL, version=2,
                    arm="canary", slice="global", latency_ms=5.0,
                )
            )  # fmt: skip
        assert log.flush()
    ev = OnlineMetricsEvaluator(demo_fleet, clock=lambda: time.time() + 60)
    [(_, d)] = ev.evaluate(canary, PredictionLogResource().reader())
    assert d.verdict.value == "HOLD" and "carry no user key" in d.reason


def test_top_of_the_ladder_holds_until_the_test_has_its_power(
    canary: Registry, demo_fleet: Fleet
) -> None:
    """At 10% a canary a little worse than prod (inside the margin) is not promoted on 'no
    breach yet'; one equal to prod with enough users is, once 'no worse' is accepted."""
    for pct in (5, 10):
        canary.transition(MODEL, 2, State.CANARY, actor="ops", percent=pct)
    traffic(1, "prod", 900, 0.2, per_user=1)
    traffic(2, "canary", 100, 0.17, seed=2)
    s = sensor(demo_fleet)
    held = tick(s)
    assert held.run_requests == []
    ev = OnlineMetricsEvaluator(demo_fleet, clock=lambda: time.time() + 60)
    [(ls, d)] = ev.evaluate(canary, PredictionLogResource().reader())
    assert (ls.percent, d.verdict.value) == (10, "HOLD")
    assert d.details["state"] == "CONTINUE" and "inconclusive" in d.reason
    # The windows reach back to the canary's start (1%), not only the 10% step.
    traffic(1, "prod", 5400, 0.2, per_user=1, seed=8, user_prefix="more-")
    traffic(2, "canary", 600, 0.2, seed=7, user_prefix="more-")
    done = tick(s, held.cursor)
    assert [r.job_name for r in done.run_requests] == ["modelops_promote"]
    assert "canary passed at 10%" in done.run_requests[0].tags["modelops/reason"]


def test_srm_holds_and_alerts_once(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 1500, 0.2, per_user=1)
    traffic(2, "canary", 400, 0.2, seed=2)  # 21% of users on a 1% canary
    s = sensor(demo_fleet)
    first = tick(s)
    assert first.run_requests == []
    [alert] = alerts(canary, "online_srm")
    assert alert.payload["version"] == 2 and alert.actor == ONLINE_ACTOR
    assert "sample ratio mismatch" in alert.payload["detail"]
    assert alert.payload["evidence"]["srm_p_always_valid"] < 0.001
    tick(s, first.cursor)
    tick(s, None)  # a lost cursor: the audit log already has it
    assert len(alerts(canary, "online_srm")) == 1


def test_dwell_holds_without_a_clock_jump(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 9900, 0.2, per_user=1)
    traffic(2, "canary", 100, 0.2, per_user=8, seed=2)
    result = tick(sensor(demo_fleet, ahead_s=0.0))  # canary_step_s is 8 s; none has passed
    assert result.run_requests == []


def test_promoted_version_is_watched_and_rolled_back(canary: Registry, demo_fleet: Fleet) -> None:
    traffic(1, "prod", 1500, 0.2, per_user=1)  # the previous prod's baseline, before it
    canary.transition(MODEL, 2, State.PROMOTED, actor="ops")
    assert canary.desired_state(MODEL).rollback_target == 1
    traffic(2, "prod", 300, 0.05, seed=2)
    result = tick(sensor(demo_fleet, ahead_s=10.0))  # inside watch_s (40 s)
    assert [r.job_name for r in result.run_requests] == ["modelops_rollback"]
    cfg = result.run_requests[0].run_config["ops"]["rollback_op"]["config"]
    assert (cfg["expected"], cfg["version"]) == ("PROMOTED", 2)
    assert "post-promotion watch" in cfg["reason"]
    # After the watch the promoted version is no longer judged.
    late = tick(sensor(demo_fleet, ahead_s=demo_fleet.durations.watch_s + 5))
    assert late.run_requests == []


def _to_ab(reg: Registry) -> None:
    reg.transition(MODEL, 2, State.AB_TEST, actor="ops", percent=50)


def test_ab_guardrail_trip_holds_alerts_and_never_rolls_back(
    canary: Registry, demo_fleet: Fleet
) -> None:
    _to_ab(canary)
    traffic(1, "prod", 300, 0.2)
    traffic(2, "ab", 300, 0.2, seed=2, error_rate=0.3)  # error rate past max_error_rate
    s = sensor(demo_fleet)
    first = tick(s)
    assert first.run_requests == []  # no rollback, no promotion: a human decides
    [alert] = alerts(canary, "online_ab_guardrail")
    assert alert.payload["version"] == 2 and "error rate" in alert.payload["detail"]
    assert canary.state_of(MODEL, 2) is State.AB_TEST
    assert tick(s, first.cursor).run_requests == []
    assert len(alerts(canary, "online_ab_guardrail")) == 1


def test_ab_srm_holds_and_alerts_without_deciding(canary: Registry, demo_fleet: Fleet) -> None:
    _to_ab(canary)
    traffic(1, "prod", 1000, 0.2)
    traffic(2, "ab", 300, 0.4, seed=2)  # a large lift, but 23% of users on a 50% arm
    result = tick(sensor(demo_fleet))
    assert result.run_requests == []
    [alert] = alerts(canary, "online_srm")
    assert "no decision is made on this data" in alert.payload["detail"]


def test_ab_significant_lift_records_its_conclusion_and_promotes(
    canary: Registry, demo_fleet: Fleet
) -> None:
    _to_ab(canary)
    demo = demo_fleet.model(MODEL).spec.policy.ab
    traffic(1, "prod", 3000, 0.2)
    traffic(2, "ab", 3000, 0.3, seed=2)  # +50%, far past the MDE
    result = tick(sensor(demo_fleet))
    assert [r.job_name for r in result.run_requests] == ["modelops_promote"]
    assert "significant lift" in result.run_requests[0].tags["modelops/reason"]
    exp = canary.ab_experiment(MODEL, 2)
    assert exp is not None and exp.conclusion is not None
    assert (exp.conclusion["outcome"], exp.conclusion["concluded_with_power"]) == ("PROMOTE", True)
    assert demo.relative_mde > 0  # the spec's declared MDE is what the test was powered for


def test_engine_is_pluggable_and_sees_both_arms(canary: Registry, demo_fleet: Fleet) -> None:
    from modelops.evaluation.decision import Decision, Evidence, Verdict

    seen: list[Evidence] = []

    class Recorder:
        def decide(self, evidence: Evidence) -> Decision:
            seen.append(evidence)
            return Decision(verdict=Verdict.HOLD, reason="recording")

    traffic(1, "prod", 30, 0.2)
    traffic(2, "canary", 25, 0.2, per_user=1)
    s = build_online_metrics_sensor(
        demo_fleet, Recorder(), jobs=ACTION_JOBS, clock=lambda: time.time() + 60
    )
    assert tick(s).run_requests == []
    [ev] = seen
    assert (ev.state, ev.percent, ev.version, ev.tier.value) == (State.CANARY, 1, 2, "L1")
    assert ev.candidate is not None and (ev.candidate.arm, ev.candidate.requests) == ("canary", 25)
    assert ev.candidate.users == 25 and ev.step_users == (25, 30)
    assert ev.baseline is not None and (ev.baseline.version, ev.baseline.arm) == (1, "prod")
    assert ev.online == demo_fleet.model(MODEL).online
    assert ev.is_weight_refresh is False  # only computed for L2, where it changes the path


def test_sensor_defs_hold_all_five_sensors(demo_fleet: Fleet) -> None:
    from sensors import build_sensor_defs

    defs = build_sensor_defs(demo_fleet, jobs=ACTION_JOBS)
    by_name = {s.name: s for s in defs.sensors}
    assert set(by_name) == {
        "modelops_candidate_sensor",
        "modelops_online_metrics_sensor",
        "modelops_heightened_monitoring_sensor",
        "modelops_reconcile_sensor",
        "modelops_rollback_failure_sensor",
    }
    hot = by_name["modelops_heightened_monitoring_sensor"]
    assert hot.minimum_interval_seconds == max(1, demo_fleet.durations.sensor_interval_s // 3)
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
