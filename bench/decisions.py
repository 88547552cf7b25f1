"""Decision benchmark: the evaluation engines' error rates by seeded simulation, and their speed.

Run: `.venv/bin/python bench/decisions.py [--sims 2000] [--quick]` (`make bench` runs it with
the defaults). Writes bench/results/decisions.json and prints a Markdown table.

Production defaults: prod click rate 5%, 1M users a day arriving evenly, every user making
1 + Poisson(4) requests with a click propensity of their own (Beta, concentration 10, so a
user's requests are correlated), the 1/5/10% ladder with 1 h dwell, and a decision at every
5-minute tick. Each canary or A/B is driven through the same engine object a sensor calls
(`CanaryEngine.decide_batch`, `ABEngine.decide_batch`), all simulations of a scenario in one
vectorised step per tick. Candidate-arm users of a canary are drawn one by one; prod's
(90-99% of a million users a day) and both A/B arms' sums come from their normal limit
(`ClickModel.clt_sums`, checked against the per-user draw in tests/evaluation).

The old rule (`modelops.evaluation.guardrail.GuardrailRule`, min_samples 1000,
max_primary_drop 0.2) is driven on the same traffic model for the comparison row, through its
own Evidence objects.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, bench/ is sys.path[0]: import the project from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from modelops.evaluation import (  # noqa: E402
    ABEngine,
    ABOutcome,
    ABPolicy,
    ArmArrays,
    CanaryAction,
    CanaryEngine,
    CanaryPolicy,
    SequentialState,
)
from modelops.evaluation.simulate import ClickModel, UserMoments  # noqa: E402
from modelops.evaluation.srm import SRMPolicy, srm_always_valid_p, srm_chi2  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "decisions.json"
TICK_S = 300
DWELL_TICKS = 12  # 1 h at 5-minute ticks
LADDER = (1, 5, 10)
CANARY_MAX_TICKS = 24 * 12  # a canary still undecided after a day is reported as such

TARGETS = {
    "canary.same.false_rollback_rate": "<= 0.01 (Clopper-Pearson upper <= 0.015)",
    "canary.worse10.rolled_back_before_promotion": ">= 0.80",
    "canary.worse30.rolled_back_before_promotion": ">= 0.99",
    "canary.asn_ratio_max": "<= 1.3",
    "ab.same.false_promotion_rate": "<= 0.025",
    "srm.exact_split.false_alarm_rate": "<= 0.001",
    "srm.observed_51_49_flagged_by_50k": "an observed 51/49 of 50/50 flagged by 50,000 users",
    "shadow.pairs_per_s": ">= 1e6",
    "drift.fast_path_s": "<= 0.5 and >= 15x faster than Evidently",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n)
    return {"count": k, "n": n, "rate": k / n, "cp95_low": lo, "cp95_high": hi}


def zeros(n: int) -> ArmArrays:
    return ArmArrays(*(np.zeros(n) for _ in range(6)))


def take(a: ArmArrays, idx: np.ndarray) -> ArmArrays:
    return ArmArrays(*(v[idx] for v in a))


def put(a: ArmArrays, idx: np.ndarray, d: ArmArrays) -> None:
    for v, dv in zip(a, d, strict=True):
        v[idx] += dv


# ---------------------------------------------------------------------------- canaries


def simulate_canaries(
    rule: str, effect: float, sims: int, seed: int, model: ClickModel, prod_moments: UserMoments
) -> dict[str, Any]:
    """`rule`: "engine" (CanaryEngine) or "old" (GuardrailRule). Returns outcome counts and the
    candidate-arm users at the test's conclusion and at the action."""
    rng = np.random.default_rng(seed)
    engine = CanaryEngine(CanaryPolicy(), LADDER)
    old = _OldRule() if rule == "old" else None
    pct = np.full(sims, LADDER[0])
    step_start = np.zeros(sims, dtype=int)
    cand, prod = zeros(sims), zeros(sims)
    cand_step, prod_step = zeros(sims), zeros(sims)  # the old rule's window: the current step
    outcome = np.zeros(sims, dtype=int)  # 0 undecided, 1 passed/promoted, 2 rolled back
    n_concluded = np.full(sims, np.nan)
    n_action = np.full(sims, np.nan)
    ticks_action = np.full(sims, np.nan)
    active = np.ones(sims, dtype=bool)
    upt = model.users_per_tick
    for t in range(CANARY_MAX_TICKS):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        total = rng.poisson(upt, size=idx.size)
        nc = rng.binomial(total, pct[idx] / 100.0)
        dc = model.arm_sums(rng, nc, effect)
        dp = model.clt_sums(rng, total - nc, prod_moments)
        put(cand, idx, dc)
        put(prod, idx, dp)
        put(cand_step, idx, dc)
        put(prod_step, idx, dp)
        dwell = (t - step_start[idx] + 1) >= DWELL_TICKS
        if old is None:
            r = engine.decide_batch(
                take(cand, idx), take(prod, idx), percent=pct[idx], dwell_done=dwell
            )
            concl = np.isin(r.state, (SequentialState.REJECT, SequentialState.ACCEPT))
            first = concl & np.isnan(n_concluded[idx])
            n_concluded[idx[first]] = cand.n_users[idx[first]]
            action, nxt = r.action, r.next_percent
        else:
            action, nxt = old.step(
                take(cand_step, idx), take(prod_step, idx), pct[idx], (t - step_start[idx] + 1)
            )
        adv = action == CanaryAction.ADVANCE
        pct[idx[adv]] = nxt[adv]
        step_start[idx[adv]] = t + 1
        for v in (*cand_step, *prod_step):
            v[idx[adv]] = 0.0
        for code, val in ((CanaryAction.PASS, 1), (CanaryAction.ROLLBACK, 2)):
            hit = idx[action == code]
            outcome[hit] = val
            n_action[hit] = cand.n_users[hit]
            ticks_action[hit] = t + 1
            active[hit] = False
    return {
        "outcome": outcome,
        "n_concluded": n_concluded,
        "n_action": n_action,
        "hours_action": ticks_action * TICK_S / 3600.0,
    }


class _OldRule:
    """GuardrailRule driven as the sensor drives it: Evidence over the current step's window,
    the primary metric as request-level click counts."""

    def __init__(self) -> None:
        from modelops.evaluation.decision import Evidence, Verdict
        from modelops.evaluation.guardrail import GuardrailRule
        from modelops.evidence import OutcomeStats, WindowStats
        from modelops.fleet import OnlinePolicy, PolicyDurations
        from modelops.spec import DecisionPolicy, State, Tier

        self.Evidence, self.Verdict = Evidence, Verdict
        self.OutcomeStats, self.WindowStats = OutcomeStats, WindowStats
        self.rule = GuardrailRule()
        self.state, self.tier = State.CANARY, Tier.L1
        self.policy = DecisionPolicy(primary_metric="click", min_samples=1000)
        self.online = OnlinePolicy(max_primary_drop=0.2)
        self.durations = PolicyDurations(canary_step_s=3600.0)

    def _window(self, arm: str, requests: float, clicks: float) -> Any:
        n = int(round(requests))
        return self.WindowStats(
            model_id="m", version=2 if arm == "canary" else 1, arm=arm, slice="global",
            since_ts=0.0, until_ts=None, first_ts=0.0, last_ts=0.0, requests=n, errors=0,
            error_rate=0.0, timeouts=0, timeout_rate=0.0, latency_mean_ms=10.0,
            latency_p50_ms=10.0, latency_p99_ms=20.0, latency_max_ms=30.0,
            outcomes={"click": self.OutcomeStats(count=n, mean=clicks / requests if n else 0.0)},
        )

    def step(
        self, cand: ArmArrays, prod: ArmArrays, pct: np.ndarray, ticks_in_step: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        action = np.full(pct.shape, CanaryAction.HOLD, dtype=np.int8)
        nxt = np.full(pct.shape, -1, dtype=int)
        for i in range(pct.size):
            ev = self.Evidence(
                model_id="m", slice="global", version=2, state=self.state, percent=int(pct[i]),
                since_ts=0.0, now_ts=float(ticks_in_step[i] * TICK_S),
                candidate=self._window("canary", cand.sum_y[i], cand.sum_x[i]),
                baseline=self._window("prod", prod.sum_y[i], prod.sum_x[i]),
                policy=self.policy, online=self.online, durations=self.durations,
                canary_ladder=list(LADDER), tier=self.tier,
            )
            d = self.rule.decide(ev)
            if d.verdict == self.Verdict.ROLLBACK:
                action[i] = CanaryAction.ROLLBACK
            elif d.verdict == self.Verdict.PROMOTE:
                action[i] = CanaryAction.PASS
            elif d.verdict == self.Verdict.ADVANCE:
                action[i], nxt[i] = CanaryAction.ADVANCE, int(d.next_percent or -1)
        return action, nxt


def per_user_log_var(m: UserMoments) -> float:
    """n * Var(log R) for one user of this population (delta method on the moments)."""
    mx, my = m.mean[0], m.mean[1]
    c = np.asarray(m.cov)
    r = mx / my
    return float((c[0, 0] - 2 * r * c[0, 1] + r * r * c[1, 1]) / (my * my) / (r * r))


def canary_section(sims: int, seed: int, model: ClickModel) -> dict[str, Any]:
    prod_m = model.user_moments()
    v_prod = per_user_log_var(prod_m)
    design = CanaryPolicy().design()
    out: dict[str, Any] = {
        "policy": CanaryPolicy().model_dump(),
        "sims_per_scenario": sims,
        "per_user_log_variance_prod": v_prod,
        "fixed_horizon_information": design.fixed_information,
    }
    asn_ratios = []
    for name, effect in (("same", 0.0), ("worse10", -0.10), ("worse30", -0.30)):
        v_c = per_user_log_var(model.user_moments(effect))
        # The fixed-horizon test at the top of the ladder: 9 prod users per candidate user.
        n_fixed = CanaryPolicy().fixed_horizon_users(v_c, v_prod, 9.0)
        for rule in ("engine", "old"):
            t0 = time.perf_counter()
            r = simulate_canaries(rule, effect, sims, seed + 1 + int(-effect * 100), model, prod_m)
            rolled, passed = int((r["outcome"] == 2).sum()), int((r["outcome"] == 1).sum())
            key = f"{rule}.{name}"
            out[key] = {
                "effect": effect,
                "rolled_back": rate(rolled, sims),
                "promoted": rate(passed, sims),
                "undecided_after_24h": int((r["outcome"] == 0).sum()),
                "hours_to_action_mean": float(np.nanmean(r["hours_action"])),
                "candidate_users_at_action_mean": float(np.nanmean(r["n_action"])),
                "fixed_horizon_candidate_users": n_fixed,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            if rule == "engine":
                concl = r["n_concluded"]
                # A test that never crossed a boundary stopped at the action (or the cap).
                n_used = np.where(np.isnan(concl), r["n_action"], concl)
                asn = float(np.nanmean(n_used))
                out[key]["candidate_users_at_test_conclusion_mean"] = asn
                out[key]["asn_ratio"] = asn / n_fixed
                out[key]["action_sample_ratio"] = float(np.nanmean(r["n_action"])) / n_fixed
                asn_ratios.append(asn / n_fixed)
            log(f"canary {key}: rolled back {rolled}/{sims}, promoted {passed}/{sims}")
    out["asn_ratio_max"] = max(asn_ratios)
    return out


# ---------------------------------------------------------------------------- A/B and SRM


def ab_section(sims: int, seed: int, model: ClickModel) -> dict[str, Any]:
    """A/Bs at 50/50 of all users, through ABEngine.decide_batch until each concludes."""
    rng = np.random.default_rng(seed)
    policy = ABPolicy()
    engine = ABEngine(policy)
    prod_m = model.user_moments()
    v = per_user_log_var(prod_m)
    design = policy.design()
    # Ticks to the horizon at 50/50: information per tick = upt / 2 / (2 v).
    info_per_tick = model.users_per_tick / 2 / (2 * v)
    max_ticks = int(math.ceil(design.max_information / info_per_tick)) + 12
    out: dict[str, Any] = {
        "policy": policy.model_dump(),
        "sims_per_scenario": sims,
        "horizon_days": max_ticks * TICK_S / 86400,
    }
    for name, lift in (("same", 0.0), ("lift_mde", policy.mde), ("lift_2mde", 2 * policy.mde)):
        cand_m = model.user_moments(lift)
        t0 = time.perf_counter()
        c, p = zeros(sims), zeros(sims)
        outcome = np.zeros(sims, dtype=int)
        t_end = np.full(sims, np.nan)
        active = np.ones(sims, dtype=bool)
        for t in range(max_ticks):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            total = rng.poisson(model.users_per_tick, size=idx.size)
            nc = rng.binomial(total, 0.5)
            put(c, idx, model.clt_sums(rng, nc, cand_m))
            put(p, idx, model.clt_sums(rng, total - nc, prod_m))
            r = engine.decide_batch(take(c, idx), take(p, idx), split=0.5)
            done = r.outcome != ABOutcome.CONTINUE
            outcome[idx[done]] = r.outcome[done]
            t_end[idx[done]] = t + 1
            active[idx[done]] = False
        promoted = int((outcome == ABOutcome.PROMOTE).sum())
        out[name] = {
            "lift": lift,
            "promoted": rate(promoted, sims),
            "no_detectable_effect": int((outcome == ABOutcome.NO_DETECTABLE_EFFECT).sum()),
            "held_srm": int((outcome == ABOutcome.HOLD_SRM).sum()),
            "running_at_horizon": int(active.sum()),
            "days_mean": float(np.nanmean(t_end) * TICK_S / 86400),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        log(f"A/B {name}: promoted {promoted}/{sims}")
    return out


def srm_section(sims: int, seed: int, model: ClickModel, horizon_days: float) -> dict[str, Any]:
    """Users per arm tick by tick, the always-valid check at every tick, over an A/B's horizon
    (exact split), and until 50,000 users (51/49 of a configured 50/50)."""
    rng = np.random.default_rng(seed)
    pol = SRMPolicy()
    tau2 = pol.mixture_scale(2)
    share = np.array([0.5, 0.5])
    out: dict[str, Any] = {"policy": pol.model_dump(), "sims": sims}

    def run(p_true: float, ticks: int, stop_users: float | None) -> tuple[np.ndarray, np.ndarray]:
        counts = np.zeros((sims, 2))
        flagged = np.zeros(sims, dtype=bool)
        at = np.full(sims, np.nan)
        for _ in range(ticks):
            total = rng.poisson(model.users_per_tick, size=sims)
            a = rng.binomial(total, p_true)
            counts[:, 0] += a
            counts[:, 1] += total - a
            n = counts.sum(axis=1)
            live = n <= stop_users if stop_users else np.ones(sims, dtype=bool)
            pav = srm_always_valid_p(srm_chi2(counts, share), n, 2, tau2)
            new = live & ~flagged & (pav < pol.alpha) & (n >= pol.min_users)
            at[new] = n[new]
            flagged |= new
        return flagged, at

    ticks = int(horizon_days * 86400 / TICK_S)
    f0, _ = run(0.5, ticks, None)
    out["exact_split"] = {"ticks": ticks, **rate(int(f0.sum()), sims)}
    f1, at1 = run(0.51, int(210_000 / model.users_per_tick) + 2, 200_000)
    out["split_51_49_by_50k_users"] = rate(int(np.sum(at1 <= 50_000)), sims)
    out["split_51_49_by_100k_users"] = rate(int(np.sum(at1 <= 100_000)), sims)
    out["split_51_49_by_200k_users"] = rate(int(f1.sum()), sims)
    out["split_51_49_median_users_at_flag"] = float(np.nanmedian(at1))
    # The observed split itself: an exact 51/49 is flagged at the first n where the
    # always-valid p falls below alpha.
    n = np.arange(1000, 60_001, 100, dtype=float)
    obs = np.stack([0.51 * n, 0.49 * n], axis=1)
    pav = srm_always_valid_p(srm_chi2(obs, share), n, 2, tau2)
    out["observed_51_49_first_flagged_at_users"] = float(n[np.argmax(pav < pol.alpha)])
    log(f"SRM: exact split {int(f0.sum())}/{sims} false alarms; 51/49 {int(f1.sum())}/{sims}")
    return out


# ---------------------------------------------------------------------------- speed


def shadow_section(seed: int, pairs: int = 1_000_000, repeats: int = 5) -> dict[str, Any]:
    from modelops.evaluation import ShadowPolicy, join_on_request_id, shadow_divergence

    rng = np.random.default_rng(seed)
    prod = rng.beta(2, 30, size=pairs)
    shadow = np.clip(prod + rng.normal(0, 0.01, size=pairs), 0, 1)
    labels = rng.random(pairs) < prod
    slices = rng.integers(0, 8, size=pairs)
    lat_p = rng.gamma(4, 2.5, size=pairs)
    lat_s = rng.gamma(4, 2.6, size=pairs)
    err_p = rng.random(pairs) < 0.001
    err_s = rng.random(pairs) < 0.001
    ids = rng.permutation(pairs * 2)[:pairs].astype(np.int64)
    shadow_ids = rng.permutation(ids)
    pol = ShadowPolicy()
    names = [f"s{i}" for i in range(8)]

    def engine() -> Any:
        return shadow_divergence(
            prod, shadow, pol, labels=labels, slices=slices, slice_names=names,
            prod_latency_ms=lat_p, shadow_latency_ms=lat_s, prod_error=err_p, shadow_error=err_s,
        )

    engine()
    best = min(_timed(engine) for _ in range(repeats))
    join_t = min(_timed(lambda: join_on_request_id(ids, shadow_ids)) for _ in range(repeats))
    return {
        "pairs": pairs,
        "engine_s": best,
        "pairs_per_s": pairs / best,
        "join_on_request_id_s": join_t,
        "pairs_per_s_with_join": pairs / (best + join_t),
        "slices": 8,
    }


def engine_tick_section(seed: int, units: int = 500) -> dict[str, Any]:
    """What one sensor tick costs over a fleet: 500 live canaries in one decide_batch call,
    and one decide() per canary (the reason text included)."""
    rng = np.random.default_rng(seed)
    model = ClickModel()
    n_c = rng.integers(500, 20_000, size=units)
    cand = model.clt_sums(rng, n_c, model.user_moments(-0.05))
    prod = model.clt_sums(rng, n_c * 9, model.user_moments())
    pct = rng.choice(np.array(LADDER), size=units)
    dwell = rng.random(units) < 0.5
    engine = CanaryEngine()
    batch = min(
        _timed(lambda: engine.decide_batch(cand, prod, percent=pct, dwell_done=dwell))
        for _ in range(5)
    )
    from modelops.evaluation import ArmStats

    singles = [
        ArmStats(n_users=int(cand.n_users[i]), sum_x=float(cand.sum_x[i]),
                 sum_y=float(cand.sum_y[i]), sum_xx=float(cand.sum_xx[i]),
                 sum_yy=float(cand.sum_yy[i]), sum_xy=float(cand.sum_xy[i]))
        for i in range(units)
    ]
    base = [
        ArmStats(n_users=int(prod.n_users[i]), sum_x=float(prod.sum_x[i]),
                 sum_y=float(prod.sum_y[i]), sum_xx=float(prod.sum_xx[i]),
                 sum_yy=float(prod.sum_yy[i]), sum_xy=float(prod.sum_xy[i]))
        for i in range(units)
    ]

    def one_by_one() -> None:
        for i in range(units):
            engine.decide(singles[i], base[i], percent=int(pct[i]), dwell_done=bool(dwell[i]))

    one_by_one()
    single = min(_timed(one_by_one) for _ in range(3))
    return {"units": units, "decide_batch_s": batch, "decide_each_s": single}


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def drift_fixture(seed: int, rows: int, features: int = 20) -> tuple[dict, dict, list[str]]:
    """16 numeric and 4 categorical features; a quarter of each kind clearly drifted."""
    rng = np.random.default_rng(seed)
    ref, cur, cats = {}, {}, []
    n_cat = features // 5
    for i in range(features - n_cat):
        name = f"num{i}"
        drift = i % 4 == 0
        ref[name] = rng.lognormal(0, 0.5, rows) if i % 2 else rng.normal(10, 2, rows)
        base = rng.lognormal(0, 0.5, rows) if i % 2 else rng.normal(10, 2, rows)
        cur[name] = base * 1.8 if drift else base
    levels = np.array(list("abcdef"))
    for i in range(n_cat):
        name = f"cat{i}"
        cats.append(name)
        ref[name] = rng.choice(levels, rows)
        p = [0.5, 0.3, 0.05, 0.05, 0.05, 0.05] if i % 4 == 0 else None
        cur[name] = rng.choice(levels, rows, p=p)
    return ref, cur, cats


def drift_section(seed: int, rows: int = 100_000) -> dict[str, Any]:
    from modelops.evaluation import build_reference, drift_report

    ref, cur, cats = drift_fixture(seed, rows)
    reference = build_reference(ref, categorical=cats)
    drift_report(reference, cur)
    fast = min(_timed(lambda: drift_report(reference, cur)) for _ in range(5))
    fast_verdicts = drift_report(reference, cur).drifted

    def scipy_path() -> None:
        from scipy.stats import chisquare, ks_2samp

        for name in ref:
            if name in cats:
                lv, rc = np.unique(ref[name], return_counts=True)
                cc = np.array([(cur[name] == v).sum() for v in lv], dtype=float)
                chisquare(cc, rc / rc.sum() * cc.sum())
            else:
                ks_2samp(ref[name], cur[name])

    scipy_path()
    scipy_t = min(_timed(scipy_path) for _ in range(3))

    log("drift: running Evidently's DataDriftPreset on the same data")
    t0 = time.perf_counter()
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    import_t = time.perf_counter() - t0
    nums = [k for k in ref if k not in cats]
    dd = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    ref_ds = Dataset.from_pandas(pd.DataFrame(ref), data_definition=dd)
    cur_ds = Dataset.from_pandas(pd.DataFrame(cur), data_definition=dd)
    t0 = time.perf_counter()
    snap = Report([DataDriftPreset()]).run(current_data=cur_ds, reference_data=ref_ds)
    ev_t = time.perf_counter() - t0
    ev_drifted = sorted(evidently_drifted(snap.dict()))
    return {
        "rows": rows,
        "features": len(ref),
        "fast_path_s": fast,
        "scipy_s": scipy_t,
        "evidently_s": ev_t,
        "evidently_import_s": import_t,
        "evidently_over_fast": ev_t / fast,
        "scipy_over_fast": scipy_t / fast,
        "fast_path_drifted": sorted(fast_verdicts),
        "evidently_drifted": ev_drifted,
        "verdicts_agree": sorted(fast_verdicts) == ev_drifted,
    }


def evidently_drifted(snapshot: dict[str, Any]) -> set[str]:
    """Columns whose ValueDrift crossed its threshold (distance methods: value >= threshold;
    p-value methods: value < threshold)."""
    out = set()
    for m in snapshot["metrics"]:
        cfg = m.get("config", {})
        if not str(cfg.get("type", "")).endswith("ValueDrift"):
            continue
        method = str(cfg.get("method", "")).lower()
        value, thr = float(m["value"]), float(cfg["threshold"])
        is_p = "p_value" in method or "p-value" in method
        if (value < thr) if is_p else (value >= thr):
            out.add(cfg["column"])
    return out


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=2000, help="simulated canaries / A/Bs each")
    ap.add_argument("--srm-sims", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=20260101)
    ap.add_argument("--skip-evidently", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    from bench.benchlib import machine_info

    model = ClickModel()
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info([]),
        "command": " ".join(["python bench/decisions.py", *(argv or sys.argv[1:])]),
        "traffic": model.model_dump() | {"ladder": list(LADDER), "dwell_s": DWELL_TICKS * TICK_S},
        "targets": TARGETS,
    }
    res["canary"] = canary_section(args.sims, args.seed, model)
    res["ab"] = ab_section(args.sims, args.seed + 1000, model)
    res["srm"] = srm_section(args.srm_sims, args.seed + 2000, model, res["ab"]["horizon_days"])
    res["shadow"] = shadow_section(args.seed + 3000)
    res["engine_tick"] = engine_tick_section(args.seed + 5000)
    if args.skip_evidently:
        res["drift"] = {"skipped": "--skip-evidently"}
    else:
        res["drift"] = drift_section(args.seed + 4000)
    c, a, s = res["canary"], res["ab"], res["srm"]
    same = c["engine.same"]["rolled_back"]
    met = {
        "canary.same.false_rollback_rate": same["rate"] <= 0.01 and same["cp95_high"] <= 0.015,
        "canary.worse10.rolled_back_before_promotion": (
            c["engine.worse10"]["rolled_back"]["rate"] >= 0.80
        ),
        "canary.worse30.rolled_back_before_promotion": (
            c["engine.worse30"]["rolled_back"]["rate"] >= 0.99
        ),
        "canary.asn_ratio_max": c["asn_ratio_max"] <= 1.3,
        "ab.same.false_promotion_rate": a["same"]["promoted"]["rate"] <= 0.025,
        "srm.exact_split.false_alarm_rate": s["exact_split"]["rate"] <= 0.001,
        "srm.observed_51_49_flagged_by_50k": s["observed_51_49_first_flagged_at_users"] <= 50_000,
        "shadow.pairs_per_s": res["shadow"]["pairs_per_s"] >= 1e6,
    }
    if "fast_path_s" in res["drift"]:
        d = res["drift"]
        met["drift.fast_path_s"] = d["fast_path_s"] <= 0.5 and d["evidently_over_fast"] >= 15
    res["targets_met"] = met
    res["seconds_total"] = round(time.perf_counter() - t0, 1)
    res["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=_json) + "\n")
    from bench.report import render_decisions

    print(render_decisions(res))  # the README's table (bench/report.py)
    return 0 if all(met.values()) else 1


def _json(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


if __name__ == "__main__":
    raise SystemExit(main())
