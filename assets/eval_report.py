"""The eval report asset: candidate vs prod per slice, and the gate results the registry holds.

It reads everything back from the registry rather than from the model step's memory, so the
report shows what the control plane will act on, and is written beside the registry under
$MODELOPS_HOME/reports/<model>/v<N>.md for people who never open the UI.
"""

from pathlib import Path

import dagster as dg

from assets.model_assets import recorded_gate_results
from assets.translator import IRREVERSIBLE_WARNING
from modelops.errors import NotFoundError
from modelops.fleet import ModelDecl
from modelops.registry import Registry
from modelops.spec import ModelVersion, RollbackClass
from resources import RegistryResource, modelops_home

__all__ = ["materialize_eval_report", "render_eval_report", "report_path"]

_METRICS = ("auc", "log_loss", "click_rate", "predicted_rate")


def report_path(model_id: str, version: int, home: Path | None = None) -> Path:
    return (home or modelops_home()) / "reports" / model_id / f"v{version}.md"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def render_eval_report(decl: ModelDecl, candidate: ModelVersion, prod: ModelVersion | None) -> str:
    """Markdown: header, overall and per-slice comparison, the recorded gates."""
    spec = decl.spec
    m = decl.gates.metric
    lines = [
        f"# {spec.model_id} v{candidate.version}",
        "",
        f"Tier **{spec.tier.value}**, rollback class **{spec.rollback_class.value}**, "
        f"owner {spec.owner_team}. Trained on {candidate.training_data_version}, evaluated on "
        f"{candidate.eval_set_version}; weights `{candidate.weights_hash[:16]}`.",
        "",
    ]
    if spec.rollback_class is RollbackClass.IRREVERSIBLE:
        lines += [f"> **{IRREVERSIBLE_WARNING}**", ""]
    states = ", ".join(f"{s}: {st.value}" for s, st in sorted(candidate.state.items()))
    lines += [f"State: {states}.", ""]
    lines += [
        f"Compared with prod: {f'v{prod.version}' if prod else 'none (no promoted version)'}.",
        "",
        "## Overall",
        "",
        "| metric | candidate | prod | delta |",
        "|---|---|---|---|",
    ]
    for k in _METRICS:
        c = candidate.eval_metrics.get(k)
        p = prod.eval_metrics.get(k) if prod else None
        d = None if c is None or p is None else c - p
        lines.append(f"| {k} | {_fmt(c)} | {_fmt(p)} | {_fmt(d)} |")
    lines += [
        "",
        f"## Per slice ({m})",
        "",
        f"| slice | rows | candidate {m} | prod {m} | delta | click rate |",
        "|---|---|---|---|---|---|",
    ]
    prod_slices = prod.eval_slice_metrics if prod else {}
    for s, sm in sorted(candidate.eval_slice_metrics.items()):
        c = sm.get(m)
        p = prod_slices.get(s, {}).get(m)
        d = None if c is None or p is None else c - p
        lines.append(
            f"| {s} | {int(sm.get('rows', 0))} | {_fmt(c)} | {_fmt(p)} | {_fmt(d)} | "
            f"{_fmt(sm.get('click_rate'))} |"
        )
    gates = recorded_gate_results(candidate)
    lines += ["", "## Offline gates", ""]
    if not gates:
        lines.append("No gate result recorded yet.")
    else:
        lines += ["| gate | result | detail |", "|---|---|---|"]
        for name, rec in sorted(gates.items()):
            verdict = "pass" if rec.get("passed") else "**FAIL**"
            detail = str(rec.get("detail", "")).replace("|", "/")
            lines.append(f"| {name} | {verdict} | {detail} |")
    return "\n".join(lines) + "\n"


def _candidate_version(
    context: dg.AssetExecutionContext, reg: Registry, model_id: str, model_key: dg.AssetKey
) -> ModelVersion:
    """The version the model asset last materialized, else the newest registered one."""
    event = context.instance.get_latest_materialization_event(model_key)
    mat = event.asset_materialization if event is not None else None
    if mat is not None and "version" in mat.metadata:
        return reg.get_version(model_id, int(mat.metadata["version"].value))
    versions = reg.list_versions(model_id)
    if not versions:
        raise NotFoundError(f"{model_id} has no registered version; materialize the model first")
    return max(versions, key=lambda v: v.version)


def _prod_version(reg: Registry, decl: ModelDecl, candidate: int) -> ModelVersion | None:
    for s in decl.spec.slices:
        prod = reg.desired_state(decl.model_id, s).prod_version
        if prod is not None and prod != candidate:
            return reg.get_version(decl.model_id, prod)
    return None


def materialize_eval_report(
    context: dg.AssetExecutionContext,
    decl: ModelDecl,
    model_key: dg.AssetKey,
    *,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    """Render the report of the version `model_key` last materialized, write it beside the
    registry, and show it in the UI."""
    reg = registry.get()
    candidate = _candidate_version(context, reg, decl.model_id, model_key)
    prod = _prod_version(reg, decl, candidate.version)
    text = render_eval_report(decl, candidate, prod)
    path = report_path(decl.model_id, candidate.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    gates = recorded_gate_results(candidate)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(text),
            "path": dg.MetadataValue.path(str(path)),
            "version": candidate.version,
            "prod_version": prod.version if prod else "none",
            "gates_passed": bool(gates) and all(g.get("passed") for g in gates.values()),
        }
    )
