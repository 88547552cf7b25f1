"""Per-user ratio metrics: the delta-method variance against statsmodels' cluster-robust
OLS and a per-user bootstrap, and the coverage simulation that shows why requests are not
independent trials."""

from __future__ import annotations

import numpy as np
import pytest

from modelops.evaluation import (
    ArmStats,
    as_arrays,
    log_ratio_difference,
    per_user_log_variance,
    ratio_and_variance,
    users_for_information,
)
from modelops.evaluation.simulate import ClickModel


def _requests(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expand per-user totals into request rows (click 0/1, user id)."""
    users = np.repeat(np.arange(x.size), y.astype(int))
    clicks = np.zeros(users.size)
    start = np.concatenate([[0], np.cumsum(y.astype(int))[:-1]])
    for i in range(x.size):  # the first x[i] requests of user i clicked
        clicks[start[i] : start[i] + int(x[i])] = 1.0
    return clicks, users


def test_sums_and_addition() -> None:
    x, y = np.array([0.0, 1, 3]), np.array([1.0, 2, 5])
    s = ArmStats.from_users(x, y)
    assert (s.n_users, s.sum_x, s.sum_y) == (3, 4.0, 8.0)
    assert (s.sum_xx, s.sum_yy, s.sum_xy) == (10.0, 30.0, 17.0)
    assert s.ratio == 0.5
    both = s + ArmStats.from_users(np.array([2.0]), np.array([2.0]))
    assert both == ArmStats.from_users(np.array([0.0, 1, 3, 2]), np.array([1.0, 2, 5, 2]))
    with pytest.raises(ValueError, match="same length"):
        ArmStats.from_users(x, y[:2])


def test_delta_variance_equals_statsmodels_cluster_robust_single_arm() -> None:
    """Request-level OLS on a constant, clustered by user: its CR1 variance is the delta-method
    variance exactly (the G/(G-1) correction is the n/(n-1) of the sample covariance)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    x, y = ClickModel(requests_per_user=4, concentration=5).users(rng, 3000)
    clicks, users = _requests(x, y)
    fit = sm.OLS(clicks, np.ones((clicks.size, 1))).fit(
        cov_type="cluster", cov_kwds={"groups": users}
    )
    r, v = ratio_and_variance(as_arrays(ArmStats.from_users(x, y)))
    assert r[0] == pytest.approx(fit.params[0], rel=1e-12)
    assert v[0] == pytest.approx(fit.cov_params()[0, 0], rel=1e-9)


def test_delta_variance_of_the_difference_matches_statsmodels_two_arms() -> None:
    """Click on [1, treatment], clustered by user: the treatment coefficient is R_c - R_b and
    its variance is the sum of the arms' delta variances, up to the small-sample factors
    ((N-1)/(N-2) and the pooled G/(G-1)), which differ by O(1/n)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(2)
    m = ClickModel(requests_per_user=3, concentration=4)
    xc, yc = m.users(rng, 2500, effect=-0.2)
    xb, yb = m.users(rng, 3500)
    cc, uc = _requests(xc, yc)
    cb, ub = _requests(xb, yb)
    clicks = np.concatenate([cc, cb])
    groups = np.concatenate([uc, ub + xc.size])
    design = np.column_stack([np.ones(clicks.size), np.r_[np.ones(cc.size), np.zeros(cb.size)]])
    fit = sm.OLS(clicks, design).fit(cov_type="cluster", cov_kwds={"groups": groups})
    rc, vc = ratio_and_variance(as_arrays(ArmStats.from_users(xc, yc)))
    rb, vb = ratio_and_variance(as_arrays(ArmStats.from_users(xb, yb)))
    assert rc[0] - rb[0] == pytest.approx(fit.params[1], rel=1e-10)
    assert vc[0] + vb[0] == pytest.approx(fit.cov_params()[1, 1], rel=2e-3)


def test_delta_variance_matches_a_per_user_bootstrap() -> None:
    """Resampling users (the randomisation unit) 2,000 times: the bootstrap variance of R has
    a relative standard error of sqrt(2 / B) = 3.2%, so 4 of those (13%) bound the gap."""
    rng = np.random.default_rng(3)
    x, y = ClickModel(requests_per_user=6, concentration=3).users(rng, 4000)
    b = 2000
    idx = rng.integers(0, x.size, size=(b, x.size))
    boot = x[idx].sum(axis=1) / y[idx].sum(axis=1)
    _, v = ratio_and_variance(as_arrays(ArmStats.from_users(x, y)))
    assert boot.var(ddof=1) == pytest.approx(v[0], rel=0.13)


def test_coverage_delta_method_right_binomial_too_narrow() -> None:
    """Two identical arms of correlated users (10 requests each on average, intra-user
    correlation 1/6, design effect ~2.6). 400 seeded replicates of the 95% interval for the
    log-ratio: the delta method covers ~95% (standard error of a coverage rate over 400 is
    1.1 points, so [92%, 98%] is +-2.7 of them); treating requests as Bernoulli trials covers
    ~77% in theory, far below 88%."""
    rng = np.random.default_rng(4)
    m = ClickModel(click_rate=0.05, requests_per_user=10, concentration=5)
    reps, n = 400, 3000
    cov_delta = cov_binom = 0
    for _ in range(reps):
        c = ArmStats.from_users(*m.users(rng, n))
        b = ArmStats.from_users(*m.users(rng, n))
        theta, var = log_ratio_difference(as_arrays(c), as_arrays(b))
        cov_delta += abs(theta[0]) <= 1.959964 * np.sqrt(var[0])
        vb = sum((1 - s.ratio) / (s.ratio * s.sum_y) for s in (c, b))
        cov_binom += abs(theta[0]) <= 1.959964 * np.sqrt(vb)
    assert 0.92 <= cov_delta / reps <= 0.98
    assert cov_binom / reps <= 0.88


def test_undefined_cases_are_nan_not_errors() -> None:
    empty = as_arrays([ArmStats(n_users=0), ArmStats(n_users=1, sum_x=1, sum_y=2, sum_xx=1,
                                                     sum_yy=4, sum_xy=2)])
    r, v = ratio_and_variance(empty)
    assert np.isnan(r[0]) and np.isnan(v[0]) and np.isnan(v[1])
    no_clicks = ArmStats.from_users(np.zeros(10), np.ones(10))
    th, var = log_ratio_difference(as_arrays(no_clicks), as_arrays(no_clicks))
    assert np.isnan(th[0]) and np.isnan(var[0])


def test_planning_helpers() -> None:
    rng = np.random.default_rng(5)
    x, y = ClickModel().users(rng, 200_000)
    s = as_arrays(ArmStats.from_users(x, y))
    v = per_user_log_variance(s)[0]
    r, var_r = ratio_and_variance(s)
    assert v == pytest.approx(200_000 * var_r[0] / r[0] ** 2)
    # 1 / Var(theta) for n_c candidate users and 9 n_c baseline users gives back n_c.
    n_c = 5000.0
    info = 1.0 / (v / n_c + v / (9 * n_c))
    assert users_for_information(info, v, v, 9.0) == pytest.approx(n_c)
