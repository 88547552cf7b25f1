"""The shadow divergence sensor, the feature drift sensor and their report assets, against a
real registry, prediction log and artifact store under a throwaway MODELOPS_HOME.

Prod and shadow answers are written to the log as the gateway writes them: prod under arm
"prod", the mirror under arm "shadow" with the same request id. Time is the sensors'
injected clock, never a sleep.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from assets.drift_reports import (
    build_drift_report_asset,
    store_training_reference,
)
from assets.shadow_reports import build_shadow_report_asset
from jobs import ACTION_JOBS
from jobs.actions import perform
from modelops.actions import JOB_NAMES, ActionKind, ActionRequest
from modelops.errors import IntegrityError
from modelops.evaluation.drift import PREDICTION, DriftPolicy, DriftReference
from modelops.evaluation.logged import load_reference
from modelops.evaluation.shadow import SHADOW_CAVEAT, ShadowPolicy
from modelops.fleet import Fleet
from modelops.registry import Registry
from modelops.spec import DriftThresholds, ShadowThresholds, State, VersionMeta
from resources import ArtifactStoreResource, PredictionLogResource, RegistryResource
from sensors.feature_drift import DRIFT_ALERT_KIND, build_feature_drift_sensor
from sensors.shadow_divergence import (
    SHADOW_ACTOR,
    ShadowDivergenceEvaluator,
    build_shadow_divergence_sensor,
)
from serving.predlog import PredictionLog
from serving.records import Outcome, PredictionRecord

MODEL = "ctr_gbdt"  # L1 in the demo fleet
DEPENDENT = "ctr_mlp"  # L2, same feature contract
FEATURES = [f"f{i}" for i in range(8)]


def _weights(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def _version(reg: Registry, model: str, label: str, meta: VersionMeta | None = None) -> int:
    v = reg.register_version(
        model,
        weights_hash=_weights(label),
        weights_uri=f"file:///weights/{label}.onnx",
        training_run_id=f"run-{label}",
        training_data="ctr_clicks@1",
        eval_set="ctr_eval@1",
        feature_contract_ref="ctr_features@1",
        meta=meta,
    )
    reg.record_gate_result(model, v.version, passed=True, results={"auc": 0.7})
    return v.version


def _training(seed: int = 0, n: int = 5000) -> tuple[np.ndarray, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)

    def predict(batch: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(batch[:, 0] + 0.5 * batch[:, 1])))

    return x, predict


def _registry(home: Path, fleet: Fleet, *, with_reference: bool = False) -> tuple[Registry, int]:
    """MODEL v1 PROMOTED (with a stored drift reference when asked); DEPENDENT registered on
    the same contract. The training snapshot is a real npz file for the Evidently report."""
    reg = Registry()
    data = home / "data"
    data.mkdir(exist_ok=True)
    x, predict = _training()
    np.savez(
        data / "train.npz", X=x, y=np.zeros(len(x), np.int64), country=np.array(["us"] * len(x))
    )
    reg.register_dataset("ctr_clicks", 1, (data / "train.npz").resolve().as_uri())
    reg.register_dataset("ctr_eval", 1, "file:///data/ctr_eval/v1.npz", kind="eval_set")
    reg.register_contract(fleet.contract("ctr_features"))
    for m in (MODEL, DEPENDENT):
        reg.add_team(fleet.model(m).spec.owner_team)
        reg.create_model(fleet.model(m).spec)
    meta = None
    if with_reference:
        store = ArtifactStoreResource().get()
        uri, sha = store_training_reference(store, x, predict, fleet.contract("ctr_features"))
        meta = VersionMeta(drift_reference_uri=uri, drift_reference_hash=sha)
    v1 = _version(reg, MODEL, "a", meta)
    reg.transition(MODEL, v1, State.PROMOTED, actor="ops")
    _version(reg, DEPENDENT, "dep")
    return reg, v1


def _shadow(reg: Registry) -> int:
    v2 = _version(reg, MODEL, "b")
    reg.transition(MODEL, v2, State.APPROVED_SHADOW, actor="ops")
    reg.transition(MODEL, v2, State.SHADOW, actor="ops", percent=100, mode="live")
    return v2


def _out(score: float) -> dict[str, Any]:
    return {"outputs": [{"name": "probability", "datatype": "FP32", "shape": [1, 1],
                         "data": [score]}]}  # fmt: skip


def _log_pairs(
    prod_v: int,
    shadow_v: int,
    n: int,
    shift: float,
    *,
    seed: int = 3,
    stamp: str = "",
    clicks: bool = False,
) -> None:
    """n requests answered by prod and mirrored to the shadow; the shadow's score is prod's
    pushed by `shift` on the logit scale (a miscalibrated candidate when large)."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.0, 1.0, size=n)
    now = time.time()
    with PredictionLog() as log:
        for i in range(n):
            rid = f"req-{stamp}-{i}"
            p = float(1 / (1 + np.exp(-logit[i])))
            s = float(1 / (1 + np.exp(-(logit[i] + shift + rng.normal(0, 0.01)))))
            for version, arm, score in ((prod_v, "prod", p), (shadow_v, "shadow", s)):
                log.submit(
                    PredictionRecord(
                        request_id=rid,
                        ts=now,
                        model_id=MODEL,
                        version=version,
                        arm=arm,
                        slice="global",
                        latency_ms=5.0 + i % 3,
                        outputs=_out(score),
                    )
                )
            if clicks:  # the outcome of what prod served, drawn at prod's (true) rate
                value = float(rng.random() < p)
                log.submit_outcome(Outcome(request_id=rid, ts=now, name="click", value=value))
        assert log.flush()


def _tick(sensor: dg.SensorDefinition, cursor: str | None = None, **extra: Any) -> Any:
    resources = {"registry": RegistryResource(), "predlog": PredictionLogResource(), **extra}
    with dg.build_sensor_context(resources=resources, cursor=cursor) as ctx:
        return sensor.evaluate_tick(ctx)


# ---------------------------------------------------------------------- policy in the spec


def test_spec_thresholds_mirror_the_engine_policies() -> None:
    """The spec's thresholds are the engines' policies plus what only the sensor reads; a
    field or default that drifted apart would judge against a policy nobody registered."""
    for spec_cls, engine_cls, extra in (
        (ShadowThresholds, ShadowPolicy, {"score_output"}),
        (DriftThresholds, DriftPolicy, {"window_s"}),
    ):
        fields = set(spec_cls.model_fields) - extra
        assert fields == set(engine_cls.model_fields), spec_cls
        for name in fields:
            assert spec_cls.model_fields[name].default == engine_cls.model_fields[name].default


# ---------------------------------------------------------------------- shadow divergence


def test_divergence_beyond_threshold_fails_the_shadow_with_reasons_in_the_audit(
    home: Path, demo_fleet: Fleet
) -> None:
    reg, v1 = _registry(home, demo_fleet)
    v2 = _shadow(reg)
    _log_pairs(v1, v2, 1500, shift=1.5)
    sensor = build_shadow_divergence_sensor(demo_fleet, jobs=ACTION_JOBS)
    result = _tick(sensor)
    (rr,) = result.run_requests
    assert rr.job_name == JOB_NAMES[ActionKind.transition]
    cfg = rr.run_config["ops"]["transition_op"]["config"]
    assert (cfg["version"], cfg["target"], cfg["expected"]) == (v2, "FAILED", "SHADOW")
    assert "agreement" in cfg["reason"] and "Jensen-Shannon" in cfg["reason"]
    assert SHADOW_CAVEAT in cfg["reason"]

    # The job's registry step: the transition, audited with the engine's reasons.
    perform(ActionKind.transition, ActionRequest.model_validate(cfg), reg)
    assert reg.get_version(MODEL, v2).state["global"] is State.FAILED
    assert reg.desired_state(MODEL, "global").shadow is None
    (entry,) = [
        e
        for e in reg.audit_entries(MODEL)
        if e.action == "transition" and e.version == v2 and e.payload["to"] == "FAILED"
    ]
    assert entry.actor == SHADOW_ACTOR and entry.payload["from"] == "SHADOW"
    assert entry.payload["automated"] is True
    assert "below 95.00%" in entry.payload["reason"] and SHADOW_CAVEAT in entry.payload["reason"]

    # Once failed, the next tick has no shadow to judge.
    assert not _tick(sensor, result.cursor).run_requests


def test_divergence_within_threshold_launches_nothing(home: Path, demo_fleet: Fleet) -> None:
    reg, v1 = _registry(home, demo_fleet)
    v2 = _shadow(reg)
    _log_pairs(v1, v2, 1500, shift=0.0)
    result = _tick(build_shadow_divergence_sensor(demo_fleet, jobs=ACTION_JOBS))
    assert not result.run_requests
    assert "none beyond its policy" in (result.skip_message or "")
    assert reg.get_version(MODEL, v2).state["global"] is State.SHADOW


def test_calibration_is_measured_on_the_logged_outcomes(home: Path, demo_fleet: Fleet) -> None:
    """With the primary metric's outcome logged for every pair, the sensor measures both
    models' ECE on it: prod's scores are the true click rates, the shifted shadow's are not."""
    reg, v1 = _registry(home, demo_fleet)
    v2 = _shadow(reg)
    _log_pairs(v1, v2, 3000, shift=1.5, clicks=True)
    (verdict,) = ShadowDivergenceEvaluator(demo_fleet).evaluate(
        reg, PredictionLogResource().reader()
    )
    r = verdict.report
    assert r.ece_prod is not None and r.ece_shadow is not None
    assert r.ece_prod < 0.05 < r.ece_shadow - r.ece_prod
    assert any(x.startswith("calibration: shadow ECE") for x in r.reasons)


def test_too_few_pairs_is_inconclusive_and_launches_nothing(home: Path, demo_fleet: Fleet) -> None:
    reg, v1 = _registry(home, demo_fleet)
    v2 = _shadow(reg)
    _log_pairs(v1, v2, 200, shift=3.0)  # badly off, but under min_pairs (1000)
    assert not _tick(build_shadow_divergence_sensor(demo_fleet, jobs=ACTION_JOBS)).run_requests


def test_shadow_report_asset_shows_divergence_per_slice(home: Path, demo_fleet: Fleet) -> None:
    reg, v1 = _registry(home, demo_fleet)
    v2 = _shadow(reg)
    _log_pairs(v1, v2, 1200, shift=1.5)
    asset = build_shadow_report_asset(demo_fleet, demo_fleet.model(MODEL))
    res = dg.materialize(
        [asset], resources={"registry": RegistryResource(), "predlog": PredictionLogResource()}
    )
    assert res.success
    (mat,) = res.asset_materializations_for_node(asset.node_def.name)
    md = mat.metadata
    assert md["verdict"].value == "fail" and md["pairs"].value == 1200
    rows = md["divergence_per_slice"].value.records
    assert [r.data["slice"] for r in rows] == ["all", "global"]
    assert "global" in md["divergence_chart"].value and SHADOW_CAVEAT in md["caveat"].value


# ---------------------------------------------------------------------- drift


def test_reference_is_stored_content_addressed_beside_the_version(
    home: Path, demo_fleet: Fleet
) -> None:
    reg, v1 = _registry(home, demo_fleet, with_reference=True)
    mv = reg.get_version(MODEL, v1)
    store = ArtifactStoreResource().get()
    assert mv.drift_reference_hash is not None
    assert mv.drift_reference_uri == store.uri_for(mv.drift_reference_hash)
    raw = store.read_bytes(mv.drift_reference_hash)
    assert hashlib.sha256(raw).hexdigest() == mv.drift_reference_hash
    ref = load_reference(store, mv.drift_reference_hash)
    assert ref.content_hash() == mv.drift_reference_hash
    assert list(ref.features) == [*FEATURES, PREDICTION]  # contract order, then the prediction
    assert all(f.n == 5000 for f in ref.features.values())
    # Same snapshot and model: the same address (a redelivery stores nothing new).
    x, predict = _training()
    again = store_training_reference(store, x, predict, demo_fleet.contract("ctr_features"))
    assert again == (mv.drift_reference_uri, mv.drift_reference_hash)
    # The register_version audit entry carries the hash, so the reference is tamper-evident.
    (entry,) = [e for e in reg.audit_entries(MODEL) if e.action == "register_version"
                and e.version == v1]  # fmt: skip
    assert entry.payload["drift_reference_hash"] == mv.drift_reference_hash
    # Bytes that no longer hash to their address are refused, not parsed.
    path = Path(mv.drift_reference_uri.removeprefix("file://"))
    path.chmod(0o644)
    path.write_bytes(raw.replace(b'"bins":10', b'"bins":11'))
    with pytest.raises(IntegrityError):
        load_reference(store, mv.drift_reference_hash)
    assert isinstance(DriftReference.model_validate_json(raw), DriftReference)


def _log_features(version: int, n: int, shift_f0: float, *, seed: int = 5) -> None:
    """n prod requests whose logged features are the training distribution with f0 moved."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    x[:, 0] += shift_f0
    now = time.time()
    with PredictionLog() as log:
        for i in range(n):
            score = float(1 / (1 + np.exp(-(x[i, 0] + 0.5 * x[i, 1]))))
            log.submit(
                PredictionRecord(
                    request_id=f"drift-{seed}-{i}",
                    ts=now,
                    model_id=MODEL,
                    version=version,
                    arm="prod",
                    slice="global",
                    latency_ms=4.0,
                    outputs=_out(score),
                    features={"features": [x[i].tolist()]},
                )
            )
        assert log.flush()


def _alerts(reg: Registry, model: str) -> list[Any]:
    return [
        e
        for e in reg.audit_entries(model)
        if e.action == "alert" and e.payload.get("kind") == DRIFT_ALERT_KIND
    ]


def test_drift_alert_names_dependents_with_tiers_and_never_rolls_back(
    home: Path, demo_fleet: Fleet
) -> None:
    reg, v1 = _registry(home, demo_fleet, with_reference=True)
    _log_features(v1, 2000, shift_f0=1.0)
    sensor = build_feature_drift_sensor(demo_fleet, clock=lambda: time.time() + 1.0)
    before = reg.row_counts()
    result = _tick(sensor, artifacts=ArtifactStoreResource())
    assert not result.run_requests  # it alerts; it never launches anything
    assert sensor.targets == []  # and has no job it could launch
    (alert,) = _alerts(reg, MODEL)
    p = alert.payload
    assert "f0" in p["features"] and PREDICTION in p["features"]
    assert not set(p["features"]) - {"f0", PREDICTION}  # the unmoved features did not drift
    deps = {d["model_id"]: d["tier"] for d in p["dependents"]["f0"]}
    assert deps == {MODEL: "L1", DEPENDENT: "L2"}
    assert p["dependent_models"] == [
        {"model_id": MODEL, "tier": "L1"},
        {"model_id": DEPENDENT, "tier": "L2"},
    ]
    assert "1 at L2 or above" in p["detail"] and "never rolls back" in p["detail"]
    # Nothing moved: the version is still promoted, and only the alert entry was written.
    assert reg.get_version(MODEL, v1).state["global"] is State.PROMOTED
    after = reg.row_counts()
    assert {k: after[k] - before[k] for k in after if after[k] != before[k]} == {"audit_log": 1}
    # The same drift on the next tick is not alerted again.
    _tick(sensor, result.cursor, artifacts=ArtifactStoreResource())
    assert len(_alerts(reg, MODEL)) == 1


def test_no_drift_no_alert(home: Path, demo_fleet: Fleet) -> None:
    reg, v1 = _registry(home, demo_fleet, with_reference=True)
    _log_features(v1, 2000, shift_f0=0.0)
    sensor = build_feature_drift_sensor(demo_fleet, clock=lambda: time.time() + 1.0)
    _tick(sensor, artifacts=ArtifactStoreResource())
    assert _alerts(reg, MODEL) == []


def test_evidently_report_asset_materializes_per_slice(home: Path, demo_fleet: Fleet) -> None:
    reg, v1 = _registry(home, demo_fleet, with_reference=True)
    _log_features(v1, 600, shift_f0=1.0)
    asset = build_drift_report_asset(demo_fleet, demo_fleet.model(MODEL))
    res = dg.materialize(
        [asset],
        resources={
            "registry": RegistryResource(),
            "predlog": PredictionLogResource(),
            "artifacts": ArtifactStoreResource(),
        },
    )
    assert res.success
    (mat,) = res.asset_materializations_for_node(asset.node_def.name)
    md = mat.metadata
    html = Path(md["evidently/global"].value)
    assert html.is_file() and html.stat().st_size > 10_000
    text = html.read_text()
    assert "<html" in text.lower() and "f0" in text
    assert md["evidently_url/global"].value == html.resolve().as_uri()
    table = {r.data["feature"]: r.data for r in md["drift_per_feature"].value.records}
    assert table["f0"]["drifted"] is True and table["f3"]["drifted"] is False
    assert "prediction" in table
    assert "f0" in md["drift_chart"].value and md["version"].value == v1


def test_model_asset_stores_the_reference_at_registration(home: Path, demo_fleet: Fleet) -> None:
    """Training registers the version with its binned training reference: contract
    features in order, then the prediction, content-addressed in the artifact store."""
    import assets
    from demo.data import write_snapshot
    from resources import TritonResource

    write_snapshot(home, "ctr_clicks", 1, seed=1, n=1200)
    write_snapshot(home, "ctr_eval", 1, seed=99, n=1200)
    raw = demo_fleet.model_dump(mode="json")
    model = next(m for m in raw["models"] if m["spec"]["model_id"] == MODEL)
    model["trainer_params"] = {**model.get("trainer_params", {}), "n_estimators": 10}
    model["spec"] = {**model["spec"], "model_class": "escape_hatch", "tier": "L0"}
    raw["models"] = [model]
    fleet = Fleet.model_validate(raw)
    res = dg.materialize(
        assets.build_fleet_assets(fleet),
        resources={
            "registry": RegistryResource(),
            "artifacts": ArtifactStoreResource(),
            "triton": TritonResource(url="127.0.0.1:9"),  # never called: not a Triton model
        },
        raise_on_error=False,
        selection=[dg.AssetKey(["models", MODEL])],
    )
    assert res.success
    reg = Registry()
    (mv,) = reg.list_versions(MODEL)
    assert mv.drift_reference_hash is not None
    ref = load_reference(ArtifactStoreResource().get(), mv.drift_reference_hash)
    assert list(ref.features) == [*FEATURES, PREDICTION]
    assert ref.features["f0"].n == 1200 and ref.features[PREDICTION].kind == "numeric"
    reg.close()
