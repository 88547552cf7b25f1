"""Per-user ratio metrics and their delta-method variance.

Assignment is a sticky hash of the user, so the user is the randomisation unit and a user's
requests are correlated (one user clicks a lot, another never). A click rate is therefore a
ratio of two per-user sums, R = sum(x) / sum(y) with x = a user's outcomes (clicks) and
y = the user's requests, and its variance comes from the spread between users. Counting
requests as independent Bernoulli trials understates it by the design effect
1 + (m - 1) * ICC, which is what made the old rule's 95% bound too narrow.

Method: the delta method for a ratio of means over i.i.d. users,
Var(R) ~ (s_xx - 2 R s_xy + R^2 s_yy) / (n * mean(y)^2), with s the per-user sample
(co)variances (Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric Analytics",
KDD). It equals the cluster-robust (user-clustered) sandwich variance of the
request-level mean, which is how the tests check it against statsmodels.

Everything a test needs is six sums a SQL `GROUP BY user` then `SUM` produces, so the
prediction log never ships rows to the sensor:
`SELECT count(*), sum(x), sum(y), sum(x*x), sum(y*y), sum(x*y)
 FROM (SELECT user_hash, sum(click) AS x, count(*) AS y FROM log ... GROUP BY user_hash)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ArmStats",
    "ArmArrays",
    "as_arrays",
    "ratio_and_variance",
    "log_ratio_difference",
    "per_user_log_variance",
    "users_for_information",
]


class ArmStats(BaseModel):
    """One arm's per-user sufficient statistics (x = outcomes, y = requests, per user)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_users: int = Field(ge=0)
    sum_x: float = 0.0
    sum_y: float = Field(default=0.0, ge=0)
    sum_xx: float = Field(default=0.0, ge=0)
    sum_yy: float = Field(default=0.0, ge=0)
    sum_xy: float = 0.0

    @classmethod
    def from_users(cls, x: Any, y: Any) -> ArmStats:
        """From per-user totals (one entry per user)."""
        xa = np.asarray(x, dtype=float)
        ya = np.asarray(y, dtype=float)
        if xa.shape != ya.shape or xa.ndim != 1:
            raise ValueError("x and y must be 1-D arrays of the same length, one entry per user")
        return cls(
            n_users=int(xa.size),
            sum_x=float(xa.sum()),
            sum_y=float(ya.sum()),
            sum_xx=float(xa @ xa),
            sum_yy=float(ya @ ya),
            sum_xy=float(xa @ ya),
        )

    def __add__(self, other: ArmStats) -> ArmStats:
        """Disjoint sets of users (e.g. two slices) add; the same user in two windows does not."""
        return ArmStats(
            n_users=self.n_users + other.n_users,
            sum_x=self.sum_x + other.sum_x,
            sum_y=self.sum_y + other.sum_y,
            sum_xx=self.sum_xx + other.sum_xx,
            sum_yy=self.sum_yy + other.sum_yy,
            sum_xy=self.sum_xy + other.sum_xy,
        )

    @property
    def ratio(self) -> float:
        return self.sum_x / self.sum_y if self.sum_y > 0 else float("nan")


class ArmArrays(NamedTuple):
    """The same six sums as arrays, one entry per unit (canary, model, slice): the batch form
    a sensor uses for its whole fleet in one call, and the benchmark for 2,000 canaries."""

    n_users: np.ndarray
    sum_x: np.ndarray
    sum_y: np.ndarray
    sum_xx: np.ndarray
    sum_yy: np.ndarray
    sum_xy: np.ndarray


def as_arrays(stats: ArmStats | Sequence[ArmStats] | ArmArrays) -> ArmArrays:
    if isinstance(stats, ArmArrays):
        return ArmArrays(*(np.asarray(a, dtype=float) for a in stats))
    if isinstance(stats, ArmStats):
        stats = [stats]
    rows = np.array(
        [[s.n_users, s.sum_x, s.sum_y, s.sum_xx, s.sum_yy, s.sum_xy] for s in stats], dtype=float
    ).reshape(-1, 6)
    return ArmArrays(*(rows[:, i] for i in range(6)))


def ratio_and_variance(a: ArmArrays) -> tuple[np.ndarray, np.ndarray]:
    """R = sum_x / sum_y and its delta-method variance (Deng et al. 2018).

    NaN where it is undefined (fewer than two users, or no requests).
    """
    n, sx, sy, sxx, syy, sxy = (np.asarray(v, dtype=float) for v in a)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = sx / n, sy / n
        dof = n - 1.0
        vxx = (sxx - n * mx * mx) / dof
        vyy = (syy - n * my * my) / dof
        vxy = (sxy - n * mx * my) / dof
        r = sx / sy
        var = (vxx - 2.0 * r * vxy + r * r * vyy) / (n * my * my)
    bad = (n < 2) | (sy <= 0)
    var = np.where(bad, np.nan, np.maximum(var, 0.0))
    return np.where(sy > 0, r, np.nan), var


def log_ratio_difference(
    candidate: ArmArrays, baseline: ArmArrays
) -> tuple[np.ndarray, np.ndarray]:
    """theta = log(R_c) - log(R_b) and its variance, Var(R_c)/R_c^2 + Var(R_b)/R_b^2.

    The log scale makes a relative effect ("10% worse") additive and its variance free of
    the baseline's level; the arms are independent because users are. NaN where either
    rate is zero or undefined.
    """
    rc, vc = ratio_and_variance(candidate)
    rb, vb = ratio_and_variance(baseline)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (rc > 0) & (rb > 0)
        theta = np.where(ok, np.log(np.where(ok, rc, 1.0)) - np.log(np.where(ok, rb, 1.0)), np.nan)
        var = np.where(ok, vc / (rc * rc) + vb / (rb * rb), np.nan)
    return theta, var


def per_user_log_variance(a: ArmArrays) -> np.ndarray:
    """n * Var(log R): what one user adds to the variance of the log rate. Measured on
    prod's history it turns a design's information into users (`users_for_information`)."""
    r, v = ratio_and_variance(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(a.n_users, dtype=float) * v / (r * r)


def users_for_information(
    information: float,
    var_candidate: float,
    var_baseline: float,
    baseline_per_candidate: float = 1.0,
) -> float:
    """Candidate-arm users that give `information` = 1 / Var(theta_hat) when the baseline arm
    has `baseline_per_candidate` users per candidate user (9 for a 10% canary):
    n_c = I * (v_c + v_b / k), from Var(theta_hat) = v_c / n_c + v_b / (k n_c)."""
    return information * (var_candidate + var_baseline / baseline_per_candidate)
