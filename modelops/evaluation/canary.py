"""The canary harm test: roll back as soon as the candidate is confidently worse than prod,
pass it only once the test has the sample its declared power needs.

Per look (a sensor tick) the engine runs the sequential test of sequential.py on the primary
metric's per-user ratio, H0 "the candidate is no worse than prod" (theta >= 0) against H1
"it is worse by the policy's harm margin" (theta = log(1 - margin)):
- the likelihood ratio reaching 1/alpha rolls back, at any step of the ladder;
- a step on the ladder is taken once its dwell is over and harm is not confirmed (exposure
  grows to gather the sample, and the always-valid bound keeps watching);
- at the top of the ladder the canary passes only when the likelihood ratio is at or below
  beta: a candidate worse by the margin gets there with probability at most beta, so a pass
  carries the declared power. "No breach yet" is never a pass;
- below the minimum sample, or between the boundaries, it holds and says "inconclusive: not
  enough traffic"; at the design's maximum information it holds and escalates.

Protected slices. Each protected slice gets its own harm test. The family (the whole slice
plus every protected slice) shares alpha by Bonferroni: each test rolls back at
LR >= (1 + K) / alpha, so the chance that any of them fires on a candidate equal to prod is at
most alpha, under any dependence between slices and at every look (Ville's inequality and the
union bound). Holm's step-down would only change which further slices are named after the
first rejection, and the first rejection alone is what rolls back. A slice needs no "safe"
verdict to pass: it is watched for harm; the pass needs the whole slice's power.

Sample-ratio mismatch on the current step's users holds every decision (srm.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelops.evaluation.ratio import (
    ArmArrays,
    ArmStats,
    as_arrays,
    log_ratio_difference,
    users_for_information,
)
from modelops.evaluation.sequential import (
    SequentialDesign,
    SequentialReport,
    SequentialState,
    sequential_report,
)
from modelops.evaluation.srm import SRMPolicy, SRMResult, srm_always_valid_p, srm_check, srm_chi2

__all__ = [
    "CanaryPolicy",
    "CanaryAction",
    "CanaryBatch",
    "CanaryDecision",
    "CanaryEngine",
]

DEFAULT_LADDER = (1, 5, 10)


class CanaryPolicy(BaseModel):
    """What a model declares about its canary. Defaults: a candidate equal to prod is rolled
    back at most 0.5% of the time, one 10% worse at least 90% of the time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    harm_margin: float = Field(
        default=0.10, gt=0, lt=1, description="relative harm the test is powered to catch"
    )
    alpha: float = Field(default=0.005, gt=0, lt=0.5, description="false rollback rate")
    power: float = Field(default=0.90, gt=0.5, lt=1, description="P(rollback) at the margin")
    higher_is_better: bool = True
    min_users: int = Field(default=1000, ge=2, description="per arm before any verdict")
    min_events: int = Field(
        default=50,
        ge=1,
        description="outcomes (sum x) per arm, likewise; the candidate's may be those it "
        "would have had at prod's rate",
    )
    max_information_factor: float = Field(default=3.0, ge=1)
    srm: SRMPolicy = Field(default_factory=SRMPolicy)

    def fixed_horizon_users(
        self,
        var_candidate: float,
        var_prod: float,
        prod_per_candidate: float = 9.0,
        family: int = 1,
    ) -> float:
        """Candidate users a fixed-horizon one-sided z-test needs for the same error rates,
        with per-user log-rate variances measured on prod (ratio.per_user_log_variance) and
        `prod_per_candidate` prod users per candidate user (9 at a 10% canary): the
        denominator the sequential test's average sample is compared with."""
        return users_for_information(
            self.design(family).fixed_information, var_candidate, var_prod, prod_per_candidate
        )

    def design(self, family: int = 1) -> SequentialDesign:
        m = self.harm_margin
        effect = math.log(1 - m) if self.higher_is_better else math.log(1 + m)
        return SequentialDesign(
            alpha=self.alpha,
            beta=1 - self.power,
            effect=effect,
            family=family,
            max_information_factor=self.max_information_factor,
        )


class CanaryAction(IntEnum):
    HOLD = 0
    ADVANCE = 1  # next step on the ladder
    PASS = 2  # the canary is done: the caller promotes, starts the A/B or asks a human
    ROLLBACK = 3


class CanaryBatch(NamedTuple):
    """Per unit (one live canary each): what to do and why, as arrays."""

    action: np.ndarray  # CanaryAction codes
    next_percent: np.ndarray  # -1 unless ADVANCE
    state: np.ndarray  # SequentialState of the whole-slice test
    theta: np.ndarray
    var: np.ndarray
    log_lr: np.ndarray
    slice_state: np.ndarray | None  # (units, K) SequentialState of each protected slice
    srm_mismatch: np.ndarray  # bool
    escalate: np.ndarray  # bool: a human should look (SRM, truncated)


class CanaryDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str
    reason: str
    next_percent: int | None = None
    escalate: bool = False
    test: SequentialReport
    slices: dict[str, SequentialReport] = Field(default_factory=dict)
    srm: SRMResult | None = None


def _eligible(c: ArmArrays, b: ArmArrays, policy: CanaryPolicy) -> np.ndarray:
    """Enough users on both arms, and enough outcomes: prod's observed, the candidate's
    observed or expected at prod's rate over its requests. A candidate whose clicks
    collapsed has few by its very harm; counting the clicks it had the chance to get lets
    the test see it (the rate it is compared with is prod's, measured on min_events)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(b.sum_y > 0, c.sum_y * b.sum_x / b.sum_y, 0.0)
    return (
        (c.n_users >= policy.min_users)
        & (b.n_users >= policy.min_users)
        & (np.maximum(c.sum_x, expected) >= policy.min_events)
        & (b.sum_x >= policy.min_events)
    )


class CanaryEngine:
    """The per-tick step a sensor calls; pure, so a simulation drives the same object."""

    def __init__(
        self, policy: CanaryPolicy | None = None, ladder: Sequence[int] = DEFAULT_LADDER
    ) -> None:
        self.policy = policy or CanaryPolicy()
        if not ladder or list(ladder) != sorted(set(ladder)):
            raise ValueError("the ladder must be a non-empty increasing list of percents")
        self.ladder = tuple(int(p) for p in ladder)

    def decide_batch(
        self,
        candidate: ArmArrays | Sequence[ArmStats],
        prod: ArmArrays | Sequence[ArmStats],
        *,
        percent: np.ndarray | Sequence[int],
        dwell_done: np.ndarray | Sequence[bool],
        slice_candidate: ArmArrays | None = None,
        slice_prod: ArmArrays | None = None,
        assigned: np.ndarray | None = None,
    ) -> CanaryBatch:
        """All live canaries in one vectorised step.

        `candidate`/`prod`: each unit's arms since the canary began (shape (units,)).
        `slice_candidate`/`slice_prod`: protected slices, arrays of shape (units, K).
        `assigned`: users assigned to (candidate, prod) since the current step began,
        shape (units, 2), for the SRM check against percent / 100.
        """
        pol = self.policy
        c, b = as_arrays(candidate), as_arrays(prod)
        pct = np.asarray(percent, dtype=int).reshape(-1)
        dwell = np.asarray(dwell_done, dtype=bool).reshape(-1)
        k = 0 if slice_candidate is None else np.asarray(slice_candidate.n_users).shape[-1]
        design = pol.design(family=1 + k)

        theta, var = log_ratio_difference(c, b)
        state = design.evaluate(theta, var, _eligible(c, b, pol))
        llr = design.log_lr(theta, var)

        slice_state = None
        slice_harm = np.zeros(theta.shape, dtype=bool)
        if k:
            sc, sp = as_arrays(slice_candidate), as_arrays(slice_prod)  # type: ignore[arg-type]
            st, sv = log_ratio_difference(sc, sp)
            slice_state = design.evaluate(st, sv, _eligible(sc, sp, pol))
            slice_harm = (slice_state == SequentialState.REJECT).any(axis=-1)

        srm = np.zeros(theta.shape, dtype=bool)
        if assigned is not None:
            obs = np.asarray(assigned, dtype=float).reshape(-1, 2)
            share = np.stack([pct / 100.0, 1.0 - pct / 100.0], axis=-1)
            n = obs.sum(axis=-1)
            pav = srm_always_valid_p(
                srm_chi2(obs, share), n, 2, pol.srm.mixture_scale(2)
            )
            srm = (pav < pol.srm.alpha) & (n >= pol.srm.min_users)

        top = pct >= self.ladder[-1]
        nxt = np.array([next((p for p in self.ladder if p > q), -1) for q in pct], dtype=int)
        harm = (state == SequentialState.REJECT) | slice_harm

        action = np.full(theta.shape, CanaryAction.HOLD, dtype=np.int8)
        action[dwell & ~top & (state != SequentialState.TOO_FEW)] = CanaryAction.ADVANCE
        action[dwell & top & (state == SequentialState.ACCEPT)] = CanaryAction.PASS
        action[harm] = CanaryAction.ROLLBACK
        action[srm] = CanaryAction.HOLD
        escalate = srm | (top & (state == SequentialState.TRUNCATED) & ~harm)
        next_percent = np.where(action == CanaryAction.ADVANCE, nxt, -1)
        return CanaryBatch(
            action=action,
            next_percent=next_percent,
            state=state,
            theta=theta,
            var=var,
            log_lr=llr,
            slice_state=slice_state,
            srm_mismatch=srm,
            escalate=escalate,
        )

    def decide(
        self,
        candidate: ArmStats,
        prod: ArmStats,
        *,
        percent: int,
        dwell_done: bool,
        slices: Mapping[str, tuple[ArmStats, ArmStats]] | None = None,
        assigned: tuple[int, int] | None = None,
        metric: str = "primary metric",
    ) -> CanaryDecision:
        """One canary: the batch step on a batch of one, with the reason spelled out."""
        names = list(slices or {})
        sc = sp = None
        if names:
            sc = _stack_slices([slices[n][0] for n in names])  # type: ignore[index]
            sp = _stack_slices([slices[n][1] for n in names])  # type: ignore[index]
        r = self.decide_batch(
            [candidate],
            [prod],
            percent=[percent],
            dwell_done=[dwell_done],
            slice_candidate=sc,
            slice_prod=sp,
            assigned=None if assigned is None else np.array([assigned], dtype=float),
        )
        design = self.policy.design(family=1 + len(names))
        test = sequential_report(
            design,
            int(r.state[0]),
            float(r.theta[0]),
            float(r.var[0]),
            (candidate.n_users, prod.n_users),
            (candidate.ratio, prod.ratio),
        )
        slice_reports: dict[str, SequentialReport] = {}
        for i, name in enumerate(names):
            c_s, p_s = slices[name]  # type: ignore[index]
            th, v = log_ratio_difference(as_arrays(c_s), as_arrays(p_s))
            slice_reports[name] = sequential_report(
                design,
                int(r.slice_state[0, i]),  # type: ignore[index]
                float(th[0]),
                float(v[0]),
                (c_s.n_users, p_s.n_users),
                (c_s.ratio, p_s.ratio),
            )
        srm_res = None
        if assigned is not None:
            share = percent / 100.0
            srm_res = srm_check(list(assigned), [share, 1 - share], self.policy.srm)
        action = CanaryAction(int(r.action[0]))
        reason = self._reason(action, percent, test, slice_reports, srm_res, metric, design)
        nxt = int(r.next_percent[0])
        return CanaryDecision(
            action=action.name,
            reason=reason,
            next_percent=nxt if nxt > 0 else None,
            escalate=bool(r.escalate[0]),
            test=test,
            slices=slice_reports,
            srm=srm_res,
        )

    # ------------------------------------------------------------------ reasons

    def _reason(
        self,
        action: CanaryAction,
        percent: int,
        t: SequentialReport,
        slices: dict[str, SequentialReport],
        srm: SRMResult | None,
        metric: str,
        design: SequentialDesign,
    ) -> str:
        pol = self.policy
        margin = f"{pol.harm_margin:.0%}"
        if srm is not None and srm.mismatch:
            return srm.reason
        if action is CanaryAction.ROLLBACK:
            if t.state == SequentialState.REJECT.name:
                where, rep = "", t
            else:
                name = next(n for n, s in slices.items() if s.state == "REJECT")
                where, rep = f" on protected slice {name}", slices[name]
            return (
                f"{metric} harm confirmed{where}: {_effect(rep, metric)}; the likelihood ratio "
                f"of 'worse by {margin}' to 'no worse' reached {math.exp(rep.log_lr or 0):.0f} "
                f">= {math.exp(rep.upper):.0f} (false rollback <= {pol.alpha:g}"
                + (f", Bonferroni over {design.family} tests" if design.family > 1 else "")
                + ")"
            )
        if t.state == SequentialState.TOO_FEW.name:
            return (
                f"inconclusive: not enough traffic at {percent}%: {t.users_candidate} candidate "
                f"and {t.users_baseline} prod users, at least {pol.min_users} users and "
                f"{pol.min_events} {metric} outcomes per arm before the test may conclude"
            )
        lr = math.exp(t.log_lr or 0.0)
        if action is CanaryAction.ADVANCE:
            return (
                f"canary {percent}% dwell done, no harm confirmed ({_effect(t, metric)}; "
                f"likelihood ratio {lr:.2g} of {math.exp(t.upper):.0f} to roll back)"
            )
        if action is CanaryAction.PASS:
            return (
                f"canary passed at {percent}%: {_effect(t, metric)}; the likelihood ratio of "
                f"'worse by {margin}' to 'no worse' is {lr:.3f} <= {1 - pol.power:g}"
                f", so a candidate {margin} worse passes at most {1 - pol.power:.0%} of the time"
            )
        if t.state == SequentialState.TRUNCATED.name:
            return (
                f"inconclusive at the test's maximum information ({t.information:.0f}): "
                f"{_effect(t, metric)} lies between no harm and {margin} worse; a human decides"
            )
        if percent < self.ladder[-1]:
            return f"canary {percent}%: dwell not over ({_effect(t, metric)})"
        need = design.operating_characteristic(0.0).expected_information
        return (
            f"inconclusive: not enough traffic yet at {percent}% ({_effect(t, metric)}; "
            f"information {t.information:.0f}, a safe verdict typically needs {need:.0f} and "
            f"the test stops by {t.max_information:.0f}); holding"
        )


def _stack_slices(stats: list[ArmStats]) -> ArmArrays:
    a = as_arrays(stats)
    return ArmArrays(*(v.reshape(1, -1) for v in a))


def _effect(t: SequentialReport, metric: str) -> str:
    if t.lift is None:
        return f"{metric} not estimable yet"
    return (
        f"{metric} {t.rate_candidate:.4f} vs prod {t.rate_baseline:.4f} ({t.lift:+.1%}, "
        f"always-valid interval {t.lift_low:+.1%} to {t.lift_high:+.1%}) over "
        f"{t.users_candidate} / {t.users_baseline} users"
    )
