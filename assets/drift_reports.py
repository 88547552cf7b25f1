"""Drift for people: the training reference stored at registration, and the
`drift_reports/<model>` asset.

At registration the model asset bins the training snapshot per feature (contract order) and
the model's predictions on it (`modelops.evaluation.drift.build_reference`) and stores that
reference content-addressed beside the weights; its URI and sha256 go on the version.

The report asset runs the same fast path the drift sensor runs over the recent
prediction-log window of the prod version, and shows it in the asset's metadata (drift per
feature as a table and a bar chart, per slice as a table). The human view is Evidently: one
HTML report per slice (`DataDriftPreset`, training snapshot vs the window), written under
$MODELOPS_HOME/reports/drift/ and linked from the metadata. Drift alerts and never rolls
back; this asset only reports.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np

from modelops.evaluation.drift import (
    DRIFT_NOTE,
    PREDICTION,
    DriftReport,
    build_reference,
    drift_report,
)
from modelops.evaluation.logged import (
    drift_policy,
    feature_columns,
    load_reference,
    save_reference,
)
from modelops.fleet import Fleet, ModelDecl
from modelops.spec import ModelVersion
from resources import (
    ArtifactStoreResource,
    PredictionLogResource,
    RegistryResource,
    modelops_home,
)

__all__ = [
    "REFERENCE_ROWS",
    "build_drift_report_asset",
    "drift_feature_table",
    "drift_markdown",
    "drift_report_key",
    "evidently_html",
    "materialize_drift_report",
    "reference_feature_names",
    "store_training_reference",
]

REFERENCE_ROWS = 50_000  # rows of the training snapshot binned (and predicted) per version
_EVIDENTLY_ROWS = 20_000
_BAR = 24


def reference_feature_names(n_columns: int, contract: Any = None) -> list[str]:
    """The contract's feature names in order when it covers every column, else x0, x1, ..."""
    names = [f.name for f in contract.features] if contract is not None else []
    return names if len(names) == n_columns else [f"x{i}" for i in range(n_columns)]


def _rows(x: np.ndarray, n: int) -> np.ndarray:
    """An evenly spaced, deterministic subset: the same snapshot gives the same reference."""
    if len(x) <= n:
        return x
    return x[np.linspace(0, len(x) - 1, n).astype(np.int64)]


def store_training_reference(
    store: Any,
    x: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray] | None,
    contract: Any = None,
    *,
    bins: int = 10,
) -> tuple[str, str]:
    """Bin the training snapshot (and the model's predictions on it) and store the
    reference content-addressed; returns (uri, sha256) for the version record."""
    sample = _rows(np.asarray(x), REFERENCE_ROWS)
    names = reference_feature_names(sample.shape[1], contract)
    prediction = None
    if predict is not None:
        p = np.asarray(predict(sample), dtype=float)
        if p.ndim == 2 and p.shape[1] == 1:
            p = p[:, 0]
        prediction = p if p.ndim == 1 else None
    ref = build_reference(
        {n: sample[:, i] for i, n in enumerate(names)}, prediction=prediction, bins=bins
    )
    return save_reference(store, ref)


# ---------------------------------------------------------------------- pictures


def drift_feature_table(report: DriftReport) -> dg.TableMetadataValue:
    """Drift per feature (the prediction included): PSI, JS distance, KS, verdict."""
    cols = [
        dg.TableColumn("feature", "string"),
        dg.TableColumn("kind", "string"),
        dg.TableColumn("rows", "int"),
        dg.TableColumn("psi", "float"),
        dg.TableColumn("js_distance", "float"),
        dg.TableColumn("ks_statistic", "float"),
        dg.TableColumn("drifted", "bool"),
        dg.TableColumn("drifted_on_slices", "string"),
    ]
    recs = []
    for name, fd in report.features.items():
        on = [s for s, v in report.drifted_by_slice.items() if name in v]
        recs.append(
            dg.TableRecord(
                {
                    "feature": "prediction" if name == PREDICTION else name,
                    "kind": fd.kind,
                    "rows": fd.n,
                    "psi": None if fd.psi is None else round(fd.psi, 4),
                    "js_distance": None if fd.js_distance is None else round(fd.js_distance, 4),
                    "ks_statistic": None if fd.ks_statistic is None else round(fd.ks_statistic, 4),
                    "drifted": fd.drifted,
                    "drifted_on_slices": ", ".join(on) or "-",
                }
            )
        )
    return dg.MetadataValue.table(records=recs, schema=dg.TableSchema(columns=cols))


def _bar(value: float, scale: float) -> str:
    n = 0 if scale <= 0 else int(round(min(value / scale, 1.0) * _BAR))
    return "█" * n + "·" * (_BAR - n)


def drift_markdown(report: DriftReport, psi_threshold: float, title: str) -> str:
    """Drift per feature as a bar chart (PSI; the threshold marks full scale at 2x)."""
    scale = 2 * psi_threshold
    lines = [
        f"### {title}",
        "",
        f"PSI per feature; a full bar is {scale:g} (twice the alert threshold "
        f"{psi_threshold:g}). {DRIFT_NOTE}.",
        "",
        "| feature | PSI | | verdict |",
        "|---|---:|---|---|",
    ]
    for name, fd in report.features.items():
        psi = fd.psi or 0.0
        verdict = "DRIFT" if fd.drifted else ("ok" if fd.judged else "too few rows")
        label = "prediction" if name == PREDICTION else name
        lines.append(f"| {label} | {psi:.3f} | `{_bar(psi, scale)}` | {verdict} |")
    if report.slices:
        lines += ["", "| slice | drifted features |", "|---|---|"]
        for s, names in sorted(report.drifted_by_slice.items()):
            shown = ["prediction" if n == PREDICTION else n for n in names]
            lines.append(f"| {s} | {', '.join(shown) or 'none'} |")
    return "\n".join(lines)


def evidently_html(reference: Any, current: Any) -> str:
    """Evidently's data drift report (`DataDriftPreset`) of two DataFrames, as one HTML page."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    return str(snapshot.get_html_str(as_iframe=False))


# ---------------------------------------------------------------------- the asset


def drift_report_key(decl: ModelDecl) -> dg.AssetKey:
    return dg.AssetKey(["drift_reports", decl.model_id])


def _prod(reg: Any, decl: ModelDecl) -> ModelVersion | None:
    for s in decl.spec.slices:
        v = reg.desired_state(decl.model_id, s).prod_version
        if v is not None:
            return reg.get_version(decl.model_id, v)
    return None


def _training_frame(reg: Any, mv: ModelVersion, names: list[str]) -> Any:
    """The training snapshot's features as a DataFrame (what the reference was binned from)."""
    from urllib.parse import unquote, urlsplit

    import pandas as pd

    from assets.snapshots import load_snapshot

    ds = reg.get_dataset(mv.training_data_version.name, mv.training_data_version.version)
    path = Path(unquote(urlsplit(ds.uri).path))
    x = _rows(load_snapshot(path).x, _EVIDENTLY_ROWS)
    return pd.DataFrame({n: x[:, i] for i, n in enumerate(names)})


def materialize_drift_report(
    context: dg.AssetExecutionContext,
    decl: ModelDecl,
    *,
    registry: RegistryResource,
    predlog: PredictionLogResource,
    artifacts: ArtifactStoreResource,
    clock: Callable[[], float] = time.time,
    home: Path | None = None,
) -> dg.MaterializeResult:
    """Fast path over the prod version's recent window, and one Evidently report per slice."""
    import pandas as pd

    reg = registry.get()
    key = drift_report_key(decl)
    mv = _prod(reg, decl)
    if mv is None or mv.drift_reference_hash is None:
        why = "no promoted version" if mv is None else f"v{mv.version} has no drift reference"
        context.log.info(f"{decl.model_id}: {why}; nothing to compare")
        return dg.MaterializeResult(asset_key=key, metadata={"status": why})
    spec = reg.get_model(decl.model_id)
    thr = spec.policy.drift
    ref = load_reference(artifacts.get(), mv.drift_reference_hash)
    now = float(clock())
    records = predlog.reader().records(
        decl.model_id, mv.version, since_ts=now - thr.window_s, until_ts=now, arm="prod",
        limit=100_000,
    )  # fmt: skip
    columns, prediction, slices = feature_columns(records, ref, spec.policy.shadow.score_output)
    report = drift_report(ref, columns, drift_policy(thr), prediction=prediction, slices=slices)
    metadata: dict[str, Any] = {
        "version": mv.version,
        "reference_hash": mv.drift_reference_hash,
        "reference_uri": mv.drift_reference_uri or "",
        "window_s": thr.window_s,
        "rows": int(len(slices)),
        "drifted": ", ".join(report.drifted) or "none",
        "drift_per_feature": drift_feature_table(report),
        "drift_chart": dg.MetadataValue.md(
            drift_markdown(report, thr.psi_threshold, f"{decl.model_id} v{mv.version}")
        ),
        "note": DRIFT_NOTE,
    }
    names = [n for n in ref.features if n != PREDICTION]
    if columns and len(slices):
        base = _training_frame(reg, mv, names)
        out_dir = (home or modelops_home()) / "reports" / "drift" / decl.model_id
        out_dir.mkdir(parents=True, exist_ok=True)
        cur_all = pd.DataFrame({n: columns[n] for n in names})
        for s in sorted(set(slices.tolist())):
            cur = cur_all[slices == s]
            path = out_dir / f"v{mv.version}-{s}.html"
            path.write_text(evidently_html(base, cur))
            metadata[f"evidently/{s}"] = dg.MetadataValue.path(str(path))
            metadata[f"evidently_url/{s}"] = dg.MetadataValue.url(path.resolve().as_uri())
            context.log.info(f"Evidently report for slice {s!r}: {path}")
    else:
        metadata["evidently"] = (
            "no logged features in the window (the model's policy does not log inputs, or "
            "no traffic): only the prediction is compared"
        )
    return dg.MaterializeResult(asset_key=key, metadata=metadata)


def build_drift_report_asset(fleet: Fleet, decl: ModelDecl) -> dg.AssetsDefinition:
    """`drift_reports/<model>`, downstream of the model asset."""
    spec = dg.AssetSpec(
        key=drift_report_key(decl),
        deps=[dg.AssetKey(["models", decl.model_id])],
        group_name="drift_reports",
        description=f"Input and prediction drift of {decl.model_id}'s prod version per feature "
        "and slice, with an Evidently report per slice. Drift alerts; it never rolls back.",
        kinds={"evidently"},
    )

    @dg.multi_asset(name=spec.key.to_python_identifier(), specs=[spec])
    def _drift(
        context: dg.AssetExecutionContext,
        registry: RegistryResource,
        predlog: PredictionLogResource,
        artifacts: ArtifactStoreResource,
    ) -> Any:
        return materialize_drift_report(
            context, decl, registry=registry, predlog=predlog, artifacts=artifacts
        )

    return _drift
