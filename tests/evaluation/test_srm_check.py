"""Sample-ratio mismatch: the statistic against scipy.stats.chisquare, the mixture's closed
form against numerical integration, the 51/49 requirement, and validity under peeking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from modelops.evaluation import SRMPolicy, srm_check
from modelops.evaluation.srm import srm_always_valid_p, srm_chi2


@pytest.mark.parametrize(
    "observed,share",
    [([25_500, 24_500], [0.5, 0.5]), ([1010, 8990], [0.1, 0.9]), ([300, 410, 290], [1, 1, 1])],
)
def test_statistic_and_fixed_p_are_scipy_chisquare(observed: list, share: list) -> None:
    r = srm_check(observed, share)
    n = sum(observed)
    exp = np.asarray(share, float) / sum(share) * n
    ref = stats.chisquare(observed, exp)
    assert r.chi2 == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_a_51_49_split_of_50_50_is_flagged_by_50000_users() -> None:
    r = srm_check([25_500, 24_500], [0.5, 0.5])
    assert r.mismatch and r.p_always_valid < 0.001
    assert "sample ratio mismatch: users 25500/24500 against a configured 50%/50%" in r.reason
    # Smaller deviations at the same size, and the exact split, are not.
    assert not srm_check([25_200, 24_800], [0.5, 0.5]).mismatch
    assert not srm_check([25_000, 25_000], [0.5, 0.5]).mismatch


def test_the_mixture_closed_form_is_the_integral_it_claims() -> None:
    """Two arms: the Gaussian random walk's likelihood ratio for a drift mu per user, averaged
    over mu ~ N(0, tau^2 sigma^2), integrated numerically, equals the chi-square form."""
    n, p = 40_000, 0.5
    obs = np.array([20_450, 19_550])
    s = obs[0] - n * p  # the walk's position
    sigma2 = p * (1 - p)
    tau2 = SRMPolicy().mixture_scale(2)

    def integrand(mu: float) -> float:
        lr = math.exp(mu * s / sigma2 - n * mu * mu / (2 * sigma2))
        return lr * stats.norm.pdf(mu, 0, math.sqrt(tau2 * sigma2))

    sd = math.sqrt(tau2 * sigma2)
    num, _ = integrate.quad(integrand, -20 * sd, 20 * sd, points=[s / n], limit=200)
    chi2 = float(srm_chi2(obs, [p, 1 - p]))
    closed = 1.0 / float(srm_always_valid_p(chi2, n, 2, tau2))
    assert closed == pytest.approx(num, rel=1e-6)


def test_always_valid_under_peeking_where_the_fixed_p_is_not() -> None:
    """1,000 experiments at an exact 50/50 split, checked at 500 looks of 200 users each, at a
    level of 5% so the counts are informative: the always-valid p alarms in a number of them
    consistent with 5% (binomial tail >= 0.001); the fixed-sample p-value at the same level
    alarms in far more."""
    rng = np.random.default_rng(51)
    sims, looks, step = 1000, 500, 200
    a = np.cumsum(rng.binomial(step, 0.5, size=(sims, looks)), axis=1)
    n = step * np.arange(1, looks + 1)
    obs = np.stack([a, n - a], axis=-1)
    chi2 = srm_chi2(obs, [0.5, 0.5])
    pol = SRMPolicy(alpha=0.05)
    pav = srm_always_valid_p(chi2, n, 2, pol.mixture_scale(2))
    av_alarms = int(np.sum((pav < 0.05).any(axis=1)))
    fixed_alarms = int(np.sum((stats.chi2.sf(chi2, 1) < 0.05).any(axis=1)))
    assert stats.binom.sf(av_alarms - 1, sims, 0.05) >= 0.001, av_alarms
    assert fixed_alarms / sims > 0.3


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="same number"):
        srm_check([1, 2, 3], [0.5, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        srm_check([-1, 2], [0.5, 0.5])


def test_too_few_users_is_not_a_verdict() -> None:
    r = srm_check([60, 10], [0.5, 0.5])
    assert not r.mismatch and "users needed" in r.reason
