"""Seeded per-user traffic, for testing decision rules by simulation of their error rates.

The model is the one the rules must survive: every user makes several requests (1 + Poisson)
and has a click propensity of their own (Beta around the click rate), so a user's requests
are correlated (intra-class correlation 1 / (concentration + 1)). A candidate's effect
multiplies every user's propensity, so "10% worse" lowers the click rate by 10%.

`arm_sums` draws users one by one and sums them per unit (canary); `clt_sums` draws the six
sums of a large arm directly from their multivariate normal limit, with the mean and
covariance of one user computed exactly by `user_moments`, which is how a benchmark simulates
prod's 90% of a million users a day for thousands of canaries in seconds. The tests check
the two agree.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelops.evaluation.ratio import ArmArrays

__all__ = ["ClickModel", "UserMoments"]


class UserMoments(BaseModel):
    """Mean and covariance of one user's (x, y, x^2, y^2, xy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: list[float]
    cov: list[list[float]]


class ClickModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    click_rate: float = Field(default=0.05, gt=0, lt=1)
    requests_per_user: float = Field(default=5.0, ge=1, description="mean; 1 + Poisson")
    concentration: float = Field(default=10.0, gt=0, description="Beta a + b of propensity")
    users_per_day: float = Field(default=1_000_000, gt=0)
    tick_s: float = Field(default=300.0, gt=0)

    @property
    def users_per_tick(self) -> float:
        return self.users_per_day * self.tick_s / 86400.0

    def users(
        self, rng: np.random.Generator, n: int, effect: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-user (clicks, requests) for n users of an arm whose propensities are scaled by
        (1 + effect)."""
        k = self.concentration
        p = rng.beta(self.click_rate * k, (1 - self.click_rate) * k, size=n)
        if effect:
            p = np.minimum(1.0, p * (1.0 + effect))
        y = 1 + rng.poisson(self.requests_per_user - 1, size=n)
        x = rng.binomial(y, p)
        return x.astype(float), y.astype(float)

    def arm_sums(
        self, rng: np.random.Generator, counts: np.ndarray, effect: float = 0.0
    ) -> ArmArrays:
        """Exact sums over counts[i] fresh users for each unit i."""
        counts = np.asarray(counts, dtype=np.int64)
        m = counts.shape[0]
        unit = np.repeat(np.arange(m), counts)
        x, y = self.users(rng, int(counts.sum()), effect)

        def s(w: np.ndarray) -> np.ndarray:
            return np.bincount(unit, weights=w, minlength=m)

        return ArmArrays(counts.astype(float), s(x), s(y), s(x * x), s(y * y), s(x * y))

    def user_moments(self, effect: float = 0.0) -> UserMoments:
        """Exact mean and covariance of one user's (x, y, x^2, y^2, xy): every moment is a
        sum over requests y of Beta moments of the propensity times binomial moments of
        clicks, E[x^a | y, p] = sum_j S(a, j) y^(j falling) p^j (Stirling numbers of the
        second kind). Exact up to the clip at p = 1, which a lift of a few percent on these
        propensities never reaches in practice."""
        k = self.concentration
        a, b = self.click_rate * k, (1 - self.click_rate) * k
        scale = 1.0 + effect
        ep = [1.0]  # E[(scale * p)^j]
        for j in range(4):
            ep.append(ep[-1] * scale * (a + j) / (a + b + j))
        lam = self.requests_per_user - 1
        ys = np.arange(1, 200, dtype=float)
        if lam > 0:  # y - 1 ~ Poisson(lam)
            lg = np.array([math.lgamma(y) for y in ys])
            pmf = np.exp(-lam + (ys - 1) * np.log(lam) - lg)
        else:
            pmf = (ys == 1).astype(float)
        stirling = {0: [1], 1: [0, 1], 2: [0, 1, 1], 3: [0, 1, 3, 1], 4: [0, 1, 7, 6, 1]}

        def falling(j: int) -> np.ndarray:
            out = np.ones_like(ys)
            for i in range(j):
                out = out * (ys - i)
            return out

        def e(ax: int, by: int) -> float:
            inner = sum(stirling[ax][j] * falling(j) * ep[j] for j in range(ax + 1))
            return float(np.sum(pmf * ys**by * inner))

        powers = [(1, 0), (0, 1), (2, 0), (0, 2), (1, 1)]
        mean = np.array([e(ax, by) for ax, by in powers])
        second = np.array(
            [[e(p1[0] + p2[0], p1[1] + p2[1]) for p2 in powers] for p1 in powers]
        )
        cov = second - np.outer(mean, mean)
        return UserMoments(mean=mean.tolist(), cov=cov.tolist())

    @staticmethod
    def clt_sums(
        rng: np.random.Generator, counts: np.ndarray, moments: UserMoments
    ) -> ArmArrays:
        """Sums over counts[i] users from the normal limit N(n mu, n Sigma); for arms of a
        few thousand users or more, where it is indistinguishable from `arm_sums`."""
        counts = np.asarray(counts, dtype=float)
        mu = np.asarray(moments.mean)
        chol = np.linalg.cholesky(np.asarray(moments.cov) + 1e-12 * np.eye(5))
        z = rng.standard_normal((counts.shape[0], 5)) @ chol.T
        v = counts[:, None] * mu + np.sqrt(counts)[:, None] * z
        v = np.maximum(v, 0.0)
        return ArmArrays(counts, v[:, 0], v[:, 1], v[:, 2], v[:, 3], v[:, 4])

