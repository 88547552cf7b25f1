"""The A/B decision and plan_ab: the plan against statsmodels' power solver, each outcome on
constructed evidence, and the false-promotion rate by seeded simulation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from modelops.evaluation import (
    ABEngine,
    ABOutcome,
    ABPolicy,
    ArmArrays,
    ArmStats,
    GuardrailEvidence,
    plan_ab,
)
from modelops.evaluation.simulate import ClickModel

MODEL = ClickModel()


def arm(n: int, effect: float = 0.0) -> ArmStats:
    m = MODEL.user_moments(effect).mean
    return ArmStats(
        n_users=n, sum_x=n * m[0], sum_y=n * m[1], sum_xx=n * m[2], sum_yy=n * m[3],
        sum_xy=n * m[4],
    )


# ---------------------------------------------------------------- plan


def test_plan_gives_the_seed_example() -> None:
    """About 3M users per arm for a 1% relative lift on a 5% baseline; about 6 days at 1M
    users a day split 50/50."""
    p = plan_ab(0.05, 0.01, daily_users=1_000_000)
    assert 2.95e6 <= p.treatment_users <= 3.05e6
    assert p.control_users == p.treatment_users
    assert p.days == pytest.approx(6.0, abs=0.1)
    # The sequential design expects fewer users, and says how many at most.
    assert p.sequential_users_no_effect < p.total_users < p.sequential_users_max
    assert p.sequential_days_max == pytest.approx(p.sequential_users_max / 1e6)


GRID = list(
    itertools.product(
        [0.01, 0.05, 0.2, 0.5], [0.005, 0.02, 0.05, 0.1], [0.05, 0.01], [0.8, 0.9], [0.5, 0.2]
    )
)


@pytest.mark.parametrize("baseline,mde,alpha,power,split", GRID)
def test_plan_agrees_with_statsmodels_within_one_percent(
    baseline: float, mde: float, alpha: float, power: float, split: float
) -> None:
    """statsmodels solves the same power equation on Cohen's h (the arcsine transform);
    ratio = control / treatment."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    p = plan_ab(baseline, mde, alpha=alpha, power=power, split=split)
    h = proportion_effectsize(baseline * (1 + mde), baseline)
    n_t = NormalIndPower().solve_power(
        effect_size=h, alpha=alpha, power=power, ratio=(1 - split) / split
    )
    assert p.treatment_users == pytest.approx(n_t, rel=0.01)
    assert p.control_users == pytest.approx(n_t * (1 - split) / split, rel=0.01)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"baseline": 0.0, "relative_mde": 0.01}, "baseline"),
        ({"baseline": 0.5, "relative_mde": 1.5}, "relative_mde"),
        ({"baseline": 0.05, "relative_mde": 0.0}, "relative_mde"),
        ({"baseline": 0.05, "relative_mde": 0.01, "split": 1.0}, "split"),
        ({"baseline": 0.05, "relative_mde": 0.01, "power": 1.0}, "power"),
        ({"baseline": 0.05, "relative_mde": 0.01, "daily_users": 0}, "daily_users"),
    ],
)
def test_plan_refuses_impossible_inputs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_ab(**kwargs)


# ---------------------------------------------------------------- decisions


def test_significant_lift_promotes() -> None:
    d = ABEngine().decide(arm(1_000_000, 0.02), arm(1_000_000), split=0.5, metric="click")
    assert d.outcome == "PROMOTE" and d.concluded_with_power and not d.escalate
    assert "significant lift" in d.reason and "+2.00%" in d.reason
    assert d.test.lift_low is not None and d.test.lift_low > 0


def test_futility_is_no_detectable_effect_and_never_promotes() -> None:
    d = ABEngine().decide(arm(1_000_000), arm(1_000_000), split=0.5)
    assert d.outcome == "NO_DETECTABLE_EFFECT" and d.concluded_with_power and d.escalate
    assert "ruled out at power 80%" in d.reason and "not promoted" in d.reason


def test_planned_horizon_without_a_boundary_is_no_detectable_effect() -> None:
    """A lift of half the MDE at the horizon: between the boundaries, so it ends without a
    promotion and says it ran out of horizon."""
    pol = ABPolicy(max_information_factor=1.0)
    d = ABEngine(pol).decide(arm(900_000, 0.005), arm(900_000), split=0.5)
    assert d.test.state == "TRUNCATED"
    assert d.outcome == "NO_DETECTABLE_EFFECT" and not d.concluded_with_power
    assert "by the planned horizon" in d.reason


def test_guardrail_trip_holds_and_escalates_instead_of_promoting() -> None:
    e = ABEngine()
    d = e.decide(arm(1_000_000, 0.02), arm(1_000_000), split=0.5,
                 tripped=["p99 latency 400ms exceeds 250ms"])
    assert d.outcome == "HOLD_ESCALATE" and d.escalate
    assert "p99 latency 400ms" in d.reason


def test_ratio_guardrail_harm_test_trips() -> None:
    """Errors per request up 30% on the candidate (lower is better for errors)."""
    e = ABEngine()
    g = GuardrailEvidence(candidate=arm(200_000, 0.3), prod=arm(200_000), higher_is_better=False)
    ok = GuardrailEvidence(candidate=arm(200_000), prod=arm(200_000), higher_is_better=False)
    d = e.decide(arm(1_000_000, 0.02), arm(1_000_000), split=0.5,
                 guardrails={"errors": g, "timeouts": ok})
    assert d.outcome == "HOLD_ESCALATE"
    assert d.guardrails["errors"].state == "REJECT" and d.guardrails["timeouts"].state != "REJECT"
    assert any("guardrail errors worse by 5%" in t for t in d.tripped)


def test_srm_holds_even_a_significant_lift() -> None:
    """51/49 users for a configured 50/50 over 2M users."""
    d = ABEngine().decide(arm(1_020_000, 0.02), arm(980_000), split=0.5)
    assert d.outcome == "HOLD_SRM" and d.escalate and d.srm.mismatch
    assert d.reason.startswith("sample ratio mismatch")
    assert not d.concluded_with_power


def test_thin_traffic_continues_and_says_so() -> None:
    d = ABEngine().decide(arm(500), arm(500), split=0.5)
    assert d.outcome == "CONTINUE" and d.test.state == "TOO_FEW"
    assert d.reason.startswith("inconclusive: not enough traffic")


def test_batch_and_single_agree() -> None:
    e = ABEngine()
    cases = [(arm(1_000_000, 0.02), arm(1_000_000)), (arm(1_000_000), arm(1_000_000)),
             (arm(500), arm(500)), (arm(1_020_000, 0.02), arm(980_000))]
    batch = e.decide_batch([c for c, _ in cases], [b for _, b in cases], split=0.5)
    singles = [e.decide(c, b, split=0.5).outcome for c, b in cases]
    assert [ABOutcome(int(o)).name for o in batch.outcome] == singles


# ---------------------------------------------------------------- error rates by simulation


def _simulate(lift: float, sims: int, seed: int) -> np.ndarray:
    """A/Bs at 50/50 of 1M users a day, a decision every 5 minutes, until each concludes."""
    rng = np.random.default_rng(seed)
    engine = ABEngine()
    mc, mp = MODEL.user_moments(lift), MODEL.user_moments()
    c = [np.zeros(sims) for _ in range(6)]
    p = [np.zeros(sims) for _ in range(6)]
    out = np.zeros(sims, dtype=int)
    active = np.ones(sims, dtype=bool)
    for _ in range(2000):
        idx = np.flatnonzero(active)
        if not idx.size:
            break
        total = rng.poisson(MODEL.users_per_tick, size=idx.size)
        nc = rng.binomial(total, 0.5)
        for acc, d in ((c, MODEL.clt_sums(rng, nc, mc)), (p, MODEL.clt_sums(rng, total - nc, mp))):
            for a, v in zip(acc, d, strict=True):
                a[idx] += v
        r = engine.decide_batch(
            ArmArrays(*(a[idx] for a in c)), ArmArrays(*(a[idx] for a in p)), split=0.5
        )
        done = r.outcome != ABOutcome.CONTINUE
        out[idx[done]] = r.outcome[done]
        active[idx[done]] = False
    assert not active.any(), "every simulated A/B ends by its planned horizon"
    return out


def test_simulated_false_promotion_within_alpha() -> None:
    """400 A/Bs with candidate = prod, looked at every tick: promotions consistent with the
    declared 2.5% (binomial tail >= 0.001: 19 or more of 400 would fail); the rest end as no
    detectable effect."""
    out = _simulate(0.0, 400, seed=41)
    k = int(np.sum(out == ABOutcome.PROMOTE))
    assert stats.binom.sf(k - 1, 400, ABPolicy().alpha) >= 0.001, k
    assert np.all((out == ABOutcome.PROMOTE) | (out == ABOutcome.NO_DETECTABLE_EFFECT)
                  | (out == ABOutcome.HOLD_SRM))


def test_simulated_power_at_the_mde() -> None:
    """300 A/Bs with a true 1% lift: promotions consistent with the declared power 80%."""
    out = _simulate(ABPolicy().mde, 300, seed=42)
    k = int(np.sum(out == ABOutcome.PROMOTE))
    assert stats.binom.cdf(k, 300, ABPolicy().power) >= 0.001, k
