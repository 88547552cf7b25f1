"""The candidate sensor against a real registry: which gate-passed version moves, and how."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from jobs import ACTION_JOBS
from modelops.contracts import FeatureContract
from modelops.fleet import Fleet
from modelops.identity import generate_signing_key
from modelops.registry import Registry
from modelops.spec import State, Tier
from resources import RegistryResource
from sensors import build_candidate_sensor
from sensors.candidate import CANDIDATE_ACTOR


@pytest.fixture
def reg(home: Path, demo_fleet: Fleet) -> Registry:
    r = Registry()
    r.register_dataset("ctr_clicks", 1, "file:///data/ctr_clicks/v1.npz")
    r.register_dataset("ctr_eval", 1, "file:///data/ctr_eval/v1.npz", kind="eval_set")
    c1 = demo_fleet.contract("ctr_features")
    r.register_contract(c1)
    r.register_contract(FeatureContract(name=c1.name, version=2, features=[*c1.features[:7]]))
    for decl in demo_fleet.models:
        r.add_team(decl.spec.owner_team)
        r.create_model(decl.spec)
    return r


def passed(r: Registry, model_id: str, label: str, contract: str = "ctr_features@1") -> int:
    v = r.register_version(
        model_id,
        weights_hash=hashlib.sha256(f"{model_id}-{label}".encode()).hexdigest(),
        weights_uri=f"file:///weights/{model_id}-{label}",
        training_run_id=f"run-{model_id}-{label}",
        training_data="ctr_clicks@1",
        eval_set="ctr_eval@1",
        feature_contract_ref=contract,
    )
    r.record_gate_result(model_id, v.version, passed=True, results={"auc": 0.7})
    return v.version


def prod(r: Registry, model_id: str, label: str = "a") -> int:
    v = passed(r, model_id, label)
    if r.get_model(model_id).tier is Tier.L2:  # a first L2 version needs one approval
        lead = generate_signing_key()
        r.enroll_actor("rank-lead", "ranking", public_key=lead.public_key)
        r.approve(model_id, v, actor="rank-lead", key=lead, target=State.PROMOTED)
    r.transition(model_id, v, State.PROMOTED, actor="ops")
    return v


def tick(s: dg.SensorDefinition, cursor: str | None = None) -> Any:
    with dg.build_sensor_context(resources={"registry": RegistryResource()}, cursor=cursor) as c:
        return s.evaluate_tick(c)


def by_model(result: Any) -> dict[str, tuple[str, str]]:
    return {r.tags["modelops/model"]: (r.job_name, r.run_key) for r in result.run_requests}


def test_first_version_on_a_slice_is_promoted(reg: Registry, demo_fleet: Fleet) -> None:
    passed(reg, "ctr_gbdt", "a")
    result = tick(build_candidate_sensor(demo_fleet, jobs=ACTION_JOBS))
    [rr] = result.run_requests
    assert rr.job_name == "modelops_promote"
    assert rr.run_key == "promote:ctr_gbdt:global:1:OFFLINE_PASSED:-:-:-"
    cfg = rr.run_config["ops"]["promote_op"]["config"]
    assert (cfg["expected"], cfg["actor"]) == ("OFFLINE_PASSED", CANDIDATE_ACTOR)
    assert "bootstrap" in cfg["reason"]


def test_refreshes_take_the_automated_path(reg: Registry, demo_fleet: Fleet) -> None:
    for m in ("ctr_gbdt", "ctr_mlp", "ctr_keras"):
        prod(reg, m)
    passed(reg, "ctr_gbdt", "b")  # L1
    passed(reg, "ctr_mlp", "b")  # L2, same contract: a weight refresh
    passed(reg, "ctr_keras", "b", contract="ctr_features@2")  # L1: a contract change is fine
    result = tick(build_candidate_sensor(demo_fleet, jobs=ACTION_JOBS))
    assert by_model(result) == {
        "ctr_gbdt": (
            "modelops_start_shadow",
            "start_shadow:ctr_gbdt:global:2:OFFLINE_PASSED:-:-:-",
        ),
        "ctr_mlp": ("modelops_start_shadow", "start_shadow:ctr_mlp:global:2:OFFLINE_PASSED:-:-:-"),
        "ctr_keras": (
            "modelops_start_shadow",
            "start_shadow:ctr_keras:global:2:OFFLINE_PASSED:-:-:-",
        ),
    }
    # A second tick asks for the same runs: the keys dedupe them.
    again = tick(build_candidate_sensor(demo_fleet, jobs=ACTION_JOBS), result.cursor)
    assert by_model(again) == by_model(result)


def test_first_l2_version_waits_for_its_approval(reg: Registry, demo_fleet: Fleet) -> None:
    passed(reg, "ctr_mlp", "a")
    result = tick(build_candidate_sensor(demo_fleet, jobs=ACTION_JOBS))
    assert result.run_requests == [] and "1 waiting" in (result.skip_message or "")


def test_l0_goes_straight_to_prod(reg: Registry, demo_fleet: Fleet) -> None:
    spec = demo_fleet.model("ctr_gbdt").spec.model_copy(
        update={"model_id": "ctr_l0", "tier": Tier.L0}
    )
    reg.create_model(spec)
    prod(reg, "ctr_l0")
    passed(reg, "ctr_l0", "b")
    assert by_model(tick(build_candidate_sensor(demo_fleet, jobs=ACTION_JOBS))) == {
        "ctr_l0": ("modelops_promote", "promote:ctr_l0:global:2:OFFLINE_PASSED:-:-:-")
    }


def test_waiting_versions_log_once(
    reg: Registry, demo_fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    passed(reg, "credit_limit", "a")  # L3, first version: still waits for its approvals
    passed(reg, "ctr_keras", "a")  # L1 first version: promoted
    prod(reg, "ctr_mlp")
    passed(reg, "ctr_mlp", "b", contract="ctr_features@2")  # L2 contract change
    s = build_candidate_sensor(demo_fleet, jobs=ACTION_JOBS)
    first = tick(s)
    assert [r.job_name for r in first.run_requests] == ["modelops_promote"]
    assert json.loads(first.cursor)["waiting"] == {"credit_limit/global": 1, "ctr_mlp/global": 2}
    # The sensor's log goes to Dagster's console logger (stderr) and the tick's log.
    err = capsys.readouterr().err
    waits = [line for line in err.splitlines() if "waiting" in line]
    assert len(waits) == 2, waits
    assert any("credit_limit/global v1" in m and "tier L3" in m for m in waits)
    assert any("ctr_mlp/global v2" in m and "changed feature contract" in m for m in waits)
    second = tick(s, first.cursor)
    assert [r.run_key for r in second.run_requests] == [first.run_requests[0].run_key]
    assert "waiting" not in capsys.readouterr().err


def test_a_busy_slice_and_older_versions_wait(reg: Registry, demo_fleet: Fleet) -> None:
    prod(reg, "ctr_gbdt")
    v2 = passed(reg, "ctr_gbdt", "b")
    reg.transition("ctr_gbdt", v2, State.APPROVED_SHADOW, actor="ops")
    reg.transition("ctr_gbdt", v2, State.SHADOW, actor="ops", percent=100, mode="live")
    passed(reg, "ctr_gbdt", "c")
    passed(reg, "ctr_gbdt", "d")
    result = tick(build_candidate_sensor(demo_fleet, jobs=ACTION_JOBS))
    assert result.run_requests == []
    assert json.loads(result.cursor)["waiting"] == {"ctr_gbdt/global": 4}  # newest only
