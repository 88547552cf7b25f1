"""Assets of a fleet: lineage and UI fields, dataset observation, and model materialization
through real Dagster (in-process) with its gates measured in the real Triton."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

import assets
from assets import IRREVERSIBLE_WARNING, build_dataset_asset, build_model_asset
from assets.gates import (
    GATE_NAMES,
    NO_PROD,
    NOT_MEASURED,
    gate_fairness,
    gate_latency_memory_slo,
    gate_no_regression,
    gate_no_slice_regression,
)
from assets.offline_eval import binary_metrics, evaluate
from assets.snapshots import newest_snapshot
from demo.data import main as data_main
from demo.data import write_snapshot
from modelops.evidence import SloMeasurement
from modelops.fleet import Fleet, GatePolicy
from modelops.registry import Registry
from modelops.spec import State, Tier
from resources import (
    ArtifactStoreResource,
    RegistryResource,
    TritonResource,
    default_resources,
)
from serving.triton.slo import slo_model_name


def _fleet(demo_fleet: Fleet, model_id: str = "ctr_gbdt", **changes: Any) -> Fleet:
    """The demo fleet cut to one model, with overrides (gates, trainer_params) merged in."""
    raw = demo_fleet.model_dump(mode="json")
    model = next(m for m in raw["models"] if m["spec"]["model_id"] == model_id)
    for key, value in changes.items():
        model[key] = {**model.get(key, {}), **value} if isinstance(value, dict) else value
    raw["models"] = [model]
    return Fleet.model_validate(raw)


def _resources(triton: Any) -> dict[str, Any]:
    return {
        "registry": RegistryResource(),
        "artifacts": ArtifactStoreResource(),
        "triton": TritonResource(url=triton.url, repository=str(triton.repository)),
    }


def _write_data(home: Path, n: int = 2000, version: int = 1) -> None:
    write_snapshot(home, "ctr_clicks", version, seed=version, n=n)
    write_snapshot(home, "ctr_eval", 1, seed=99, n=n)


def _materialize(fleet: Fleet, triton: Any, instance: dg.DagsterInstance) -> Any:
    model_id = fleet.models[0].model_id
    return dg.materialize(
        assets.build_fleet_assets(fleet),
        resources=_resources(triton),
        instance=instance,
        raise_on_error=False,
        selection=[dg.AssetKey(["models", model_id]), dg.AssetKey(["eval_reports", model_id])],
    )


def _checks(result: Any) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


# --- definitions: lineage and what the UI shows, no I/O --------------------------------------


def test_fleet_defs_show_lineage_tiers_and_gates(demo_fleet: Fleet) -> None:
    defs = assets.build_fleet_defs(demo_fleet, resources=default_resources())
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"datasets/ctr_clicks", "eval_sets/ctr_eval", "features/f0", "features/f7"} <= keys
    assert {f"models/{m.model_id}" for m in demo_fleet.models} <= keys
    assert {f"eval_reports/{m.model_id}" for m in demo_fleet.models} <= keys
    assert sum(k.startswith("features/") for k in keys) == 8  # deduplicated across models

    gbdt = graph.get(dg.AssetKey(["models", "ctr_gbdt"]))
    parents = {k.to_user_string() for k in gbdt.parent_keys}
    assert {"datasets/ctr_clicks", "eval_sets/ctr_eval", "features/f3"} <= parents
    assert gbdt.tags["modelops/tier"] == "L1"
    assert gbdt.tags["modelops/rollback_class"] == "STATELESS"
    assert gbdt.tags["modelops/framework"] == "onnx"
    assert {"onnx", "triton"} <= set(gbdt.kinds)
    assert gbdt.group_name == "models"
    assert "Tier L1, rollback class STATELESS" in gbdt.description
    assert IRREVERSIBLE_WARNING not in gbdt.description
    credit = graph.get(dg.AssetKey(["models", "credit_limit"]))
    assert IRREVERSIBLE_WARNING in credit.description
    assert (
        "This model cannot be cleanly rolled back. Promotion is an approximately one-way "
        "decision." in credit.description
    )
    report = graph.get(dg.AssetKey(["eval_reports", "ctr_gbdt"]))
    assert {k.to_user_string() for k in report.parent_keys} == {
        "models/ctr_gbdt",
        "eval_sets/ctr_eval",
    }
    ad = defs.get_assets_def(dg.AssetKey(["models", "ctr_gbdt"]))
    specs = {s.name: s for s in ad.check_specs}
    assert set(specs) == set(GATE_NAMES)
    assert all(s.blocking for s in specs.values())


# --- data -------------------------------------------------------------------------------------


def test_snapshots_are_deterministic_with_country_slices(tmp_path: Path) -> None:
    a = write_snapshot(tmp_path / "a", "ctr_clicks", 1, seed=3, n=3000)
    b = write_snapshot(tmp_path / "b", "ctr_clicks", 1, seed=3, n=3000)
    assert a == tmp_path / "a" / "data" / "ctr_clicks" / "v1.npz"
    assert a.read_bytes() == b.read_bytes()
    with np.load(a) as npz:
        assert npz["X"].shape == (3000, 8) and npz["X"].dtype == np.float32
        assert npz["y"].dtype == np.int64 and int(npz["seed"]) == 3
        country, y = npz["country"], npz["y"]
    assert set(country.tolist()) == {"us", "de", "br", "in", "jp"}
    rates = {c: y[country == c].mean() for c in ("in", "jp")}
    assert rates["jp"] - rates["in"] > 0.08  # base rates differ by country
    assert data_main(["--home", str(tmp_path / "c"), "--name", "ctr_eval", "--version", "2"]) == 0
    assert (tmp_path / "c" / "data" / "ctr_eval" / "v2.npz").is_file()


def test_dataset_observation_carries_content_hash(home: Path, demo_fleet: Fleet) -> None:
    decl = demo_fleet.dataset("ctr_clicks")
    write_snapshot(home, "ctr_clicks", 1, seed=1, n=500)
    newest = write_snapshot(home, "ctr_clicks", 2, seed=2, n=700)
    snap = newest_snapshot(decl)
    assert snap.version == 2 and snap.sha256 == hashlib.sha256(newest.read_bytes()).hexdigest()

    instance = dg.DagsterInstance.ephemeral()
    obs_asset = build_dataset_asset(decl)
    # Dagster's in-process observe (the counterpart of dg.materialize) is not re-exported.
    from dagster._core.definitions.observe import observe

    result = observe([obs_asset], instance=instance)
    assert result.success
    key = dg.AssetKey(["datasets", "ctr_clicks"])
    [event] = result.get_asset_observation_events()
    obs = event.asset_observation_data.asset_observation
    assert obs.asset_key == key
    assert obs.tags["dagster/data_version"] == snap.sha256
    assert obs.metadata["version"].value == 2 and obs.metadata["rows"].value == 700
    assert sum(obs.metadata[f"rows/{c}"].value for c in ("us", "de", "br", "in", "jp")) == 700


# --- pure gates and metrics ---------------------------------------------------------------------


def test_offline_metrics_match_a_reference() -> None:
    from sklearn.metrics import log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0.01, 0.99)
    m = binary_metrics(y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    overall, per = evaluate(y, p, np.array(["us", "de"] * 250))
    assert set(per) == {"de", "us"} and per["us"]["rows"] == 250
    assert "auc" not in binary_metrics(np.ones(4), np.full(4, 0.5))  # undefined, not NaN


def test_gate_functions() -> None:
    pol = GatePolicy(
        metric="auc",
        max_regression=0.02,
        max_slice_regression=0.05,
        fairness_max_gap=0.1,
        latency_p99_ms=20,
        memory_mb=500,
    )
    no_prod = gate_no_regression({"auc": 0.7}, None, pol)
    assert no_prod.passed and no_prod.detail == NO_PROD
    assert gate_no_regression({"auc": 0.79}, {"auc": 0.80}, pol, prod_version=3).passed
    bad = gate_no_regression({"auc": 0.75}, {"auc": 0.80}, pol, prod_version=3)
    assert not bad.passed and bad.values["drop"] == pytest.approx(0.05)
    assert "prod v3" in bad.detail
    # log_loss is lower-is-better: a rise is the regression
    ll = GatePolicy(metric="log_loss", max_regression=0.01)
    assert not gate_no_regression({"log_loss": 0.6}, {"log_loss": 0.5}, ll).passed
    assert gate_no_regression({"log_loss": 0.4}, {"log_loss": 0.5}, ll).passed

    prod_s = {"us": {"auc": 0.8}, "de": {"auc": 0.8}}
    assert gate_no_slice_regression({"us": {"auc": 0.79}, "de": {"auc": 0.81}}, prod_s, pol).passed
    s_bad = gate_no_slice_regression({"us": {"auc": 0.79}, "de": {"auc": 0.7}}, prod_s, pol)
    assert not s_bad.passed and s_bad.values["worst_slice"] == "de" and "de" in s_bad.detail
    assert gate_no_slice_regression({"us": {"auc": 0.1}}, None, pol).passed

    fair = {"us": {"auc": 0.80}, "de": {"auc": 0.75}, "br": {"auc": 0.62}}
    assert gate_fairness(fair, ["us", "de"], pol).passed
    unfair = gate_fairness(fair, ["us", "de", "br"], pol)
    assert not unfair.passed and unfair.values["gap"] == pytest.approx(0.18)
    assert not gate_fairness(fair, ["us", "jp"], pol).passed  # a protected slice is missing
    assert gate_fairness(fair, [], pol).passed

    fast = SloMeasurement(p50_ms=2, p99_ms=5, requests=100, rss_mb=300, load_s=1, triton_name="x")
    ok = gate_latency_memory_slo(fast, pol, tier=Tier.L3)
    assert ok.passed and not ok.warn and ok.values["result"] == "PASS"
    slow = SloMeasurement(p50_ms=2, p99_ms=25, requests=100, rss_mb=900, load_s=1, triton_name="x")
    r = gate_latency_memory_slo(slow, pol, tier=Tier.L0)
    assert not r.passed and "p99" in r.detail and "rss" in r.detail
    name = slo_model_name("a__vb", 3)
    assert "__v" not in name and name.startswith("slo-")


def test_slo_gate_not_measured_is_a_result_whose_meaning_follows_the_tier() -> None:
    """What was not measured is NOT_MEASURED with its reason, never a silent pass: allowed at
    L0, a warning at L1, blocking at L2/L3 unless an override is recorded. A measured breach
    fails whatever else is missing."""
    pol = GatePolicy(latency_p99_ms=20, memory_mb=500)
    remote = SloMeasurement(
        p50_ms=1, p99_ms=2, requests=100, rss_mb=None, load_s=1, triton_name="x"
    )
    cases = {
        "not served by Triton": (None, {"latency", "memory"}),
        "remote Triton": (remote, {"memory"}),
    }
    override = {"actor": "oncall", "reason": "memory measured on the GPU node by hand"}
    for label, (m, halves) in cases.items():
        why = "llm models are not served by Triton" if m is None else ""
        results = {t: gate_latency_memory_slo(m, pol, tier=t, why=why) for t in Tier}
        for t, r in results.items():
            assert r.values["result"] == NOT_MEASURED, (label, t)
            assert set(r.values["not_measured"]) == halves, (label, t)
            assert NOT_MEASURED in r.detail and all(h in r.detail for h in halves)
            assert r.as_record()["result"] == NOT_MEASURED  # what the registry keeps
        assert results[Tier.L0].passed and not results[Tier.L0].warn
        assert results[Tier.L1].passed and results[Tier.L1].warn
        assert results[Tier.L1].as_record()["warn"] is True
        for t in (Tier.L2, Tier.L3):
            assert not results[t].passed, (label, t)
            assert "--kind slo_not_measured" in results[t].detail
            accepted = gate_latency_memory_slo(m, pol, tier=t, why=why, override=override)
            assert accepted.passed and accepted.values["override"] == override
            assert accepted.values["result"] == NOT_MEASURED and "oncall" in accepted.detail
        if m is None:
            assert "llm models are not served by Triton" in results[Tier.L0].detail
        else:
            assert results[Tier.L3].values["p99_ms"] == 2  # the measured half is kept
            assert "remote Triton" in results[Tier.L3].values["not_measured"]["memory"]
    slow_remote = SloMeasurement(
        p50_ms=1, p99_ms=30, requests=100, rss_mb=None, load_s=1, triton_name="x"
    )
    for t in Tier:
        r = gate_latency_memory_slo(slow_remote, pol, tier=t, override=override)
        assert not r.passed and r.values["result"] == "FAIL" and "exceeds" in r.detail
        assert r.values["not_measured"] == {"memory": r.values["not_measured"]["memory"]}


def test_slo_probe_says_why_memory_was_not_measured() -> None:
    from serving.triton.slo import _why_no_rss

    assert "not on this host" in _why_no_rss("http://10.1.2.3:8000", "slo-m-1-ab")
    assert "native backend" in _why_no_rss("127.0.0.1:8000", "slo-m-1-ab")
    m = SloMeasurement(
        p50_ms=1,
        p99_ms=2,
        requests=100,
        rss_mb=None,
        load_s=1,
        triton_name="slo-m-1-ab",
        rss_missing=_why_no_rss("http://10.1.2.3:8000", "slo-m-1-ab"),
    )
    r = gate_latency_memory_slo(m, GatePolicy(), tier=Tier.L2)
    assert not r.passed and "10.1.2.3" in r.values["not_measured"]["memory"]


def test_slo_override_kind_is_recorded_only_where_it_means_something(home: Path) -> None:
    """`override --kind slo_not_measured`: an L2/L3 version awaiting its gates; refused
    (nothing written) for a lower tier, a version past its gates, or an unknown kind. The
    IRREVERSIBLE override stays the default kind and keeps its rule."""
    from modelops.cli import main
    from modelops.errors import IllegalTransition, SpecError
    from modelops.identity import generate_signing_key, write_keypair
    from modelops.spec import ModelSpec

    reg = Registry()
    reg.add_team("ads")
    oncall = generate_signing_key()
    key_file, _ = write_keypair(oncall, home / "oncall.key")
    reg.enroll_actor("oncall", "ads", public_key=oncall.public_key)
    for model_id, tier in (("hi", "L2"), ("lo", "L1")):
        reg.create_model(
            ModelSpec.model_validate(
                {
                    "model_id": model_id,
                    "owner_team": "ads",
                    "tier": tier,
                    "model_class": "llm",
                    "framework": "vllm_engine",
                    "rollback_class": "STATELESS",
                    "policy": {"primary_metric": "ctr"},
                }
            )
        )
        reg.register_dataset("d", 1, "s3://b/d", kind="dataset")
        reg.register_dataset("e", 1, "s3://b/e", kind="eval_set")
        for v in (1, 2):
            reg.register_version(
                model_id,
                weights_hash=f"{v}" * 64,
                weights_uri="s3://b/w",
                training_run_id=f"r{v}",
                training_data="d@1",
                eval_set="e@1",
            )
    reg.record_gate_result("hi", 2, passed=True, results={})

    def refused(exc: type[Exception], match: str, **kw: Any) -> None:
        before = reg.row_counts()
        with pytest.raises(exc, match=match):
            reg.override(actor="oncall", key=oncall, reason="measured by hand", **kw)
        assert reg.row_counts() == before

    refused(
        IllegalTransition, "only at L2 and L3", model_id="lo", version=1, kind="slo_not_measured"
    )
    refused(IllegalTransition, "REGISTERED", model_id="hi", version=2, kind="slo_not_measured")
    refused(
        SpecError,
        "allowed: promote_irreversible, slo_not_measured",
        model_id="hi",
        version=1,
        kind="slo",
    )
    refused(IllegalTransition, "only for IRREVERSIBLE", model_id="hi", version=1)  # the default

    code = main(
        ["override", "hi", "1", "--kind", "slo_not_measured", "--actor", "oncall",
         "--key", str(key_file), "--reason", "memory measured on the GPU node by hand"]
    )  # fmt: skip
    assert code == 0
    (entry,) = [e for e in reg.audit_entries("hi") if e.action == "override"]
    assert entry.version == 1 and entry.actor == "oncall"
    assert entry.payload["kind"] == "slo_not_measured" and entry.payload["at_state"] == "REGISTERED"


def _escape_hatch(demo_fleet: Fleet, tier: str) -> Fleet:
    """The demo model declared as an escape-hatch model: not served by Triton, so the SLO
    gate has nothing to measure it in."""
    return _fleet(
        demo_fleet,
        trainer_params={"n_estimators": 10},
        spec={"model_class": "escape_hatch", "tier": tier},
    )


@pytest.mark.xdist_group("triton")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("tier", ["L0", "L1"])
def test_unmeasured_slo_at_l0_and_l1_passes_visibly(
    home: Path, demo_fleet: Fleet, triton: Any, tier: str
) -> None:
    _write_data(home, n=1200)
    fleet = _escape_hatch(demo_fleet, tier)
    model_id = fleet.models[0].model_id
    result = _materialize(fleet, triton, dg.DagsterInstance.ephemeral())
    assert result.success  # an L1 warning does not block
    slo = _checks(result)["gate_latency_memory_slo"]
    warned = tier == "L1"
    # At L1 a failed WARN check: flagged in the UI, never blocking.
    assert slo.passed is not warned
    assert slo.severity is (dg.AssetCheckSeverity.WARN if warned else dg.AssetCheckSeverity.ERROR)
    assert slo.metadata["result"].value == NOT_MEASURED
    assert "escape_hatch models are not served by Triton" in slo.metadata["detail"].value
    reg = Registry()
    [v1] = reg.list_versions(model_id)
    assert v1.state == {"global": State.OFFLINE_PASSED}
    recorded = v1.state_history[-1].gate_results["gate_latency_memory_slo"]
    assert recorded["result"] == NOT_MEASURED and recorded["passed"] is True
    assert recorded.get("warn", False) is warned
    reg.close()


@pytest.mark.xdist_group("triton")
@pytest.mark.timeout(240)
def test_unmeasured_slo_at_l2_blocks_until_an_override_is_recorded(
    home: Path, demo_fleet: Fleet, triton: Any
) -> None:
    _write_data(home, n=1200)
    fleet = _escape_hatch(demo_fleet, "L2")
    model_id = fleet.models[0].model_id
    instance = dg.DagsterInstance.ephemeral()

    blocked = _materialize(fleet, triton, instance)
    assert not blocked.success  # the blocking ERROR check fails the step
    slo = _checks(blocked)["gate_latency_memory_slo"]
    assert not slo.passed and slo.severity is dg.AssetCheckSeverity.ERROR
    assert slo.metadata["result"].value == NOT_MEASURED
    assert f"modelops override {model_id} 1 --kind slo_not_measured" in slo.metadata["detail"].value
    reg = Registry()
    [v1] = reg.list_versions(model_id)
    # Not FAILED: nothing is wrong with the candidate; it waits for a measurement or a human.
    assert v1.state == {"global": State.REGISTERED}
    assert not [e for e in reg.audit_entries(model_id) if e.action == "gate_result"]

    from modelops.identity import generate_signing_key

    oncall = generate_signing_key()
    reg.enroll_actor("oncall", fleet.models[0].spec.owner_team, public_key=oncall.public_key)
    reg.override(
        model_id,
        1,
        actor="oncall",
        key=oncall,
        reason="load-tested on Ray by hand",
        kind="slo_not_measured",
    )
    passed = _materialize(fleet, triton, instance)
    assert passed.success
    slo = _checks(passed)["gate_latency_memory_slo"]
    assert slo.passed and slo.metadata["result"].value == NOT_MEASURED
    assert "oncall" in slo.metadata["detail"].value
    [v1] = reg.list_versions(model_id)
    assert v1.state == {"global": State.OFFLINE_PASSED}
    recorded = v1.state_history[-1].gate_results["gate_latency_memory_slo"]
    assert recorded["result"] == NOT_MEASURED
    assert recorded["override"]["actor"] == "oncall"
    reg.close()


# --- materialization through Dagster, gates in the real Triton ----------------------------------


@pytest.mark.xdist_group("triton")
@pytest.mark.timeout(240)
def test_materialize_registers_gates_and_is_idempotent(
    home: Path, demo_fleet: Fleet, triton: Any
) -> None:
    _write_data(home)
    fleet = _fleet(demo_fleet, trainer_params={"n_estimators": 25})
    instance = dg.DagsterInstance.ephemeral()

    first = _materialize(fleet, triton, instance)
    assert first.success
    reg = Registry()
    [v1] = reg.list_versions("ctr_gbdt")
    assert v1.version == 1 and v1.state == {"global": State.OFFLINE_PASSED}
    assert v1.training_data_version.name == "ctr_clicks"
    assert set(v1.eval_slice_metrics) == {"us", "de", "br", "in", "jp"}
    checks = _checks(first)
    assert set(checks) == set(GATE_NAMES) and all(c.passed for c in checks.values())
    assert all(c.severity is dg.AssetCheckSeverity.ERROR for c in checks.values())
    assert checks["gate_no_regression"].metadata["detail"].value == NO_PROD
    slo = checks["gate_latency_memory_slo"].metadata
    assert slo["p99_ms"].value > 0 and slo["rss_mb"].value > 10
    mats = first.asset_materializations_for_node("models__ctr_gbdt")
    md = mats[0].metadata
    assert md["version"].value == 1 and md["weights_hash"].value == v1.weights_hash
    assert md["state/global"].value == "OFFLINE_PASSED" and md["tier"].value == "L1"
    table = md["eval_slice_metrics"].value
    assert {r.data["slice"] for r in table.records} == {"us", "de", "br", "in", "jp"}
    assert mats[0].tags["dagster/data_version"] == v1.weights_hash
    gate_audit = [e for e in reg.audit_entries("ctr_gbdt") if e.action == "gate_result"]
    assert len(gate_audit) == 1 and gate_audit[0].payload["passed"] is True
    report = (home / "reports" / "ctr_gbdt" / "v1.md").read_text()
    assert "gate_latency_memory_slo" in report and "| us |" in report
    # The gate-only Triton entry is gone and unloaded; nothing with __v was written.
    assert not [p for p in Path(triton.repository).iterdir() if p.name.startswith("slo-")]

    # Unchanged inputs: the same training run, the same version, gates reported, not re-run.
    # Nothing is retrained either (TorchScript and SavedModel exports are not byte-stable, so
    # a retrain could otherwise register other bytes as a "new" version).
    import assets.trainers

    def no_retrain(*_: Any, **__: Any) -> None:
        raise AssertionError("retrained on unchanged inputs")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(assets.trainers, "train_gbdt_onnx", no_retrain)
        again = _materialize(fleet, triton, instance)
    assert again.success
    assert [v.version for v in reg.list_versions("ctr_gbdt")] == [1]
    assert all(c.passed for c in _checks(again).values())
    assert len([e for e in reg.audit_entries("ctr_gbdt") if e.action == "gate_result"]) == 1
    # Redelivery of the same registration (same weights, same run id) is one version.
    same = reg.register_version(
        "ctr_gbdt",
        weights_hash=v1.weights_hash,
        weights_uri=v1.weights_uri,
        training_run_id=v1.training_run_id,
        training_data=v1.training_data_version,
        eval_set=v1.eval_set_version,
    )
    assert same.version == 1

    # v1 goes to prod; a much weaker candidate regresses against it and is FAILED.
    reg.transition("ctr_gbdt", 1, State.PROMOTED, actor="test", reason="bootstrap")
    weak = _fleet(demo_fleet, trainer_params={"n_estimators": 2, "max_depth": 1})
    failed = _materialize(weak, triton, instance)
    assert not failed.success  # a failing blocking ERROR check fails the step
    checks = _checks(failed)
    assert not checks["gate_no_regression"].passed
    assert checks["gate_no_regression"].severity is dg.AssetCheckSeverity.ERROR
    assert checks["gate_no_regression"].metadata["prod_version"].value == 1
    v2 = reg.get_version("ctr_gbdt", 2)
    assert v2.state == {"global": State.FAILED}
    assert v2.eval_metrics["auc"] < v1.eval_metrics["auc"] - 0.02
    assert [v.version for v in reg.list_versions("ctr_gbdt")] == [1, 2]
    assert reg.state_of("ctr_gbdt", 1) is State.PROMOTED
    entries = [e for e in reg.audit_entries("ctr_gbdt") if e.action == "gate_result"]
    assert [e.payload["passed"] for e in entries] == [True, False]
    assert entries[-1].payload["results"]["gate_no_regression"]["passed"] is False
    # The blocked step does not run the report.
    assert not (home / "reports" / "ctr_gbdt" / "v2.md").exists()
    assert reg.verify_audit("ctr_gbdt").ok


@pytest.mark.xdist_group("triton")
@pytest.mark.timeout(180)
def test_latency_slo_failure_marks_failed(home: Path, demo_fleet: Fleet, triton: Any) -> None:
    _write_data(home, n=1200)
    fleet = _fleet(
        demo_fleet,
        trainer_params={"n_estimators": 10},
        gates={"latency_p99_ms": 0.001, "slo_requests": 20},
    )
    result = _materialize(fleet, triton, dg.DagsterInstance.ephemeral())
    assert not result.success
    checks = _checks(result)
    assert checks["gate_no_regression"].passed and checks["gate_fairness"].passed
    slo = checks["gate_latency_memory_slo"]
    assert not slo.passed and "exceeds 0.001 ms" in slo.metadata["detail"].value
    reg = Registry()
    [v1] = reg.list_versions("ctr_gbdt")
    assert v1.state == {"global": State.FAILED}


def _serve_and_compare(home: Path, triton: Any, trainer: Any, framework: str, atol: float) -> None:
    """Train with the fleet trainer, register nothing: write, load, infer, compare."""
    from assets.snapshots import load_snapshot
    from modelops.artifacts import LocalArtifactStore
    from serving.triton.backend import TritonBackend
    from serving.triton.repo import RepositoryWriter

    path = write_snapshot(home, "ctr_clicks", 1, seed=5, n=1500)
    data = load_snapshot(path)
    trained = trainer(data.x, data.y, home / "work", seed=0)
    assert trained.framework.value == framework
    store = LocalArtifactStore(home / "artifacts")
    ref = store.put_file(trained.artifact)
    from modelops.spec import (
        DatasetRef,
        ModelVersion,
        RollbackClass,
        RuntimeRequirements,
        Tier,
    )

    mv = ModelVersion(
        model_id=f"trainer-{framework}",
        version=1,
        weights_uri=ref.uri,
        weights_hash=ref.sha256,
        framework=trained.framework,
        runtime_requirements=RuntimeRequirements(max_batch_size=64),
        training_run_id="t",
        training_data_version=DatasetRef(name="ctr_clicks", version=1),
        eval_set_version=DatasetRef(name="ctr_eval", version=1),
        rollback_class=RollbackClass.STATELESS,
        tier=Tier.L1,
        signature=trained.signature,
        created_at=datetime.now(UTC),
    )
    writer = RepositoryWriter(Path(triton.repository), store)
    entry = writer.write(mv)
    with TritonBackend(triton.url) as backend:
        try:
            backend.load(entry.name)
            x = data.x[:16]
            got = backend.infer(entry.name, {"features": x})["probability"]
            np.testing.assert_allclose(got, trained.predict(x), rtol=0, atol=atol)
        finally:
            backend.unload(entry.name)
            writer.remove(entry.name)


@pytest.mark.xdist_group("triton")
@pytest.mark.timeout(180)
def test_torch_trainer_is_served_by_triton(home: Path, triton: Any) -> None:
    from assets.trainers import train_torch_mlp

    _serve_and_compare(
        home, triton, lambda *a, **k: train_torch_mlp(*a, epochs=40, **k), "pytorch", 1e-5
    )


@pytest.mark.xdist_group("triton")
@pytest.mark.timeout(240)
def test_keras_trainer_is_served_by_triton(home: Path, triton: Any) -> None:
    from assets.trainers import train_keras_savedmodel

    _serve_and_compare(
        home, triton, lambda *a, **k: train_keras_savedmodel(*a, epochs=1, **k), "tensorflow", 1e-4
    )


def test_model_asset_needs_its_snapshots(home: Path, demo_fleet: Fleet) -> None:
    """No data yet: the step fails with a message that says what to run."""
    fleet = _fleet(demo_fleet)
    result = dg.materialize(
        [build_model_asset(fleet, fleet.models[0])],
        resources={
            "registry": RegistryResource(),
            "artifacts": ArtifactStoreResource(),
            "triton": TritonResource(url="127.0.0.1:9"),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "python -m demo.data" in failure.step_failure_data.error.to_string()


def test_trainer_names_and_params_are_checked() -> None:
    from assets.trainers import check_trainer_params, load_trainer, train_gbdt_onnx
    from modelops.errors import SpecError

    assert load_trainer("assets.trainers:train_gbdt_onnx") is train_gbdt_onnx
    with pytest.raises(SpecError, match="no function 'nope'"):
        load_trainer("assets.trainers:nope")
    with pytest.raises(SpecError, match="cannot be imported"):
        load_trainer("assets.no_such_module:fn")
    check_trainer_params(train_gbdt_onnx, {"n_estimators": 5, "seed": 1}, "t")
    with pytest.raises(SpecError, match=r"\['depth'\].*allowed: .*max_depth"):
        check_trainer_params(train_gbdt_onnx, {"depth": 5}, "t")


def test_a_continuous_learner_publishes_one_checkpoint_per_tick(
    home: Path, demo_fleet: Fleet, triton: Any
) -> None:
    """Each schedule tick is a checkpoint (even on unchanged data: the learner keeps learning),
    its time is the version's identity, and a redelivered tick is the same checkpoint."""
    from datetime import UTC, datetime, timedelta

    _write_data(home)
    fleet = _fleet(
        demo_fleet,
        trainer_params={"n_estimators": 25},
        spec={"continuous": {"checkpoint_every_hours": 6, "retain_checkpoints": 2}},
    )
    now = datetime.now(UTC).replace(microsecond=0)
    ticks = [now - timedelta(hours=12), now - timedelta(hours=6)]

    def run(at: datetime) -> Any:
        return dg.materialize(
            assets.build_fleet_assets(fleet),
            resources=_resources(triton),
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
            selection=[dg.AssetKey(["models", "ctr_gbdt"])],
            tags={"dagster/scheduled_execution_time": at.isoformat()},
        )

    assert run(ticks[0]).success and run(ticks[1]).success
    reg = Registry()
    versions = reg.list_versions("ctr_gbdt")
    assert [v.checkpoint_at for v in versions] == ticks
    assert [v.training_run_id for v in versions] == [
        "checkpoint-" + t.strftime("%Y%m%dT%H%M%SZ") for t in ticks
    ]
    assert [c.version for c in reg.checkpoints("ctr_gbdt")] == [1, 2]

    assert run(ticks[1]).success  # the same tick again: its checkpoint, nothing new
    assert [v.version for v in reg.list_versions("ctr_gbdt")] == [1, 2]
