"""The `shadow_reports/<model>` asset and the scheduled log replay that materializes it.

The report runs the shadow divergence engine (`modelops.evaluation.shadow`, through
`modelops.evaluation.logged.shadow_from_log`, the very call the shadow divergence sensor
makes) over a window of the prediction log: prod's logged answers joined on request id to a
shadow version's (live mirror, or a replay of logged requests through the shadow, which the
gateway's `replay` logs under arm "shadow"). Its metadata shows the divergence per slice as a
table and a bar chart, the verdict with every reason, and the counterfactual caveat. The
schedule re-runs it over the last window, so a replayed window is judged by the same engine
as the live mirror. It reports only: failing a shadow is the sensor's job.
"""

import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from modelops.evaluation.logged import shadow_from_log
from modelops.evaluation.shadow import SHADOW_CAVEAT, ShadowReport
from modelops.fleet import Fleet, ModelDecl
from modelops.spec import State
from resources import PredictionLogResource, RegistryResource

__all__ = [
    "SHADOW_REPLAY_JOB",
    "SHADOW_REPLAY_SCHEDULE",
    "ShadowReportConfig",
    "build_shadow_report_asset",
    "build_shadow_replay_schedule",
    "divergence_markdown",
    "divergence_table",
    "materialize_shadow_report",
    "shadow_report_key",
]

SHADOW_REPLAY_JOB = "modelops_shadow_replay"
SHADOW_REPLAY_SCHEDULE = "modelops_shadow_replay_schedule"
_BAR = 24


class ShadowReportConfig(dg.Config):
    """Which window of the log to judge; unset: since the version entered SHADOW."""

    window_s: float | None = None
    version: int | None = None


def shadow_report_key(decl: ModelDecl) -> dg.AssetKey:
    return dg.AssetKey(["shadow_reports", decl.model_id])


def divergence_table(report: ShadowReport) -> dg.TableMetadataValue:
    cols = [
        dg.TableColumn("slice", "string"),
        dg.TableColumn("pairs", "int"),
        dg.TableColumn("agreement", "float"),
        dg.TableColumn("kl_prod_shadow", "float"),
        dg.TableColumn("js_distance", "float"),
        dg.TableColumn("judged", "bool"),
    ]
    rows = dict(report.slices)
    recs = [
        dg.TableRecord(
            {
                "slice": "all",
                "pairs": report.n_pairs,
                "agreement": _r(report.agreement),
                "kl_prod_shadow": _r(report.kl_prod_shadow),
                "js_distance": _r(report.js_distance),
                "judged": report.verdict != "inconclusive",
            }
        )
    ]
    for s, sd in sorted(rows.items()):
        recs.append(
            dg.TableRecord(
                {
                    "slice": s,
                    "pairs": sd.n_pairs,
                    "agreement": _r(sd.agreement),
                    "kl_prod_shadow": _r(sd.kl_prod_shadow),
                    "js_distance": _r(sd.js_distance),
                    "judged": sd.judged,
                }
            )
        )
    return dg.MetadataValue.table(records=recs, schema=dg.TableSchema(columns=cols))


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _bar(value: float, scale: float) -> str:
    n = 0 if scale <= 0 else int(round(min(value / scale, 1.0) * _BAR))
    return "█" * n + "·" * (_BAR - n)


def divergence_markdown(report: ShadowReport, max_js: float, title: str) -> str:
    """Jensen-Shannon distance per slice as bars (full scale: twice the slice threshold)."""
    scale = 2 * max_js
    lines = [
        f"### {title}: {report.verdict.upper()}",
        "",
        *[f"- {r}" for r in report.reasons],
        "",
        f"JS distance per slice; a full bar is {scale:g} (twice the slice threshold {max_js:g}).",
        "",
        "| slice | pairs | agreement | JS distance | |",
        "|---|---:|---:|---:|---|",
    ]
    for s, sd in sorted(report.slices.items()):
        js = sd.js_distance or 0.0
        agree = "–" if sd.agreement is None else f"{sd.agreement:.2%}"
        lines.append(f"| {s} | {sd.n_pairs} | {agree} | {js:.4f} | `{_bar(js, scale)}` |")
    lines += ["", f"> {SHADOW_CAVEAT}"]
    return "\n".join(lines)


def _target(reg: Any, decl: ModelDecl, version: int | None) -> tuple[int, str, float, int] | None:
    """(shadow version, slice, since, prod version) of the model's shadow, or of `version`."""
    for s in decl.spec.slices:
        ds = reg.desired_state(decl.model_id, s)
        if ds.prod_version is None:
            continue
        v = version if version is not None else (ds.shadow.version if ds.shadow else None)
        if v is None:
            continue
        mv = reg.get_version(decl.model_id, v)
        entered = [c.ts for c in mv.state_history if c.slice == s and c.state is State.SHADOW]
        since = entered[-1].timestamp() if entered else mv.created_at.timestamp()
        return v, s, since, ds.prod_version
    return None


def materialize_shadow_report(
    context: dg.AssetExecutionContext,
    decl: ModelDecl,
    config: ShadowReportConfig,
    *,
    registry: RegistryResource,
    predlog: PredictionLogResource,
    clock: Callable[[], float] = time.time,
    max_pairs: int = 200_000,
) -> dg.MaterializeResult:
    reg = registry.get()
    key = shadow_report_key(decl)
    found = _target(reg, decl, config.version)
    if found is None:
        return dg.MaterializeResult(asset_key=key, metadata={"status": "no shadow to judge"})
    version, slice_, since, prod_v = found
    if config.window_s is not None:
        since = float(clock()) - config.window_s
    reader = predlog.reader()
    shadow = reader.records(
        decl.model_id, version, since_ts=since, arm="shadow", slice=slice_, limit=max_pairs
    )
    prod: list[Any] = []
    if shadow:
        prod = reader.records(
            decl.model_id,
            prod_v,
            since_ts=min(r.ts for r in shadow) - 60.0,
            until_ts=max(r.ts for r in shadow) + 1.0,
            arm="prod",
            slice=slice_,
            limit=4 * max_pairs,
        )
    spec_policy = reg.get_model(decl.model_id).policy
    policy = spec_policy.shadow
    labels = reader.outcome_values([r.request_id for r in shadow], spec_policy.primary_metric)
    report = shadow_from_log(prod, shadow, policy, labels=labels or None)
    context.log.info(f"{decl.model_id} v{version} vs prod v{prod_v}: {report.verdict}")
    return dg.MaterializeResult(
        asset_key=key,
        metadata={
            "version": version,
            "prod_version": prod_v,
            "slice": slice_,
            "verdict": report.verdict,
            "pairs": report.n_pairs,
            "ece_prod": "not measured" if report.ece_prod is None else _r(report.ece_prod),
            "ece_shadow": "not measured" if report.ece_shadow is None else _r(report.ece_shadow),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in report.reasons)),
            "divergence_per_slice": divergence_table(report),
            "divergence_chart": dg.MetadataValue.md(
                divergence_markdown(
                    report, policy.max_slice_js_distance, f"{decl.model_id} v{version}"
                )
            ),
            "caveat": SHADOW_CAVEAT,
            "report": dg.MetadataValue.json(report.model_dump(mode="json")),
        },
    )


def build_shadow_report_asset(fleet: Fleet, decl: ModelDecl) -> dg.AssetsDefinition:
    spec = dg.AssetSpec(
        key=shadow_report_key(decl),
        deps=[dg.AssetKey(["models", decl.model_id])],
        group_name="shadow_reports",
        description=f"Shadow divergence of {decl.model_id}'s shadow version against prod on "
        "the same requests, per slice. Infrastructure and calibration validation, not a "
        "predictor of closed-loop metrics.",
    )

    @dg.multi_asset(name=spec.key.to_python_identifier(), specs=[spec])
    def _shadow(
        context: dg.AssetExecutionContext,
        config: ShadowReportConfig,
        registry: RegistryResource,
        predlog: PredictionLogResource,
    ) -> Any:
        return materialize_shadow_report(context, decl, config, registry=registry, predlog=predlog)

    return _shadow


def build_shadow_replay_schedule(
    fleet: Fleet, cron: str = "0 * * * *"
) -> tuple[Any, dg.ScheduleDefinition]:
    """Every hour, the shadow reports over their window: the same engine as the sensor."""
    job = dg.define_asset_job(
        SHADOW_REPLAY_JOB,
        selection=dg.AssetSelection.groups("shadow_reports"),
        description="judge the logged shadow window (live mirror or replay) of every model",
    )
    return job, dg.ScheduleDefinition(name=SHADOW_REPLAY_SCHEDULE, job=job, cron_schedule=cron)
