"""The sequential test behind the canary and the A/B: a two-boundary SPRT that stays valid
when a sensor looks at every tick.

Method. theta is the log-ratio of the candidate's per-user rate to prod's, estimated with
its delta-method variance (ratio.py). Under the Brownian-motion approximation the score
S = theta_hat * I, with information I = 1 / Var(theta_hat), is a Brownian motion with drift
theta in information time (Siegmund 1985, "Sequential Analysis", ch. 3; Jennison & Turnbull
2000, ch. 3, for the canonical joint distribution of a statistic monitored over time). The
likelihood ratio of H1: theta = theta1 against H0: theta = 0 is then
log LR = theta1 * S - theta1^2 * I / 2, and Wald's SPRT (Wald 1945) rejects H0 when it
reaches log(1/alpha) and accepts H0 when it falls to log(beta).

Why these boundaries hold under peeking. LR is a non-negative martingale under H0, so by
Ville's inequality (Ville 1939) P_H0(LR ever >= 1/alpha) <= alpha, at every look and every
stopping time, however often the sensor looks; likewise 1/LR under H1 gives
P_H1(LR ever <= beta) <= beta. For theta on the far side of 0 (a better candidate in a harm
test) LR is a supermartingale and the bound still holds, so each test is one-sided. Both
statements need no planned number of looks and no state beyond the current sums, which is
what a stateless sensor tick has (Johari, Koomen, Pekelis & Walsh 2022, "Always valid
inference", for the peeking problem; Ramdas, Gruenwald, Vovk & Shafer 2023 for the
anytime-valid view of Ville's inequality).

Why an SPRT and not the alternatives. Among all tests with error rates (alpha, beta) the
SPRT minimises the expected sample size at both hypotheses (Wald & Wolfowitz 1948), which is
the figure the canary is judged on (mean sample at decision vs the fixed-horizon n). A mixture
SPRT or a confidence sequence (Johari et al. 2017; Howard, Ramdas, McAuliffe & Sekhon 2021)
only ever rejects, so it has no honest "safe: the test has its power" verdict to promote on;
a group-sequential design with Lan-DeMets alpha spending (Lan & DeMets 1983) needs the
history of look times to place each boundary, which a stateless tick does not have.

Truncation: the design stops at `max_information_factor` times the fixed-horizon
information; there the verdict is "truncated": the effect lies between the hypotheses and a
human decides. At 3x the truncated fraction is below 0.5% at either hypothesis (Brownian
simulation in the tests), so the declared power is kept.
"""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelops.evaluation import _normal

__all__ = [
    "SequentialDesign",
    "SequentialState",
    "OperatingCharacteristic",
    "SequentialReport",
    "sequential_report",
    "confidence_sequence",
]


class SequentialState(IntEnum):
    """One sequential test's state at a look (an int so batches are plain arrays)."""

    TOO_FEW = 0  # below the minimum sample: the normal approximation is not trusted yet
    CONTINUE = 1  # between the boundaries: not enough information either way
    REJECT = 2  # LR >= upper: H1 (theta = effect) is favoured; H0 rejected
    ACCEPT = 3  # LR <= lower: H0 favoured with the declared power against H1
    TRUNCATED = 4  # the maximum information is reached between the boundaries


class OperatingCharacteristic(BaseModel):
    """The design's behaviour at one true theta: continuous monitoring, no truncation."""

    model_config = ConfigDict(extra="forbid")

    theta: float
    p_reject: float
    expected_information: float


class SequentialDesign(BaseModel):
    """H0: theta = 0 against H1: theta = effect, with P(reject | H0) <= alpha / family and
    P(accept | H1) <= beta. `family` > 1 is a Bonferroni split of alpha over that many
    simultaneous tests (slices)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(gt=0, lt=0.5)
    beta: float = Field(gt=0, lt=0.5)
    effect: float = Field(description="theta1 on the log-ratio scale, e.g. log(0.9)")
    family: int = Field(default=1, ge=1)
    max_information_factor: float = Field(default=3.0, ge=1.0)

    @model_validator(mode="after")
    def _nonzero(self) -> SequentialDesign:
        if self.effect == 0 or not math.isfinite(self.effect):
            raise ValueError("effect must be a finite, non-zero log-ratio")
        return self

    @property
    def upper(self) -> float:
        return math.log(self.family / self.alpha)

    @property
    def lower(self) -> float:
        return math.log(self.beta)

    @property
    def fixed_information(self) -> float:
        """Information a fixed-horizon one-sided z-test needs for the same error rates:
        ((z_{1-alpha/family} + z_{1-beta}) / effect)^2. The ASN benchmark's denominator."""
        zsum = _normal.z(1 - self.alpha / self.family) + _normal.z(1 - self.beta)
        return (zsum / self.effect) ** 2

    @property
    def max_information(self) -> float:
        return self.max_information_factor * self.fixed_information

    def log_lr(self, theta: Any, var: Any) -> np.ndarray:
        """log LR(theta1 : 0) = theta1 * S - theta1^2 * I / 2 with I = 1/var, S = theta * I."""
        t1 = self.effect
        with np.errstate(divide="ignore", invalid="ignore"):
            return (t1 * np.asarray(theta, dtype=float) - 0.5 * t1 * t1) / np.asarray(
                var, dtype=float
            )

    def evaluate(self, theta: Any, var: Any, eligible: Any = True) -> np.ndarray:
        """SequentialState per unit. REJECT wins over TRUNCATED: a boundary crossed at the last look
        counts."""
        th = np.asarray(theta, dtype=float)
        v = np.asarray(var, dtype=float)
        llr = self.log_lr(th, v)
        with np.errstate(divide="ignore", invalid="ignore"):
            info = 1.0 / v
        ok = np.asarray(eligible, dtype=bool) & np.isfinite(llr) & (v > 0)
        state = np.full(np.broadcast(th, v, ok).shape, SequentialState.CONTINUE, dtype=np.int8)
        state[np.broadcast_to(ok, state.shape) & (info >= self.max_information)] = (
            SequentialState.TRUNCATED
        )
        state[np.broadcast_to(ok, state.shape) & (llr <= self.lower)] = SequentialState.ACCEPT
        state[np.broadcast_to(ok, state.shape) & (llr >= self.upper)] = SequentialState.REJECT
        state[~np.broadcast_to(ok, state.shape)] = SequentialState.TOO_FEW
        return state

    def operating_characteristic(self, theta: float) -> OperatingCharacteristic:
        """P(reject H0) and E[information at stopping] at a true theta, for continuous
        monitoring without truncation: log LR is a Brownian motion with drift
        mu = theta1 * theta - theta1^2 / 2 and variance theta1^2 per unit of information,
        between the boundaries b < 0 < a (Siegmund 1985, ch. 3: exact for Brownian motion; for
        discrete looks the overshoot only lowers both error rates)."""
        a, b = self.upper, self.lower
        t1 = self.effect
        mu = t1 * theta - 0.5 * t1 * t1
        s2 = t1 * t1
        c = 2.0 * mu / s2
        if abs(c * (a - b)) < 1e-9:
            p = -b / (a - b)
            ei = -a * b / s2
        else:
            # Stable in both directions of drift: factor out the larger exponential.
            ea, eb = -c * a, -c * b
            m = max(ea, eb, 0.0)
            p = (math.exp(-m) - math.exp(eb - m)) / (math.exp(ea - m) - math.exp(eb - m))
            ei = (p * a + (1 - p) * b) / mu
        return OperatingCharacteristic(theta=theta, p_reject=p, expected_information=ei)


def confidence_sequence(theta: Any, var: Any, alpha: float, planned_information: float) -> tuple[
    np.ndarray, np.ndarray
]:
    """Two-sided (1 - alpha) confidence sequence for theta: it covers the true value at every
    look at once, so a chart of it over time may be read at any tick.

    Normal-mixture boundary |S - theta I| <= sqrt((I + rho) log((I + rho) / (rho alpha^2)))
    (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric,
    nonasymptotic confidence sequences", the Gaussian-mixture boundary), with rho set to make
    it tightest at `planned_information` (their rule for the mixture's scale).
    """
    la = -2.0 * math.log(alpha)
    rho = planned_information / (la + math.log(1.0 + la))
    th = np.asarray(theta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        info = 1.0 / np.asarray(var, dtype=float)
        half = np.sqrt((info + rho) * np.log((info + rho) / (rho * alpha * alpha))) / info
    return th - half, th + half


class SequentialReport(BaseModel):
    """One sequential test at one look, in the terms a reviewer reads."""

    model_config = ConfigDict(extra="forbid")

    state: str
    users_candidate: int
    users_baseline: int
    rate_candidate: float | None
    rate_baseline: float | None
    lift: float | None = Field(description="relative effect, rate_candidate / rate_baseline - 1")
    lift_low: float | None = Field(description="always-valid lower bound (1 - 2 alpha CS)")
    lift_high: float | None
    log_lr: float | None
    upper: float = Field(description="log LR at which H1 is accepted (reject H0)")
    lower: float = Field(description="log LR at which H0 is accepted")
    information: float
    fixed_information: float
    max_information: float


def sequential_report(
    design: SequentialDesign,
    state: int,
    theta: float,
    var: float,
    users: tuple[int, int],
    rates: tuple[float, float],
) -> SequentialReport:
    ok = math.isfinite(theta) and math.isfinite(var) and var > 0
    alpha = min(0.5, 2 * design.alpha / design.family)
    lo, hi = confidence_sequence(theta, var, alpha, design.fixed_information) if ok else (0, 0)

    def f(v: Any) -> float | None:
        v = float(v)
        return v if math.isfinite(v) else None

    return SequentialReport(
        state=SequentialState(int(state)).name,
        users_candidate=int(users[0]),
        users_baseline=int(users[1]),
        rate_candidate=f(rates[0]),
        rate_baseline=f(rates[1]),
        lift=f(math.expm1(theta)) if ok else None,
        lift_low=f(np.expm1(lo)) if ok else None,
        lift_high=f(np.expm1(hi)) if ok else None,
        log_lr=f(design.log_lr(theta, var)) if ok else None,
        upper=design.upper,
        lower=design.lower,
        information=(1.0 / var) if ok else 0.0,
        fixed_information=design.fixed_information,
        max_information=design.max_information,
    )
