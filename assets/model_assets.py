"""What the model asset does when it runs: train, then one core call, then the gates.

Materializing a model trains it on the newest dataset snapshot, stores the weights
content-addressed, registers the candidate (contract, datasets and version in one registry
transaction), evaluates it per slice, runs the offline gates as blocking ERROR checks and
writes their verdict to the registry before Dagster sees a check fail, so the registry is never
behind the UI. Names, keys and descriptions are the translator's (`assets.translator`).
"""

import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from assets.gates import (
    GATE_NAMES,
    NOT_MEASURED,
    GateResult,
    gate_fairness,
    gate_latency_memory_slo,
    gate_no_regression,
    gate_no_slice_regression,
)
from assets.snapshots import Snapshot, SnapshotData, load_snapshot, newest_snapshot
from assets.translator import IRREVERSIBLE_WARNING
from modelops.errors import ConflictError, IllegalTransition, ModelopsError
from modelops.evidence import SloMeasurement
from modelops.fleet import DatasetDecl, Fleet, ModelDecl
from modelops.registry import SLO_NOT_MEASURED_OVERRIDE, DatasetInput, Registry
from modelops.registry.checkpoints import checkpoint_run_id
from modelops.spec import (
    ModelClass,
    ModelVersion,
    RollbackClass,
    RuntimeRequirements,
    State,
    VersionMeta,
)
from resources import ArtifactStoreResource, RegistryResource, TritonResource

__all__ = [
    "gate_record",
    "materialize_model",
    "observe_dataset",
    "recorded_gate_results",
    "slice_metrics_table",
    "training_fingerprint",
]

MAX_BATCH_SIZE = 64


# --------------------------------------------------------------------- data and features


def _snapshot_metadata(snap: Snapshot, data: SnapshotData) -> dict[str, Any]:
    return {
        "version": snap.version,
        "rows": data.rows,
        "path": dg.MetadataValue.path(str(snap.path)),
        "sha256": snap.sha256,
        "click_rate": round(float(data.y.mean()), 4) if data.rows else 0.0,
        **{f"rows/{c}": n for c, n in data.country_rows.items()},
    }


def observe_dataset(decl: DatasetDecl) -> dg.ObserveResult:
    """The newest snapshot's sha256 is the data version, so Dagster's lineage and the
    registry's pins name the same bytes."""
    snap = newest_snapshot(decl)
    data = load_snapshot(snap)
    return dg.ObserveResult(
        data_version=dg.DataVersion(snap.sha256), metadata=_snapshot_metadata(snap, data)
    )


# --------------------------------------------------------------------- model asset


def training_fingerprint(
    decl: ModelDecl, dataset: Snapshot, eval_set: Snapshot, contract_ref: str | None
) -> str:
    """The training run's identity: model, trainer, params, data and contract.

    Used as the registry's training_run_id, so retraining on unchanged inputs (a scheduled
    refresh with no new data, or a redelivered run) returns the existing version instead of
    registering a duplicate; any new snapshot or parameter gives a new version.
    """
    payload = {
        "model_id": decl.model_id,
        "trainer": decl.trainer,
        "params": decl.trainer_params,
        "dataset": [dataset.name, dataset.version, dataset.sha256],
        "eval_set": [eval_set.name, eval_set.version, eval_set.sha256],
        "contract": contract_ref,
    }
    raw = json.dumps(payload, sort_keys=True, default=str).encode()
    return "train-" + hashlib.sha256(raw).hexdigest()[:24]


def slice_metrics_table(
    candidate: dict[str, dict[str, float]],
    prod: dict[str, dict[str, float]] | None = None,
    metric: str = "auc",
) -> dg.TableMetadataValue:
    """Per-slice eval metrics (and the prod version's primary metric beside them)."""
    columns = [
        dg.TableColumn("slice", "string"),
        dg.TableColumn("rows", "int"),
        dg.TableColumn("auc", "float"),
        dg.TableColumn("log_loss", "float"),
        dg.TableColumn("click_rate", "float"),
        dg.TableColumn("predicted_rate", "float"),
        dg.TableColumn(f"prod_{metric}", "float"),
    ]
    records = []
    for s, m in sorted(candidate.items()):
        p = (prod or {}).get(s, {})
        records.append(
            dg.TableRecord(
                {
                    "slice": s,
                    "rows": int(m.get("rows", 0)),
                    "auc": round(m["auc"], 4) if "auc" in m else None,
                    "log_loss": round(m.get("log_loss", 0.0), 4),
                    "click_rate": round(m.get("click_rate", 0.0), 4),
                    "predicted_rate": round(m.get("predicted_rate", 0.0), 4),
                    f"prod_{metric}": round(p[metric], 4) if metric in p else None,
                }
            )
        )
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def gate_record(results: list[GateResult]) -> dict[str, Any]:
    """What the registry stores with OFFLINE_PASSED / FAILED (and its audit entry)."""
    return {r.name: r.as_record() for r in results}


def recorded_gate_results(version: ModelVersion) -> dict[str, Any]:
    """The gate results the registry recorded for this version (latest), or {}."""
    with_gates = [c for c in version.state_history if c.gate_results]
    if not with_gates:
        return {}
    return dict(max(with_gates, key=lambda c: c.ts).gate_results)


@dataclass
class _ProdBaseline:
    version: int | None
    metrics: dict[str, float] | None
    slice_metrics: dict[str, dict[str, float]] | None


def _prod_baseline(registry: Registry, decl: ModelDecl, candidate: int) -> _ProdBaseline:
    """The PROMOTED version the gates compare against: the first slice with one wins
    (every deployment slice of the demo is `global`)."""
    for s in decl.spec.slices:
        prod = registry.desired_state(decl.model_id, s).prod_version
        if prod is not None and prod != candidate:
            v = registry.get_version(decl.model_id, prod)
            return _ProdBaseline(prod, dict(v.eval_metrics), dict(v.eval_slice_metrics))
    return _ProdBaseline(None, None, None)


def _slo_sample(data: SnapshotData, n: int = 64) -> Any:
    return data.x[: max(1, min(n, data.rows))]


@dataclass(frozen=True)
class _Inputs:
    """What one training run consumes; `run_id` is its identity (see training_fingerprint)."""

    dataset: Snapshot
    eval_set: Snapshot
    contract: Any
    contract_ref: str | None
    run_id: str


@dataclass(frozen=True)
class _Trained:
    weights_hash: str
    weights_uri: str
    overall: dict[str, float]
    per_slice: dict[str, dict[str, float]]
    signature: Any
    drift_reference: tuple[str, str] | None = None  # (uri, sha256) in the artifact store


def _inputs(fleet: Fleet, decl: ModelDecl) -> _Inputs:
    contract = fleet.contract(decl.feature_contract) if decl.feature_contract else None
    contract_ref = contract.ref if contract is not None else None
    ds_snap = newest_snapshot(fleet.dataset(decl.dataset))
    es_snap = newest_snapshot(fleet.dataset(decl.eval_set))
    run_id = training_fingerprint(decl, ds_snap, es_snap, contract_ref)
    return _Inputs(ds_snap, es_snap, contract, contract_ref, run_id)


def _train(
    decl: ModelDecl, train: SnapshotData, held_out: SnapshotData, store: Any, contract: Any = None
) -> _Trained:
    """Fit, export to the serving format, store the weights, evaluate on the eval set, and
    store the binned drift reference of the training snapshot beside the weights."""
    from assets.drift_reports import store_training_reference
    from assets.offline_eval import evaluate
    from assets.trainers import check_trainer_params, load_trainer

    spec = decl.spec
    trainer = load_trainer(decl.trainer)
    check_trainer_params(trainer, decl.trainer_params, decl.trainer)
    with tempfile.TemporaryDirectory(prefix=f"train-{decl.model_id}-") as tmp:
        params = dict(decl.trainer_params)
        seed = int(params.pop("seed", 0))
        trained = trainer(train.x, train.y, Path(tmp), seed=seed, **params)
        if trained.framework is not spec.framework:
            from modelops.errors import SpecError

            raise SpecError(
                f"trainer {decl.trainer} produced a {trained.framework.value} model but "
                f"{decl.model_id} is declared framework {spec.framework.value}"
            )
        ref = store.put_file(trained.artifact)
        probs = trained.predict(held_out.x)
        drift_ref = store_training_reference(store, train.x, trained.predict, contract)
    overall, per_slice = evaluate(held_out.y, probs, held_out.country)
    return _Trained(ref.sha256, ref.uri, overall, per_slice, trained.signature, drift_ref)


def _checkpoint_time(context: dg.AssetExecutionContext, decl: ModelDecl) -> datetime | None:
    """A continuous learner's checkpoint time: the schedule tick that launched the run, else
    now (a manual run); None for every other model."""
    if decl.spec.continuous is None:
        return None
    tick = context.run.tags.get("dagster/scheduled_execution_time")
    at = datetime.fromisoformat(tick) if tick else datetime.now(UTC)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _register_candidate(
    reg: Registry,
    decl: ModelDecl,
    inputs: _Inputs,
    trained: _Trained,
    checkpoint_at: datetime | None = None,
) -> ModelVersion:
    """The one core call: team, model, contract, datasets and version in one transaction
    (for a continuous learner, the checkpoint call, which also applies retention).

    A concurrent run of the same training that registered first gets its version back.
    """

    def dataset(snap: Snapshot) -> DatasetInput:
        return DatasetInput(
            name=snap.name,
            version=snap.version,
            uri=snap.uri,
            content_hash=snap.sha256,
            kind=snap.kind,
        )

    common: dict[str, Any] = dict(
        weights_hash=trained.weights_hash,
        weights_uri=trained.weights_uri,
        training_data=dataset(inputs.dataset),
        eval_set=dataset(inputs.eval_set),
        contract=inputs.contract,
        meta=VersionMeta(
            eval_metrics=trained.overall,
            eval_slice_metrics=trained.per_slice,
            signature=trained.signature,
            runtime_requirements=RuntimeRequirements(max_batch_size=MAX_BATCH_SIZE),
            drift_reference_uri=trained.drift_reference[0] if trained.drift_reference else None,
            drift_reference_hash=trained.drift_reference[1] if trained.drift_reference else None,
        ),
        # The fleet file is the platform's reviewed declaration, so its owner teams are known.
        ensure_team_by="system:fleet",
    )
    if checkpoint_at is not None:
        return reg.register_checkpoint(decl.spec, checkpoint_at=checkpoint_at, **common).version
    return reg.register_candidate(decl.spec, training_run_id=inputs.run_id, **common).version


def materialize_model(
    context: dg.AssetExecutionContext,
    fleet: Fleet,
    decl: ModelDecl,
    key: dg.AssetKey,
    *,
    registry: RegistryResource,
    artifacts: ArtifactStoreResource,
    triton: TritonResource,
) -> Iterator[Any]:
    """Train (unless these inputs already gave a version), register the candidate in one core
    call, then gate it; yields the materialization and one check result per gate."""
    reg = registry.get()
    store = artifacts.get()
    inputs = _inputs(fleet, decl)
    ds_snap, es_snap = inputs.dataset, inputs.eval_set
    train, held_out = load_snapshot(ds_snap), load_snapshot(es_snap)
    context.log.info(
        f"training {decl.model_id} with {decl.trainer} on {ds_snap.name}@v{ds_snap.version} "
        f"({train.rows} rows); training run {inputs.run_id}"
    )
    checkpoint_at = _checkpoint_time(context, decl)
    if checkpoint_at is not None:
        # A continuous learner publishes a checkpoint per tick, even on unchanged inputs
        # (it keeps learning online); the tick time is its identity, so a redelivered tick
        # returns the checkpoint it registered.
        inputs = replace(inputs, run_id=checkpoint_run_id(checkpoint_at))
    version = reg.find_candidate(decl.model_id, inputs.run_id)
    if version is not None and checkpoint_at is not None:
        context.log.info(f"checkpoint {inputs.run_id} is {decl.model_id}@v{version.version}")
    elif version is not None:
        # Same model, trainer, params, data and contract: a scheduled refresh with nothing new
        # to learn. Retraining could still give other bytes (TorchScript and SavedModel
        # exports are not byte-stable), and that must not become a new version to deploy.
        context.log.info(
            f"inputs unchanged since {decl.model_id}@v{version.version} "
            f"(training run {inputs.run_id}); not retraining"
        )
    else:
        trained = _train(decl, train, held_out, store, inputs.contract)
        version = _register_candidate(reg, decl, inputs, trained, checkpoint_at)
    yield from _gate_and_report(context, decl, key, reg, store, triton, inputs, held_out, version)


def _gate_and_report(
    context: dg.AssetExecutionContext,
    decl: ModelDecl,
    key: dg.AssetKey,
    reg: Registry,
    store: Any,
    triton: TritonResource,
    inputs: _Inputs,
    held_out: SnapshotData,
    version: ModelVersion,
) -> Iterator[Any]:
    """Run the gates on a fresh version (or report the recorded ones), then yield the
    materialization and the check results."""
    spec = decl.spec
    ds_snap, es_snap, contract_ref = inputs.dataset, inputs.eval_set, inputs.contract_ref
    weights_sha, weights_uri = version.weights_hash, version.weights_uri
    overall, per_slice = dict(version.eval_metrics), dict(version.eval_slice_metrics)
    v = version.version
    fresh = all(version.state.get(s) is State.REGISTERED for s in spec.slices)
    baseline = _prod_baseline(reg, decl, v)
    if fresh:
        results = _run_gates(
            context,
            decl,
            version,
            overall,
            per_slice,
            baseline,
            store,
            triton,
            held_out,
            inputs.contract,
            reg,
        )
        passed = all(r.passed for r in results)
        if not passed and all(r.passed or r.values.get("result") == NOT_MEASURED for r in results):
            # Blocked only because the SLO could not be measured: nothing is wrong with the
            # candidate, so it is not FAILED. It stays REGISTERED until a run measures it or
            # someone records an override; the next materialization runs the gates again.
            context.log.warning(
                f"{decl.model_id}@{v}: gate result not recorded; only the unmeasured SLO blocks "
                f"it at {spec.tier.value}, so it stays REGISTERED"
            )
        else:
            try:
                reg.record_gate_result(
                    decl.model_id, v, passed=passed, results=gate_record(results)
                )
            except (IllegalTransition, ConflictError) as exc:
                # A concurrent run of the same training recorded first (with its own latency
                # measurements, say); its verdict stands.
                context.log.warning(f"gate result not recorded: {exc}")
        checks = [(r.name, r.passed, r.warn, r.detail, r.values) for r in results]
    else:
        # Unchanged inputs gave the same version; it has moved on, so report what stands.
        states = ", ".join(f"{s}={st.value}" for s, st in sorted(version.state.items()))
        context.log.info(f"{decl.model_id}@{v} is already registered ({states}); gates not re-run")
        recorded = recorded_gate_results(reg.get_version(decl.model_id, v))
        failed = any(st is State.FAILED for st in version.state.values())
        checks = []
        for name in GATE_NAMES:
            rec = dict(recorded.get(name, {}))
            ok = bool(rec.pop("passed", not failed))
            warn = bool(rec.pop("warn", False))
            detail = str(rec.pop("detail", f"recorded earlier; version is {states}"))
            checks.append((name, ok, warn, f"v{v} (recorded earlier): {detail}", rec))

    final = reg.get_version(decl.model_id, v)
    metadata: dict[str, Any] = {
        "version": v,
        "weights_hash": weights_sha,
        "weights_uri": weights_uri,
        "framework": spec.framework.value,
        "tier": spec.tier.value,
        "rollback_class": spec.rollback_class.value,
        "training_run_id": inputs.run_id,
        "dagster_run_id": context.run.run_id,
        "training_data": f"{ds_snap.name}@{ds_snap.version}",
        "eval_set": f"{es_snap.name}@{es_snap.version}",
        "feature_contract": contract_ref or "none",
        "prod_version": baseline.version if baseline.version is not None else "none",
        **{f"state/{s}": st.value for s, st in sorted(final.state.items())},
        **{f"eval/{k}": round(val, 5) for k, val in sorted(overall.items())},
        "eval_slice_metrics": slice_metrics_table(
            per_slice, baseline.slice_metrics, decl.gates.metric
        ),
        "gates_passed": all(c[1] for c in checks),
        "gates_warned": ", ".join(c[0] for c in checks if c[2]) or "none",
    }
    if spec.rollback_class is RollbackClass.IRREVERSIBLE:
        metadata["warning"] = IRREVERSIBLE_WARNING
    yield dg.MaterializeResult(
        asset_key=key,
        metadata=metadata,
        data_version=dg.DataVersion(weights_sha),
    )
    for name, ok, warn, detail, values in checks:
        # A warning is a failed WARN check: flagged in the UI, never blocking.
        yield dg.AssetCheckResult(
            asset_key=key,
            check_name=name,
            passed=ok and not warn,
            severity=dg.AssetCheckSeverity.WARN if warn else dg.AssetCheckSeverity.ERROR,
            description=detail,
            metadata={"detail": detail, "version": v, **_flat(values)},
        )


def _flat(values: dict[str, Any]) -> dict[str, Any]:
    """Check metadata wants scalars; nested dicts become JSON."""
    out: dict[str, Any] = {}
    for k, val in values.items():
        if val is None:
            continue
        if isinstance(val, dict | list):
            out[k] = dg.MetadataValue.json(val)
        else:
            out[k] = val
    return out


def _slo_override(registry: Registry, model_id: str, version: int) -> dict[str, Any] | None:
    """The newest `slo_not_measured` override of this version, from its audit chain: the
    record of who took responsibility is the tamper-evident one."""
    found = None
    for e in registry.audit_entries(model_id):
        if (
            e.action == "override"
            and e.version == version
            and e.payload.get("kind") == SLO_NOT_MEASURED_OVERRIDE
        ):
            found = {"actor": e.actor, "reason": e.payload.get("reason", ""), "ts": e.ts}
    return found


def _run_gates(
    context: dg.AssetExecutionContext,
    decl: ModelDecl,
    version: ModelVersion,
    overall: dict[str, float],
    per_slice: dict[str, dict[str, float]],
    baseline: _ProdBaseline,
    store: Any,
    triton: TritonResource,
    held_out: SnapshotData,
    contract: Any,
    registry: Registry,
) -> list[GateResult]:
    policy = decl.gates
    results = [
        gate_no_regression(overall, baseline.metrics, policy, prod_version=baseline.version),
        gate_no_slice_regression(
            per_slice, baseline.slice_metrics, policy, prod_version=baseline.version
        ),
        gate_fairness(per_slice, decl.spec.policy.protected_slices, policy),
    ]
    from modelops.errors import BackendUnavailable

    def slo(m: SloMeasurement | None, why: str = "") -> GateResult:
        tier = decl.spec.tier
        subject = f"{decl.model_id} {version.version}"
        r = gate_latency_memory_slo(m, policy, tier=tier, why=why, subject=subject)
        if r.passed or r.values.get("result") != NOT_MEASURED:
            return r
        found = _slo_override(registry, decl.model_id, version.version)
        if found is None:
            return r
        return gate_latency_memory_slo(
            m, policy, tier=tier, why=why, override=found, subject=subject
        )

    if decl.spec.model_class is not ModelClass.dnn:
        cls = decl.spec.model_class.value
        results.append(
            slo(None, why=f"{cls} models are not served by Triton, where this gate measures")
        )
    else:
        try:
            m = triton.measure_slo(
                version,
                store=store,
                sample=_slo_sample(held_out),
                requests=policy.slo_requests,
                contract=contract,
            )
            context.log.info(
                f"SLO: {m.requests} requests, p99 {m.p99_ms:.2f} ms, "
                f"rss {m.rss_mb if m.rss_mb is None else round(m.rss_mb)} MB, "
                f"load {m.load_s:.1f} s"
            )
            results.append(slo(m))
        except BackendUnavailable:
            # Infrastructure, not the candidate: fail the step and leave it REGISTERED, so
            # the next run measures it instead of marking good weights FAILED forever.
            raise
        except (ModelopsError, OSError) as exc:
            # The candidate would not load or serve: that is what this gate exists to catch.
            results.append(
                GateResult(
                    "gate_latency_memory_slo",
                    False,
                    f"could not serve the candidate in Triton at {triton.url}: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                    {},
                )
            )
    for r in results:
        context.log.info(f"{r.name}: {'pass' if r.passed else 'FAIL'} - {r.detail}")
    return results
