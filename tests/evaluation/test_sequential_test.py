"""The two-boundary SPRT: its likelihood ratio against scipy's normal densities, its fixed-
horizon information against statsmodels, and its error rates by Brownian simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from modelops.evaluation import SequentialDesign, SequentialState, confidence_sequence


def _binom_tail_ge(k: int, n: int, p: float) -> float:
    return float(stats.binom.sf(k - 1, n, p))


def _walk(design: SequentialDesign, theta: float, paths: int, dinfo: float, max_info: float,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Brownian score S(I) with drift theta, looked at every dinfo of information; returns the
    state at stopping and the information used (the design's evaluate() on theta_hat = S/I)."""
    rng = np.random.default_rng(seed)
    s = np.zeros(paths)
    state = np.full(paths, SequentialState.CONTINUE, dtype=np.int8)
    used = np.full(paths, np.nan)
    info = 0.0
    while info < max_info and (state == SequentialState.CONTINUE).any():
        live = state == SequentialState.CONTINUE
        info += dinfo
        s[live] += rng.normal(theta * dinfo, math.sqrt(dinfo), size=int(live.sum()))
        st = design.evaluate(s[live] / info, np.full(int(live.sum()), 1.0 / info))
        done = st != SequentialState.CONTINUE
        ix = np.flatnonzero(live)[done]
        state[ix] = st[done]
        used[ix] = info
    return state, used


def test_log_lr_is_the_normal_likelihood_ratio() -> None:
    d = SequentialDesign(alpha=0.01, beta=0.2, effect=math.log(0.9))
    theta = np.array([-0.2, -0.05, 0.0, 0.03])
    sd = np.array([0.05, 0.02, 0.1, 0.01])
    ref = stats.norm.logpdf(theta, d.effect, sd) - stats.norm.logpdf(theta, 0.0, sd)
    np.testing.assert_allclose(d.log_lr(theta, sd**2), ref, rtol=1e-10)


@pytest.mark.parametrize("alpha,beta", [(0.005, 0.1), (0.025, 0.2), (0.05, 0.1)])
def test_fixed_information_is_statsmodels_one_sample_z(alpha: float, beta: float) -> None:
    """A one-sample z-test (NormalIndPower with ratio=0) with effect size |theta1| needs
    n = I_fixed observations of unit variance."""
    from statsmodels.stats.power import NormalIndPower

    d = SequentialDesign(alpha=alpha, beta=beta, effect=math.log(0.9))
    n = NormalIndPower().solve_power(
        effect_size=abs(d.effect), alpha=alpha, power=1 - beta, ratio=0, alternative="larger"
    )
    assert d.fixed_information == pytest.approx(n, rel=1e-6)


def test_boundaries_and_family() -> None:
    d = SequentialDesign(alpha=0.005, beta=0.1, effect=-0.1, family=4)
    assert d.upper == pytest.approx(math.log(4 / 0.005))
    assert d.lower == pytest.approx(math.log(0.1))
    with pytest.raises(ValueError, match="non-zero"):
        SequentialDesign(alpha=0.01, beta=0.1, effect=0.0)


def test_evaluate_states() -> None:
    d = SequentialDesign(alpha=0.01, beta=0.2, effect=-0.1)
    info_max = d.max_information
    theta = np.array([-0.3, 0.05, -0.05, -0.05, -0.3, 0.0])
    var = np.array([1e-3, 1e-3, 1 / 10.0, 1 / (info_max * 1.01), 1 / (info_max * 1.01), 1e-3])
    ok = np.array([True, True, True, True, True, False])
    got = d.evaluate(theta, var, ok)
    assert list(got) == [
        SequentialState.REJECT,
        SequentialState.ACCEPT,
        SequentialState.CONTINUE,
        SequentialState.TRUNCATED,
        SequentialState.REJECT,  # a boundary crossed at the last look wins over truncation
        SequentialState.TOO_FEW,
    ]
    assert d.evaluate(np.nan, 1e-3) == SequentialState.TOO_FEW


@pytest.mark.parametrize("theta_of_effect", [0.0, 0.5, 1.0])
def test_operating_characteristic_matches_brownian_simulation(theta_of_effect: float) -> None:
    """Siegmund's closed forms against 2,000 simulated Brownian paths looked at in small
    steps (overshoot 0.58 sd of a step, ~0.01 on a log scale spanning 7, negligible). Bounds
    are 4 Monte Carlo standard errors."""
    d = SequentialDesign(alpha=0.01, beta=0.2, effect=-0.1)
    theta = theta_of_effect * d.effect
    oc = d.operating_characteristic(theta)
    state, used = _walk(d, theta, 2000, d.fixed_information / 2000, 1e12, seed=7)
    p = float(np.mean(state == SequentialState.REJECT))
    se = math.sqrt(max(oc.p_reject * (1 - oc.p_reject), 1e-4) / 2000)
    assert abs(p - oc.p_reject) <= 4 * se + 0.003
    assert float(np.mean(used)) == pytest.approx(oc.expected_information, rel=0.08)


@pytest.mark.parametrize("alpha,beta", [(0.005, 0.1), (0.025, 0.2)])
def test_error_rates_hold_at_every_look_and_truncation_is_rare(alpha: float, beta: float) -> None:
    """Ville's bounds, P_H0(reject) <= alpha and P_H1(accept) <= beta, by 4,000 Brownian
    paths per hypothesis looked at 200 times per fixed-horizon information, truncated at 3x:
    a count is checked to be consistent with the bound (binomial tail >= 0.001), and the
    paths still running at the truncation are below 0.5% (the module's claim)."""
    d = SequentialDesign(alpha=alpha, beta=beta, effect=-0.1)
    n = 4000
    step = d.fixed_information / 200
    s0, _ = _walk(d, 0.0, n, step, d.max_information, seed=11)
    s1, _ = _walk(d, d.effect, n, step, d.max_information, seed=12)
    k_fr = int(np.sum(s0 == SequentialState.REJECT))
    k_fa = int(np.sum(s1 == SequentialState.ACCEPT))
    assert _binom_tail_ge(k_fr, n, alpha) >= 0.001, k_fr
    assert _binom_tail_ge(k_fa, n, beta) >= 0.001, k_fa
    for s in (s0, s1):
        assert np.mean((s == SequentialState.CONTINUE) | (s == SequentialState.TRUNCATED)) < 0.005


def test_confidence_sequence_covers_at_every_look_where_repeated_intervals_do_not() -> None:
    """2,000 null paths looked at 300 times each: the 95% confidence sequence excludes the
    truth at some look in at most 5% of paths (consistent by the binomial tail); the fixed
    95% interval, recomputed at every look, excludes it in far more (the peeking problem)."""
    rng = np.random.default_rng(21)
    paths, looks, dinfo = 2000, 300, 50.0
    s = np.cumsum(rng.normal(0.0, math.sqrt(dinfo), size=(paths, looks)), axis=1)
    info = dinfo * np.arange(1, looks + 1)
    theta_hat, var = s / info, 1.0 / info
    lo, hi = confidence_sequence(theta_hat, var, 0.05, planned_information=info[-1] / 2)
    cs_miss = int(np.sum(((lo > 0) | (hi < 0)).any(axis=1)))
    fixed_miss = int(np.sum((np.abs(theta_hat) > 1.96 * np.sqrt(var)).any(axis=1)))
    assert _binom_tail_ge(cs_miss, paths, 0.05) >= 0.001
    assert fixed_miss / paths > 0.25
    # And it is an interval around the estimate that shrinks as information grows.
    assert np.all(lo < theta_hat) and np.all(hi > theta_hat)
    assert (hi - lo)[0, -1] < (hi - lo)[0, 0]
