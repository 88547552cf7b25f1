"""The `ab_reports/<model>` asset: an A/B test's lift over time with its always-valid
interval, per arm, and its plan against what it has.

The test judged is the model's version in AB_TEST, else its most recent A/B (the registry's
`ab_experiment` rows: where it ran, since when, and the plan recorded on entry). Its span,
from entry to now (or to when the version left AB_TEST), is cut into fixed time steps; at
each step the report reads the prediction-log window since entry, as the online-metrics
sensor would have read it at that tick, and computes the effect the A/B engine tests: the
log-ratio of per-user rates of the primary metric, candidate arm ("ab") against prod, with
its delta-method variance (`modelops.evaluation.ratio`, Deng, Knoblich & Lu 2018). The lift
exp(theta) - 1 is drawn with the normal-mixture confidence sequence (`confidence_sequence`:
Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021) at the engine's own alpha and planned
information, so the picture is the interval the sensor's evidence tag reports, and it may
be read at any look. Protected slices (the log's `segment`) get an arm each. It reports
only: deciding is the sensor's job.
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.lift_chart import lift_chart_metadata
from modelops.evaluation.ab import ABPolicy
from modelops.evaluation.ratio import ArmStats, as_arrays, log_ratio_difference
from modelops.evaluation.sequential_rule import arm_stats
from modelops.fleet import Fleet, ModelDecl
from modelops.spec import State
from resources import PredictionLogResource, RegistryResource

__all__ = [
    "ABLook",
    "ABReportConfig",
    "ab_policy_of_plan",
    "ab_report_key",
    "ab_report_metadata",
    "build_ab_report_asset",
    "look_times",
    "materialize_ab_report",
]

CANDIDATE_ARM = "ab"
PROD_ARM = "prod"


class ABReportConfig(dg.Config):
    """Which A/B to draw (unset: the live one, else the latest) and how many looks."""

    version: int | None = None
    looks: int = 12


@dataclass(frozen=True)
class ABLook:
    """One look: its label, the candidate's and prod's per-user sums of the primary metric
    since entry, and the same per protected segment."""

    label: str
    candidate: ArmStats
    prod: ArmStats
    segments: dict[str, tuple[ArmStats, ArmStats]]


def ab_report_key(decl: ModelDecl) -> dg.AssetKey:
    return dg.AssetKey(["ab_reports", decl.model_id])


def ab_policy_of_plan(plan: dict[str, Any], higher_is_better: bool) -> ABPolicy:
    """The policy the A/B engine ran with (as `SequentialRule.ab_policy` builds it): the
    plan's MDE and power, and half its two-sided alpha for the one-sided test."""
    upd: dict[str, Any] = {"higher_is_better": higher_is_better}
    if plan.get("relative_mde"):
        upd["mde"] = abs(float(plan["relative_mde"]))
    if plan.get("alpha"):
        upd["alpha"] = float(plan["alpha"]) / 2
    if plan.get("power"):
        upd["power"] = float(plan["power"])
    return ABPolicy().model_copy(update=upd)


def look_times(start: float, end: float, looks: int) -> list[float]:
    """Fixed time steps over the experiment's span: the ends of `looks` windows since entry."""
    n = max(1, int(looks))
    span = max(end - start, 0.0)
    return [start + span * k / n for k in range(1, n + 1)]


def _label(elapsed_s: float) -> str:
    if elapsed_s < 2 * 3600:
        return f"+{elapsed_s / 60:.0f} min"
    if elapsed_s < 2 * 86400:
        return f"+{elapsed_s / 3600:.1f} h"
    return f"day {elapsed_s / 86400:.1f}"


def _series(pairs: Sequence[tuple[ArmStats, ArmStats]]) -> tuple[list[float], list[float]]:
    theta, var = log_ratio_difference(
        as_arrays([c for c, _ in pairs]), as_arrays([p for _, p in pairs])
    )
    return [float(x) for x in theta], [float(x) for x in var]


def ab_report_metadata(
    looks: Sequence[ABLook],
    plan: dict[str, Any],
    policy: ABPolicy,
    *,
    version: int,
    title: str,
) -> dict[str, Any]:
    """Asset metadata: the lift with its confidence sequence per arm per look, and the plan
    (users needed per arm) against the users the last look has."""
    design = policy.design()
    cs_alpha = min(0.5, 2 * design.alpha)  # as the engine's SequentialReport draws it
    labels = [lk.label for lk in looks]
    theta, var = _series([(lk.candidate, lk.prod) for lk in looks])
    arms: dict[str, dict[str, Any]] = {
        f"v{version} vs prod": {"looks": labels, "theta": theta, "var": var}
    }
    names = sorted({s for lk in looks for s in lk.segments})
    empty = ArmStats(n_users=0)
    for s in names:
        pairs = [lk.segments.get(s, (empty, empty)) for lk in looks]
        st, sv = _series(pairs)
        arms[f"v{version} vs prod, segment {s}"] = {"looks": labels, "theta": st, "var": sv}
    md = lift_chart_metadata(arms, alpha=cs_alpha, planned_information=design.fixed_information)
    last = looks[-1] if looks else None
    have_c = last.candidate.n_users if last is not None else 0
    have_p = last.prod.n_users if last is not None else 0
    info = 1.0 / var[-1] if var and math.isfinite(var[-1]) and var[-1] > 0 else 0.0
    need_c, need_p = plan.get("n_candidate"), plan.get("n_prod")
    rows = [
        f"### {title}: the plan against what the test has",
        "",
        "| | needed | have | |",
        "|---|---:|---:|---:|",
        _plan_row("users, candidate arm", need_c, have_c),
        _plan_row("users, prod arm", need_p, have_p),
        _plan_row("information (1/Var of the effect)", design.fixed_information, info),
        "",
        f"Needed: the fixed-horizon plan recorded on entry ({plan.get('method', 'plan_ab')}) "
        f"for a {policy.mde:.2%} relative lift at alpha {2 * policy.alpha:g} two-sided, power "
        f"{policy.power:g}; planned {plan.get('planned_days', '?')} days at "
        f"{_n(plan.get('daily_users'))} enrolled users a day. The sequential test stops at "
        f"the latest at {design.max_information:.0f} information "
        f"({design.max_information_factor:g} x fixed).",
    ]
    md.update(
        {
            "version": version,
            "users_candidate": have_c,
            "users_prod": have_p,
            "users_needed_candidate": int(need_c) if need_c is not None else "not planned",
            "users_needed_prod": int(need_p) if need_p is not None else "not planned",
            "plan": dg.MetadataValue.md("\n".join(rows)),
            "method": "log-ratio of per-user rates, delta-method variance (Deng et al. 2018); "
            f"{1 - cs_alpha:.0%} normal-mixture confidence sequence (Howard et al. 2021)",
        }
    )
    if last is not None and math.isfinite(theta[-1]):
        md["lift_last_look"] = round(math.expm1(theta[-1]), 5)
    return md


def _n(x: Any) -> str:
    return f"{x:,.0f}" if isinstance(x, int | float) else "?"


def _plan_row(what: str, need: float | None, have: float) -> str:
    if need is None:
        return f"| {what} | not planned | {have:,.0f} | |"
    pct = have / need if need > 0 else float("nan")
    return f"| {what} | {need:,.0f} | {have:,.0f} | {pct:.0%} |"


def _experiment(reg: Any, decl: ModelDecl, version: int | None) -> Any:
    """The live A/B of the model (or of `version`), else its most recent one."""
    for ls in reg.live_states([State.AB_TEST]):
        if ls.model_id == decl.model_id and version in (None, ls.version):
            exp = reg.ab_experiment(ls.model_id, ls.version, ls.slice)
            if exp is not None:
                return exp
    versions = (
        [version] if version is not None else [v.version for v in reg.list_versions(decl.model_id)]
    )
    found = [e for v in versions for e in reg.ab_experiments(decl.model_id, v)]
    return max(found, key=lambda e: e.started_at) if found else None


def _ended(reg: Any, exp: Any) -> float | None:
    """When the version left AB_TEST on the experiment's slice (None: it has not)."""
    if exp.live:
        return None
    start = exp.started_at.timestamp()
    mv = reg.get_version(exp.model_id, exp.version)
    after = [
        c.ts.timestamp()
        for c in mv.state_history
        if c.slice == exp.slice and c.ts.timestamp() > start and c.state is not State.AB_TEST
    ]
    return min(after) if after else None


def _window(windows: Sequence[Any], arm: str, version: int, *, same: bool) -> Any:
    """The arm's window of the candidate version (`same`) or of another version (prod: the
    one with the most users, should prod have changed mid-test)."""
    ws = [w for w in windows if w.arm == arm and (w.version == version) is same]
    return max(ws, key=lambda w: w.users, default=None)


def materialize_ab_report(
    context: dg.AssetExecutionContext,
    decl: ModelDecl,
    config: ABReportConfig,
    *,
    registry: RegistryResource,
    predlog: PredictionLogResource,
    clock: Callable[[], float] = time.time,
) -> dg.MaterializeResult:
    reg = registry.get()
    key = ab_report_key(decl)
    exp = _experiment(reg, decl, config.version)
    if exp is None:
        return dg.MaterializeResult(asset_key=key, metadata={"status": "no A/B test to draw"})
    spec = reg.get_model(decl.model_id)
    metric = spec.policy.primary_metric
    segments = bool(spec.policy.protected_slices)
    start = exp.started_at.timestamp()
    end = _ended(reg, exp) or float(clock())
    reader = predlog.reader()
    looks: list[ABLook] = []
    for t in look_times(start, end, config.looks):
        kw: dict[str, Any] = {"by_segment": True} if segments else {}
        ws = reader.window(decl.model_id, since_ts=start, until_ts=t, slice=exp.slice, **kw)
        cand = _window(ws, CANDIDATE_ARM, exp.version, same=True)
        prod = _window(ws, PROD_ARM, exp.version, same=False)
        segs: dict[str, tuple[ArmStats, ArmStats]] = {}
        for s in spec.policy.protected_slices if segments else ():
            c_s = cand.segments.get(s, {}).get(metric) if cand is not None else None
            p_s = prod.segments.get(s, {}).get(metric) if prod is not None else None
            if c_s is not None or p_s is not None:
                segs[s] = (arm_stats(c_s), arm_stats(p_s))
        looks.append(
            ABLook(
                label=_label(t - start),
                candidate=arm_stats(cand.user_outcomes.get(metric)) if cand else arm_stats(None),
                prod=arm_stats(prod.user_outcomes.get(metric)) if prod else arm_stats(None),
                segments=segs,
            )
        )
    policy = ab_policy_of_plan(exp.plan, spec.policy.higher_is_better)
    md = ab_report_metadata(
        looks, exp.plan, policy, version=exp.version, title=f"{decl.model_id} v{exp.version}"
    )
    md.update(
        {
            "slice": exp.slice,
            "layer": exp.layer,
            "live": exp.live,
            "started_at": exp.started_at.isoformat(timespec="seconds"),
            "conclusion": (exp.conclusion or {}).get("outcome", "none recorded"),
        }
    )
    context.log.info(f"{decl.model_id} v{exp.version}: A/B report over {len(looks)} looks")
    return dg.MaterializeResult(asset_key=key, metadata=md)


def build_ab_report_asset(fleet: Fleet, decl: ModelDecl) -> dg.AssetsDefinition:
    spec = dg.AssetSpec(
        key=ab_report_key(decl),
        deps=[dg.AssetKey(["models", decl.model_id])],
        group_name="ab_reports",
        description=f"{decl.model_id}'s A/B test: the lift of the primary metric per user with "
        "its always-valid confidence sequence per arm and look, and the plan against the "
        "users it has.",
    )

    @dg.multi_asset(name=spec.key.to_python_identifier(), specs=[spec])
    def _ab(
        context: dg.AssetExecutionContext,
        config: ABReportConfig,
        registry: RegistryResource,
        predlog: PredictionLogResource,
    ) -> Any:
        return materialize_ab_report(context, decl, config, registry=registry, predlog=predlog)

    return _ab
