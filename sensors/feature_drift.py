"""The feature drift sensor: input and prediction drift per feature and per slice. It alerts,
and never rolls back.

Each tick takes every PROMOTED version with a stored drift reference (binned at registration
from its training snapshot, content-addressed in the artifact store), reads its recent
prediction-log window (`spec.policy.drift.window_s`), and runs the fast path
(`modelops.evaluation.drift`: PSI, Jensen-Shannon and binned KS) overall and per slice. A new
set of drifted features becomes one "feature_drift" alert on the model's audit chain that
names every model depending on a drifted feature (the lineage reverse lookup,
`Registry.dependents_of_feature`; for prediction drift, the model's downstream consumers) with
their tiers. The same drift seen on later ticks is not alerted again.

Why no rollback: distributional drift is often legitimate (a season, a campaign), and
enforcing it would roll back healthy models all the time. The owners decide. This sensor has
no job to launch, so it cannot act even by mistake.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from modelops.evaluation.decision import PROD_ARM
from modelops.evaluation.drift import DRIFT_NOTE, PREDICTION, DriftReference, DriftReport
from modelops.evaluation.logged import drift_from_log, load_reference
from modelops.fleet import Fleet
from modelops.registry import LiveState, Registry
from modelops.spec import ModelSpec, ModelVersion, State, Tier
from resources import ArtifactStoreResource, PredictionLogResource, RegistryResource

__all__ = [
    "DRIFT_ACTOR",
    "DRIFT_ALERT_KIND",
    "FEATURE_DRIFT_SENSOR",
    "DriftFinding",
    "FeatureDriftEvaluator",
    "build_feature_drift_sensor",
    "dependents_with_tiers",
    "record_drift_alert",
]

FEATURE_DRIFT_SENSOR = "modelops_feature_drift_sensor"
DRIFT_ALERT_KIND = "feature_drift"
DRIFT_ACTOR = "system:drift"
_HIGH_TIERS = (Tier.L2, Tier.L3)


@dataclass
class DriftFinding:
    """One version's drift over one window, with who depends on what drifted."""

    live: LiveState
    report: DriftReport
    since_ts: float
    until_ts: float
    dependents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def drifted(self) -> list[str]:
        """Every drifted feature (overall or on any slice), in reference order."""
        hit = set(self.report.drifted)
        for names in self.report.drifted_by_slice.values():
            hit.update(names)
        return [f for f in self.report.features if f in hit]

    def signature(self) -> str:
        """What changed drift-wise: the drifted features overall and per slice."""
        per = {s: sorted(v) for s, v in self.report.drifted_by_slice.items() if v}
        return json.dumps({"all": sorted(self.report.drifted), "slices": per}, sort_keys=True)


def dependents_with_tiers(
    reg: Registry, model_id: str, version: int, features: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """Per drifted feature, the models that depend on it, with their tiers and versions.

    An input feature's dependents are the non-archived versions whose feature contract has
    it (`dependents_of_feature`); the prediction's are this model itself and its declared
    downstream consumers."""
    out: dict[str, list[dict[str, Any]]] = {}
    tiers: dict[str, Tier] = {}

    def tier(m: str) -> str:
        if m not in tiers:
            tiers[m] = reg.get_model(m).tier
        return tiers[m].value

    for f in features:
        by_model: dict[str, list[int]] = {}
        if f == PREDICTION:
            by_model[model_id] = [version]
            for down in reg.dependents_of_model(model_id, version).downstream_models:
                by_model.setdefault(down, [])
        else:
            for key in reg.dependents_of_feature(f):
                by_model.setdefault(key.model_id, []).append(key.version)
        out[f] = [
            {"model_id": m, "tier": tier(m), "versions": sorted(vs)}
            for m, vs in sorted(by_model.items())
        ]
    return out


def _alert_text(f: DriftFinding) -> tuple[str, dict[str, Any]]:
    ls = f.live
    models: dict[str, str] = {}
    for deps in f.dependents.values():
        for d in deps:
            models[d["model_id"]] = d["tier"]
    high = sorted(m for m, t in models.items() if t in {x.value for x in _HIGH_TIERS})
    feats = []
    for name in f.drifted:
        fd = f.report.features[name]
        where = [s for s, v in f.report.drifted_by_slice.items() if name in v]
        psi = "n/a" if fd.psi is None else f"{fd.psi:.3f}"
        label = "prediction" if name == PREDICTION else name
        feats.append(f"{label} (PSI {psi}" + (f"; slices {', '.join(where)})" if where else ")"))
    deps = ", ".join(f"{m} [{t}]" for m, t in sorted(models.items())) or "none"
    detail = (
        f"drift on {ls.model_id}@{ls.version} slice {ls.slice!r}: {'; '.join(feats)}. "
        f"Dependent models ({len(models)}, {len(high)} at L2 or above): {deps}. {DRIFT_NOTE}."
    )
    payload = {
        "slice": ls.slice,
        "version": ls.version,
        "features": f.drifted,
        "drifted_by_slice": {s: v for s, v in f.report.drifted_by_slice.items() if v},
        "psi": {n: f.report.features[n].psi for n in f.drifted},
        "js_distance": {n: f.report.features[n].js_distance for n in f.drifted},
        "dependents": f.dependents,
        "dependent_models": [{"model_id": m, "tier": t} for m, t in sorted(models.items())],
        "reference_hash": f.report.reference_hash,
        "window": [f.since_ts, f.until_ts],
    }
    return detail, payload


def record_drift_alert(reg: Registry, finding: DriftFinding) -> int:
    """The alert as an audit entry on the drifted model's chain (tamper-evident)."""
    detail, payload = _alert_text(finding)
    return reg.record_alert(
        finding.live.model_id,
        kind=DRIFT_ALERT_KIND,
        detail=detail,
        payload=payload,
        actor=DRIFT_ACTOR,
    )


class FeatureDriftEvaluator:
    """One tick's work, apart from Dagster. References are immutable (content-addressed),
    so they are cached across ticks, as are specs and versions."""

    def __init__(
        self, fleet: Fleet, *, clock: Callable[[], float] = time.time, max_rows: int = 20_000
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.max_rows = max_rows
        self._specs: dict[tuple[str, str], ModelSpec] = {}
        self._versions: dict[tuple[str, str, int], ModelVersion] = {}
        self._refs: dict[str, DriftReference] = {}

    def _spec(self, reg: Registry, m: str) -> ModelSpec:
        k = (reg.url, m)
        if k not in self._specs:
            self._specs[k] = reg.get_model(m)
        return self._specs[k]

    def _version(self, reg: Registry, m: str, v: int) -> ModelVersion:
        k = (reg.url, m, v)
        if k not in self._versions:
            self._versions[k] = reg.get_version(m, v)
        return self._versions[k]

    def reference(self, store: Any, sha256: str) -> DriftReference:
        if sha256 not in self._refs:
            self._refs[sha256] = load_reference(store, sha256)
        return self._refs[sha256]

    def evaluate(
        self, reg: Registry, reader: Any, store: Any, log: Any | None = None
    ) -> list[DriftFinding]:
        now = float(self.clock())
        out: list[DriftFinding] = []
        for ls in reg.live_states((State.PROMOTED,)):
            try:
                mv = self._version(reg, ls.model_id, ls.version)
                if mv.drift_reference_hash is None:
                    continue  # registered before references were stored: nothing to compare
                spec = self._spec(reg, ls.model_id)
                thr = spec.policy.drift
                ref = self.reference(store, mv.drift_reference_hash)
                since = now - thr.window_s
                records = reader.records(
                    ls.model_id,
                    ls.version,
                    since_ts=since,
                    until_ts=now,
                    arm=PROD_ARM,
                    slice=ls.slice,
                    limit=self.max_rows,
                )
                report = drift_from_log(
                    records, ref, thr, score_output=spec.policy.shadow.score_output
                )
                finding = DriftFinding(ls, report, since, now)
                if finding.drifted:
                    finding.dependents = dependents_with_tiers(
                        reg, ls.model_id, ls.version, finding.drifted
                    )
            except Exception as exc:  # noqa: BLE001 - one model must not stop the fleet
                if log is not None:
                    log.warning(f"{ls.model_id}/{ls.slice} v{ls.version}: drift not judged: {exc}")
                continue
            out.append(finding)
        return out


def build_feature_drift_sensor(
    fleet: Fleet,
    *,
    clock: Callable[[], float] = time.time,
    name: str = FEATURE_DRIFT_SENSOR,
    interval_s: int | None = None,
) -> dg.SensorDefinition:
    """The drift sensor over the fleet. It targets no job: it alerts and never acts.

    It runs every `interval_s` (default ten sensor intervals: 5 minutes in production), since
    its windows are an hour long and each tick reads every promoted version's window."""
    evaluator = FeatureDriftEvaluator(fleet, clock=clock)

    @dg.sensor(
        name=name,
        minimum_interval_seconds=interval_s or 10 * fleet.durations.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Input and prediction drift of every promoted version against its "
        "training reference, per feature and per slice; alerts naming the dependent models "
        "and their tiers, and never rolls back.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        registry: RegistryResource,
        predlog: PredictionLogResource,
        artifacts: ArtifactStoreResource,
    ) -> dg.SensorResult:
        try:
            last = json.loads(context.cursor) if context.cursor else {}
        except ValueError:
            last = {}
        last = last if isinstance(last, dict) else {}
        reg = registry.get()
        findings = evaluator.evaluate(reg, predlog.reader(), artifacts.get(), context.log)
        seen: dict[str, str] = {}
        alerted = 0
        for f in findings:
            key = f"{f.live.model_id}/{f.live.slice}/v{f.live.version}"
            sig = f.signature()
            seen[key] = sig
            if not f.drifted or last.get(key) == sig:
                continue
            detail, _ = _alert_text(f)
            context.log.warning(f"ALERT {DRIFT_ALERT_KIND}: {detail}")
            try:
                record_drift_alert(reg, f)
                alerted += 1
            except Exception as exc:  # noqa: BLE001 - the log line above stands
                context.log.error(f"could not record the drift alert for {key}: {exc}")
                seen.pop(key)  # try again next tick
        return dg.SensorResult(
            skip_reason=f"{len(findings)} version(s) checked for drift, {alerted} alert(s); "
            "drift alerts and never launches a run",
            cursor=json.dumps(dict(sorted(seen.items())), sort_keys=True),
        )

    return _sensor
