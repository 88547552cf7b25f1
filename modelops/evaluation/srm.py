"""Sample-ratio mismatch: are the users per arm what the configured split says?

A mismatch means assignment or logging is broken (a crashing arm loses users, a bot hits one
arm), and every metric computed on such data is biased in an unknown direction, so it holds
every decision (Fabijan et al. 2019, "Diagnosing Sample Ratio Mismatch in Online Controlled
Experiments", KDD).

Method. The statistic is Pearson's chi-square of users per arm against the configured split
(the one `scipy.stats.chisquare` computes; the tests check it is the same number). Its
fixed-sample p-value is valid for one look only: evaluated at every tick of a multi-day A/B
at p < 0.001 it alarms in several percent of healthy experiments. The decision therefore
uses an always-valid p-value built from the same statistic: under the multinomial central
limit theorem, the normal-mixture likelihood ratio over the k - 1 free directions with prior
N(0, tau^2 * Sigma) depends on the data only through chi-square,
LR_n = (1 + n tau^2)^(-(k-1)/2) * exp(chi2 * n tau^2 / (2 (1 + n tau^2))),
a martingale under the configured split (Robbins 1970, "Statistical methods related to the
law of the iterated logarithm"; the sequential SRM test of Lindon & Malek 2022 is the exact
Dirichlet-multinomial version). p_n = min(1, 1/LR_n) is valid at every look by Ville's
inequality, so "p < 0.001" keeps its meaning under peeking. tau is chosen so the boundary is
tightest at `planning_users` (default 50,000): there an observed 51/49 of a 50/50 split
(chi-square 20) is flagged; it is first flagged near 44,500 users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SRMPolicy", "SRMResult", "srm_check", "srm_chi2", "srm_always_valid_p"]


class SRMPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(default=0.001, gt=0, lt=1, description="flag at always-valid p < this")
    planning_users: int = Field(
        default=50_000, ge=100, description="users at which the test is most sensitive"
    )
    min_users: int = Field(default=100, ge=1, description="no verdict below this many users")

    def mixture_scale(self, arms: int) -> float:
        """tau^2 minimising the chi-square boundary at planning_users (1-D search over
        s = n tau^2; the optimum is flat, so a grid is exact enough)."""
        d = max(1, arms - 1)
        s = np.linspace(0.5, 200.0, 4000)
        crit = 2.0 * (1.0 + s) / s * (math.log(1.0 / self.alpha) + 0.5 * d * np.log1p(s))
        return float(s[int(np.argmin(crit))] / self.planning_users)


class SRMResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    observed: list[int]
    expected_share: list[float]
    chi2: float
    p_value: float = Field(description="fixed-sample chi-square p (one look only)")
    p_always_valid: float = Field(description="valid at every look; the decision uses this")
    mismatch: bool
    reason: str


def srm_chi2(observed: Any, share: Any) -> np.ndarray:
    """Pearson chi-square per row of `observed` (units x arms) against `share` (arms,) or
    (units x arms); the same statistic as scipy.stats.chisquare(observed, n * share)."""
    obs = np.asarray(observed, dtype=float)
    sh = np.asarray(share, dtype=float)
    sh = sh / sh.sum(axis=-1, keepdims=True)
    n = obs.sum(axis=-1, keepdims=True)
    exp = n * sh
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(exp > 0, (obs - exp) ** 2 / exp, 0.0)
    return terms.sum(axis=-1)


def srm_always_valid_p(chi2: Any, n: Any, arms: int, tau2: float) -> np.ndarray:
    d = arms - 1
    s = np.asarray(n, dtype=float) * tau2
    log_lr = -0.5 * d * np.log1p(s) + np.asarray(chi2, dtype=float) * s / (2.0 * (1.0 + s))
    return np.minimum(1.0, np.exp(-log_lr))


def srm_check(
    observed: Sequence[int], expected_share: Sequence[float], policy: SRMPolicy | None = None
) -> SRMResult:
    """One experiment's check: users per arm (the arms' order as in expected_share)."""
    from scipy.special import chdtrc

    pol = policy or SRMPolicy()
    obs = [int(v) for v in observed]
    share = [float(v) for v in expected_share]
    if len(obs) != len(share) or len(obs) < 2:
        raise ValueError("observed and expected_share need the same number (>= 2) of arms")
    if any(v < 0 for v in obs) or any(v < 0 for v in share) or sum(share) <= 0:
        raise ValueError("counts and shares must be non-negative, shares not all zero")
    total = sum(share)
    share = [v / total for v in share]
    n = sum(obs)
    chi2 = float(srm_chi2(obs, share))
    p = float(chdtrc(len(obs) - 1, chi2))
    pav = float(srm_always_valid_p(chi2, n, len(obs), pol.mixture_scale(len(obs))))
    split = "/".join(f"{v:.0%}" for v in share)
    seen = "/".join(str(v) for v in obs)
    if n < pol.min_users:
        return SRMResult(
            observed=obs, expected_share=share, chi2=chi2, p_value=p, p_always_valid=1.0,
            mismatch=False, reason=f"SRM: {n} of {pol.min_users} users needed to check the split",
        )
    mismatch = pav < pol.alpha
    if mismatch:
        reason = (
            f"sample ratio mismatch: users {seen} against a configured {split} split "
            f"(chi-square {chi2:.1f}, always-valid p {pav:.2g} < {pol.alpha:g}); "
            "no decision is made on this data"
        )
    else:
        reason = f"split {seen} consistent with {split} (always-valid p {pav:.2g})"
    return SRMResult(
        observed=obs, expected_share=share, chi2=chi2, p_value=p, p_always_valid=pav,
        mismatch=mismatch, reason=reason,
    )
