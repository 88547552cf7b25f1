"""Offline gates: pure functions of metrics, plus the one gate that needs the real Triton.

Each gate returns a `GateResult`; the model asset turns them into blocking asset checks at
ERROR severity and writes the combined result to the registry (OFFLINE_PASSED or FAILED).
Keeping the comparisons pure lets them be tested in microseconds and reused by anything that
holds two sets of metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from assets.offline_eval import higher_is_better
from modelops.evidence import SloMeasurement
from modelops.fleet import GatePolicy
from modelops.spec import Tier

__all__ = [
    "GATE_NAMES",
    "NOT_MEASURED",
    "GateResult",
    "gate_no_regression",
    "gate_no_slice_regression",
    "gate_fairness",
    "gate_latency_memory_slo",
]

GATE_NAMES = (
    "gate_no_regression",
    "gate_no_slice_regression",
    "gate_fairness",
    "gate_latency_memory_slo",
)

NO_PROD = "no prod to compare"
NOT_MEASURED = "NOT_MEASURED"
"""A gate result of its own, never a pass: what it allows follows the tier."""


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict; `values` are the numbers it looked at, for the UI and the audit."""

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    warn: bool = False
    """Passed, with something to flag: a WARN asset check rather than a quiet pass."""

    def as_record(self) -> dict[str, Any]:
        warn = {"warn": True} if self.warn else {}
        return {"passed": self.passed, "detail": self.detail, **warn, **self.values}


def _drop(candidate: float, prod: float, metric: str) -> float:
    """How much worse the candidate is (positive = worse), whatever the metric's direction."""
    return (prod - candidate) if higher_is_better(metric) else (candidate - prod)


def gate_no_regression(
    candidate: Mapping[str, float],
    prod: Mapping[str, float] | None,
    policy: GatePolicy,
    *,
    prod_version: int | None = None,
) -> GateResult:
    """The overall metric may drop at most `max_regression` below the promoted version's."""
    name, metric = "gate_no_regression", policy.metric
    if metric not in candidate:
        return GateResult(name, False, f"candidate has no {metric!r} metric", {})
    if prod is None:
        return GateResult(name, True, NO_PROD, {"candidate": candidate[metric]})
    if metric not in prod:
        return GateResult(name, True, f"prod v{prod_version} has no {metric!r}; {NO_PROD}", {})
    drop = _drop(candidate[metric], prod[metric], metric)
    values = {
        "metric": metric,
        "candidate": round(candidate[metric], 6),
        "prod": round(prod[metric], 6),
        "prod_version": prod_version,
        "drop": round(drop, 6),
        "max_regression": policy.max_regression,
    }
    ok = drop <= policy.max_regression + 1e-12
    verdict = "within" if ok else "exceeds"
    return GateResult(
        name,
        ok,
        f"{metric} {candidate[metric]:.4f} vs prod v{prod_version} {prod[metric]:.4f}: "
        f"drop {drop:+.4f} {verdict} the allowed {policy.max_regression}",
        values,
    )


def gate_no_slice_regression(
    candidate: Mapping[str, Mapping[str, float]],
    prod: Mapping[str, Mapping[str, float]] | None,
    policy: GatePolicy,
    *,
    prod_version: int | None = None,
) -> GateResult:
    """No slice may drop more than `max_slice_regression` against the same slice in prod."""
    name, metric = "gate_no_slice_regression", policy.metric
    if prod is None:
        return GateResult(name, True, NO_PROD, {})
    drops: dict[str, float] = {}
    for s, m in sorted(candidate.items()):
        p = prod.get(s)
        if p is None or metric not in p or metric not in m:
            continue
        drops[s] = round(_drop(m[metric], p[metric], metric), 6)
    if not drops:
        return GateResult(name, True, f"no common slice with {metric!r}; {NO_PROD}", {})
    worst = max(drops, key=drops.__getitem__)
    bad = sorted(s for s, d in drops.items() if d > policy.max_slice_regression + 1e-12)
    values = {
        "metric": metric,
        "prod_version": prod_version,
        "max_slice_regression": policy.max_slice_regression,
        "worst_slice": worst,
        "worst_drop": drops[worst],
        "drops": drops,
    }
    if bad:
        return GateResult(
            name,
            False,
            f"{metric} regressed beyond {policy.max_slice_regression} on "
            + ", ".join(f"{s} ({drops[s]:+.4f})" for s in bad),
            values,
        )
    return GateResult(
        name,
        True,
        f"worst slice {worst} drops {drops[worst]:+.4f}, within {policy.max_slice_regression}",
        values,
    )


def gate_fairness(
    candidate: Mapping[str, Mapping[str, float]],
    protected_slices: list[str],
    policy: GatePolicy,
) -> GateResult:
    """The metric's spread (max - min) across the protected slices stays within the gap."""
    name, metric = "gate_fairness", policy.metric
    if not protected_slices:
        return GateResult(name, True, "no protected slices declared", {})
    missing = [s for s in protected_slices if metric not in candidate.get(s, {})]
    if missing:
        return GateResult(
            name,
            False,
            f"protected slices without a {metric!r} in the eval set: {', '.join(missing)}",
            {"missing": missing},
        )
    vals = {s: round(candidate[s][metric], 6) for s in protected_slices}
    gap = max(vals.values()) - min(vals.values())
    ok = gap <= policy.fairness_max_gap + 1e-12
    return GateResult(
        name,
        ok,
        f"{metric} gap {gap:.4f} across {', '.join(protected_slices)} "
        f"{'within' if ok else 'exceeds'} {policy.fairness_max_gap}",
        {"metric": metric, "gap": round(gap, 6), "max_gap": policy.fairness_max_gap, **vals},
    )


def gate_latency_memory_slo(
    m: SloMeasurement | None,
    policy: GatePolicy,
    *,
    tier: Tier,
    why: str = "",
    override: Mapping[str, Any] | None = None,
    subject: str = "MODEL VERSION",
) -> GateResult:
    """p99 of single-row requests and the serving process's memory, against the policy.

    A half that could not be measured is NOT_MEASURED, with its reason, and never a pass. A
    measured breach fails the gate whatever else is missing. Otherwise NOT_MEASURED means
    what the tier says: allowed at L0; allowed with a warning at L1; blocking at L2 and L3
    unless an override of kind `slo_not_measured` is recorded for the version (`override`:
    its actor and reason). `subject` names the version in the command that records one.
    """
    name = "gate_latency_memory_slo"
    values: dict[str, Any] = {
        "latency_p99_ms_max": policy.latency_p99_ms,
        "memory_mb_max": policy.memory_mb,
    }
    problems: list[str] = []
    within: list[str] = []
    missing: dict[str, str] = {}
    if m is None:
        reason = why or "no measurement was taken"
        missing = {"latency": reason, "memory": reason}
    else:
        values.update(
            p50_ms=round(m.p50_ms, 3),
            p99_ms=round(m.p99_ms, 3),
            requests=m.requests,
            load_s=round(m.load_s, 3),
        )
        if m.p99_ms > policy.latency_p99_ms:
            problems.append(f"p99 {m.p99_ms:.2f} ms exceeds {policy.latency_p99_ms} ms")
        else:
            within.append(f"p99 {m.p99_ms:.2f} ms within {policy.latency_p99_ms} ms")
        if m.rss_mb is None:
            missing["memory"] = m.rss_missing or (
                "the serving process is not on this host (a remote Triton), so its resident "
                "memory cannot be read"
            )
        else:
            values["rss_mb"] = round(m.rss_mb, 1)
            if m.rss_mb > policy.memory_mb:
                problems.append(f"rss {m.rss_mb:.0f} MB exceeds {policy.memory_mb} MB")
            else:
                within.append(f"rss {m.rss_mb:.0f} MB within {policy.memory_mb} MB")
    if missing:
        values["not_measured"] = dict(missing)
    if problems:
        values["result"] = "FAIL"
        return GateResult(name, False, "; ".join(problems), values)
    if not missing:
        values["result"] = "PASS"
        return GateResult(name, True, "; ".join(within), values)
    values["result"] = NOT_MEASURED
    values["tier"] = tier.value
    reasons = set(missing.values())
    if len(reasons) == 1 and len(missing) > 1:
        gap = f"{' and '.join(missing)} {NOT_MEASURED}: {reasons.pop()}"
    else:
        gap = "; ".join(f"{half} {NOT_MEASURED}: {reason}" for half, reason in missing.items())
    head = "; ".join([*within, gap])
    if tier is Tier.L0:
        return GateResult(name, True, f"{head}; allowed at L0", values)
    if tier is Tier.L1:
        return GateResult(name, True, f"{head}; allowed at L1, with a warning", values, warn=True)
    if override is not None:
        values["override"] = {"actor": override["actor"], "reason": override["reason"]}
        return GateResult(
            name,
            True,
            f"{head}; accepted at {tier.value} by the override of {override['actor']}: "
            f"{override['reason']}",
            values,
        )
    return GateResult(
        name,
        False,
        f"{head}; {tier.value} blocks an unmeasured SLO unless someone takes responsibility: "
        f"modelops override {subject} --kind slo_not_measured --actor NAME --reason WHY",
        values,
    )
