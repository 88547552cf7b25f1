"""The A/B decision and its sample-size plan.

Decision (the seed's policy: promotion requires the primary metric significantly positive
and no guardrail tripped). Per look, in this order:
1. sample-ratio mismatch of users per arm against the configured split holds the decision
   and alerts: no decision is made on SRM data (srm.py);
2. a tripped guardrail holds and escalates to a human, with the reason; it never rolls back
   (a canary regression does, an A/B is a measurement). Guardrails are the caller's hard
   trips plus a harm test per ratio guardrail (the canary's test, Bonferroni across them);
3. the primary metric's sequential test (sequential.py), H0 "no lift" (theta <= 0) against
   H1 "lift of the MDE": the likelihood ratio reaching 1/alpha promotes, so a candidate equal
   to (or worse than) prod is promoted at most alpha of the time however often it is looked
   at; falling to beta ends it as "no detectable effect" (a lift as large as the MDE is ruled
   out at the declared power); reaching the planned horizon (the design's maximum
   information) between the two ends it as "no detectable effect" too. Neither ever promotes.

Plan. `plan_ab` is the fixed-horizon sample size for two proportions on Cohen's h, the
arcsine transform phi = 2 asin(sqrt(p)), whose estimate has variance 1/n whatever p is
(Cohen 1988, "Statistical Power Analysis for the Behavioral Sciences", ch. 6):
N = (z_{1-alpha/2} + z_{power})^2 (1/s + 1/(1-s)) / h^2 users in all, split s : 1 - s. Being
variance-stabilised it does not depend on which arm carries the larger variance, which the
unpooled Wald formula does at unequal splits (by up to ~2% here; 0.01% at 50/50). The tests
check it against statsmodels' NormalIndPower, which solves the same power equation
numerically. It also reports what the always-valid design expects: users and days at no
effect and at the MDE (Wald's expected sample for the sequential test) and at most (its
horizon).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelops.evaluation import _normal
from modelops.evaluation.ratio import ArmArrays, ArmStats, as_arrays, log_ratio_difference
from modelops.evaluation.sequential import (
    SequentialDesign,
    SequentialReport,
    SequentialState,
    sequential_report,
)
from modelops.evaluation.srm import SRMPolicy, SRMResult, srm_always_valid_p, srm_check, srm_chi2

__all__ = [
    "ABPolicy",
    "ABOutcome",
    "ABBatch",
    "ABDecision",
    "ABEngine",
    "ABPlan",
    "plan_ab",
    "GuardrailEvidence",
]


class ABPolicy(BaseModel):
    """What a model declares about its A/B test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mde: float = Field(default=0.01, gt=0, lt=1, description="relative lift worth detecting")
    alpha: float = Field(default=0.025, gt=0, lt=0.5, description="false promotion rate")
    power: float = Field(default=0.8, gt=0.5, lt=1, description="P(promote) at the MDE")
    higher_is_better: bool = True
    min_users: int = Field(default=1000, ge=2)
    min_events: int = Field(default=50, ge=1)
    max_information_factor: float = Field(
        default=3.0, ge=1, description="planned horizon, in fixed-horizon informations"
    )
    guardrail_margin: float = Field(
        default=0.05, gt=0, lt=1, description="relative harm on a guardrail that trips it"
    )
    guardrail_alpha: float = Field(default=0.01, gt=0, lt=0.5)
    guardrail_power: float = Field(default=0.8, gt=0.5, lt=1)
    srm: SRMPolicy = Field(default_factory=SRMPolicy)

    def design(self) -> SequentialDesign:
        lift = math.log1p(self.mde) if self.higher_is_better else math.log1p(-self.mde)
        return SequentialDesign(
            alpha=self.alpha,
            beta=1 - self.power,
            effect=lift,
            max_information_factor=self.max_information_factor,
        )

    def guardrail_design(self, higher_is_better: bool, family: int) -> SequentialDesign:
        m = self.guardrail_margin
        return SequentialDesign(
            alpha=self.guardrail_alpha,
            beta=1 - self.guardrail_power,
            effect=math.log1p(-m) if higher_is_better else math.log1p(m),
            family=family,
            max_information_factor=self.max_information_factor,
        )


class ABOutcome(IntEnum):
    CONTINUE = 0  # not enough information yet: keep the test running
    PROMOTE = 1  # significant positive lift, no guardrail, no SRM
    NO_DETECTABLE_EFFECT = 2  # futility or the planned horizon: a human decides, no promotion
    HOLD_ESCALATE = 3  # a guardrail tripped: hold and alert the owners; not a rollback
    HOLD_SRM = 4  # sample-ratio mismatch: hold and alert; no decision on this data


class ABBatch(NamedTuple):
    outcome: np.ndarray  # ABOutcome codes
    state: np.ndarray  # SequentialState of the primary test
    theta: np.ndarray
    var: np.ndarray
    log_lr: np.ndarray
    guardrail_state: np.ndarray | None  # (units, G)
    srm_mismatch: np.ndarray
    srm_p: np.ndarray  # always-valid SRM p-value


class GuardrailEvidence(BaseModel):
    """One ratio guardrail (e.g. errors per request) in both arms."""

    model_config = ConfigDict(extra="forbid")

    candidate: ArmStats
    prod: ArmStats
    higher_is_better: bool = False


class ABDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: str
    reason: str
    escalate: bool
    concluded_with_power: bool = Field(
        description="the test crossed a boundary (promote or futility), as opposed to "
        "running out its horizon or still running"
    )
    test: SequentialReport
    guardrails: dict[str, SequentialReport] = Field(default_factory=dict)
    tripped: list[str] = Field(default_factory=list)
    srm: SRMResult


class ABEngine:
    """The per-tick A/B step; pure and vectorised like CanaryEngine."""

    def __init__(self, policy: ABPolicy | None = None) -> None:
        self.policy = policy or ABPolicy()

    def decide_batch(
        self,
        candidate: ArmArrays | Sequence[ArmStats],
        prod: ArmArrays | Sequence[ArmStats],
        *,
        split: float | np.ndarray,
        guard_candidate: ArmArrays | None = None,
        guard_prod: ArmArrays | None = None,
        guard_higher_is_better: Sequence[bool] = (),
        tripped: np.ndarray | Sequence[bool] | None = None,
        assigned: np.ndarray | None = None,
    ) -> ABBatch:
        """`split`: the candidate's configured share of the test's users.
        `guard_*`: ratio guardrails, arrays of shape (units, G), one direction per column.
        `tripped`: units whose hard guardrails (errors, latency) the caller found tripped.
        `assigned`: users per (candidate, prod) for SRM; default the arms' n_users."""
        pol = self.policy
        c, b = as_arrays(candidate), as_arrays(prod)
        design = pol.design()
        theta, var = log_ratio_difference(c, b)
        ok = (
            (c.n_users >= pol.min_users)
            & (b.n_users >= pol.min_users)
            & (c.sum_x >= pol.min_events)
            & (b.sum_x >= pol.min_events)
        )
        state = design.evaluate(theta, var, ok)
        llr = design.log_lr(theta, var)

        obs = (
            np.stack([c.n_users, b.n_users], axis=-1)
            if assigned is None
            else np.asarray(assigned, dtype=float).reshape(-1, 2)
        )
        sp = np.broadcast_to(np.asarray(split, dtype=float), theta.shape)
        share = np.stack([sp, 1.0 - sp], axis=-1)
        n = obs.sum(axis=-1)
        srm_p = srm_always_valid_p(srm_chi2(obs, share), n, 2, pol.srm.mixture_scale(2))
        srm = (srm_p < pol.srm.alpha) & (n >= pol.srm.min_users)

        trip = np.zeros(theta.shape, dtype=bool)
        if tripped is not None:
            trip |= np.asarray(tripped, dtype=bool).reshape(theta.shape)
        g_state = None
        if guard_candidate is not None and guard_prod is not None:
            gc, gp = as_arrays(guard_candidate), as_arrays(guard_prod)
            g = np.asarray(gc.n_users).shape[-1]
            if len(guard_higher_is_better) != g:
                raise ValueError("guard_higher_is_better needs one direction per guardrail")
            gt, gv = log_ratio_difference(gc, gp)
            g_ok = (gc.n_users >= pol.min_users) & (gp.n_users >= pol.min_users)
            designs = [pol.guardrail_design(bool(h), g) for h in guard_higher_is_better]
            g_state = np.stack(
                [d.evaluate(gt[..., j], gv[..., j], g_ok[..., j]) for j, d in enumerate(designs)],
                axis=-1,
            )
            trip |= (g_state == SequentialState.REJECT).any(axis=-1)

        out = np.full(theta.shape, ABOutcome.CONTINUE, dtype=np.int8)
        out[state == SequentialState.REJECT] = ABOutcome.PROMOTE
        out[(state == SequentialState.ACCEPT) | (state == SequentialState.TRUNCATED)] = (
            ABOutcome.NO_DETECTABLE_EFFECT
        )
        out[trip] = ABOutcome.HOLD_ESCALATE
        out[srm] = ABOutcome.HOLD_SRM
        return ABBatch(
            outcome=out,
            state=state,
            theta=theta,
            var=var,
            log_lr=llr,
            guardrail_state=g_state,
            srm_mismatch=srm,
            srm_p=srm_p,
        )

    def decide(
        self,
        candidate: ArmStats,
        prod: ArmStats,
        *,
        split: float,
        guardrails: Mapping[str, GuardrailEvidence] | None = None,
        tripped: Sequence[str] = (),
        assigned: tuple[int, int] | None = None,
        metric: str = "primary metric",
    ) -> ABDecision:
        """One A/B: the batch step on a batch of one, with the reason spelled out.
        `tripped`: the caller's hard-guardrail trip reasons (each holds and escalates)."""
        pol = self.policy
        names = list(guardrails or {})
        gc = gp = None
        if names:
            gc = _row([guardrails[n].candidate for n in names])  # type: ignore[index]
            gp = _row([guardrails[n].prod for n in names])  # type: ignore[index]
        r = self.decide_batch(
            [candidate],
            [prod],
            split=split,
            guard_candidate=gc,
            guard_prod=gp,
            guard_higher_is_better=[guardrails[n].higher_is_better for n in names]  # type: ignore[index]
            if names
            else (),
            tripped=[bool(tripped)],
            assigned=None if assigned is None else np.array([assigned], dtype=float),
        )
        design = pol.design()
        test = sequential_report(
            design,
            int(r.state[0]),
            float(r.theta[0]),
            float(r.var[0]),
            (candidate.n_users, prod.n_users),
            (candidate.ratio, prod.ratio),
        )
        greports: dict[str, SequentialReport] = {}
        trips = list(tripped)
        for j, name in enumerate(names):
            ge = guardrails[name]  # type: ignore[index]
            th, v = log_ratio_difference(as_arrays(ge.candidate), as_arrays(ge.prod))
            gd = pol.guardrail_design(ge.higher_is_better, len(names))
            rep = sequential_report(
                gd,
                int(r.guardrail_state[0, j]),  # type: ignore[index]
                float(th[0]),
                float(v[0]),
                (ge.candidate.n_users, ge.prod.n_users),
                (ge.candidate.ratio, ge.prod.ratio),
            )
            greports[name] = rep
            if rep.state == SequentialState.REJECT.name:
                trips.append(
                    f"guardrail {name} worse by {pol.guardrail_margin:.0%} confirmed: "
                    f"{rep.rate_candidate:.4g} vs prod {rep.rate_baseline:.4g} "
                    f"({rep.lift:+.1%})"
                )
        obs = assigned if assigned is not None else (candidate.n_users, prod.n_users)
        srm_res = srm_check(list(obs), [split, 1 - split], pol.srm)
        outcome = ABOutcome(int(r.outcome[0]))
        reason = _ab_reason(outcome, test, trips, srm_res, metric, pol, design)
        concluded = test.state in (SequentialState.REJECT.name, SequentialState.ACCEPT.name)
        return ABDecision(
            outcome=outcome.name,
            reason=reason,
            escalate=outcome
            in (ABOutcome.HOLD_ESCALATE, ABOutcome.HOLD_SRM, ABOutcome.NO_DETECTABLE_EFFECT),
            concluded_with_power=concluded and outcome is not ABOutcome.HOLD_SRM,
            test=test,
            guardrails=greports,
            tripped=trips,
            srm=srm_res,
        )


def _row(stats: list[ArmStats]) -> ArmArrays:
    a = as_arrays(stats)
    return ArmArrays(*(v.reshape(1, -1) for v in a))


def _ab_reason(
    outcome: ABOutcome,
    t: SequentialReport,
    trips: list[str],
    srm: SRMResult,
    metric: str,
    pol: ABPolicy,
    design: SequentialDesign,
) -> str:
    eff = (
        f"{metric} {t.rate_candidate:.4f} vs prod {t.rate_baseline:.4f} ({t.lift:+.2%}, "
        f"always-valid interval {t.lift_low:+.2%} to {t.lift_high:+.2%}) over "
        f"{t.users_candidate} / {t.users_baseline} users"
        if t.lift is not None
        else f"{metric} not estimable yet ({t.users_candidate} / {t.users_baseline} users)"
    )
    if outcome is ABOutcome.HOLD_SRM:
        return srm.reason
    if outcome is ABOutcome.HOLD_ESCALATE:
        return "guardrail tripped, holding for the owners: " + "; ".join(trips) + f" ({eff})"
    lr = math.exp(t.log_lr) if t.log_lr is not None else float("nan")
    if outcome is ABOutcome.PROMOTE:
        return (
            f"significant lift: {eff}; the likelihood ratio of 'lift {pol.mde:.1%}' to "
            f"'no lift' reached {lr:.0f} >= {math.exp(design.upper):.0f} "
            f"(false promotion <= {pol.alpha:g} under continuous monitoring)"
        )
    if outcome is ABOutcome.NO_DETECTABLE_EFFECT:
        if t.state == SequentialState.ACCEPT.name:
            return (
                f"no detectable effect: {eff}; a lift of {pol.mde:.1%} is ruled out at power "
                f"{pol.power:.0%} (likelihood ratio {lr:.3f} <= {1 - pol.power:g}); not promoted"
            )
        return (
            f"no detectable effect by the planned horizon (information {t.information:.0f} of "
            f"{t.max_information:.0f}): {eff}; not promoted"
        )
    if t.state == SequentialState.TOO_FEW.name:
        return (
            f"inconclusive: not enough traffic, {t.users_candidate} / {t.users_baseline} users "
            f"(at least {pol.min_users} users and {pol.min_events} outcomes per arm)"
        )
    return (
        f"running: {eff}; likelihood ratio {lr:.3g} (promote at "
        f"{math.exp(design.upper):.0f}, stop for no effect at {1 - pol.power:g}); information "
        f"{t.information:.0f} of at most {t.max_information:.0f}"
    )


class ABPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    baseline: float
    relative_mde: float
    alpha: float
    power: float
    split: float
    treatment_users: int
    control_users: int
    total_users: int
    days: float | None
    sequential_users_no_effect: int = Field(description="expected total users at no lift")
    sequential_users_at_mde: int = Field(description="expected total users at the MDE")
    sequential_users_max: int = Field(description="the planned horizon (maximum)")
    sequential_days_no_effect: float | None
    sequential_days_at_mde: float | None
    sequential_days_max: float | None


def plan_ab(
    baseline: float,
    relative_mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    daily_users: int | None = None,
    split: float = 0.5,
) -> ABPlan:
    """Users per arm (fixed horizon, two-sided alpha) for a rate `baseline` and a relative
    lift `relative_mde`; `split` is the treatment's share; days at `daily_users` entering the
    test per day. The sequential figures use ABPolicy's one-sided design at alpha / 2."""
    if not 0 < baseline < 1:
        raise ValueError("baseline must be a rate strictly between 0 and 1")
    if relative_mde == 0 or not 0 < baseline * (1 + relative_mde) < 1:
        raise ValueError("relative_mde must be non-zero and keep the treatment rate in (0, 1)")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("alpha and power must lie strictly between 0 and 1")
    if not 0 < split < 1:
        raise ValueError("split (the treatment's share) must lie strictly between 0 and 1")
    if daily_users is not None and daily_users <= 0:
        raise ValueError("daily_users must be positive")
    pc, pt = baseline, baseline * (1 + relative_mde)
    h = 2 * math.asin(math.sqrt(pt)) - 2 * math.asin(math.sqrt(pc))
    zsum = _normal.z(1 - alpha / 2) + _normal.z(power)
    total = zsum**2 * (1 / split + 1 / (1 - split)) / h**2
    n_t, n_c = math.ceil(total * split), math.ceil(total * (1 - split))

    policy = ABPolicy(
        mde=abs(relative_mde), alpha=alpha / 2, power=power, higher_is_better=relative_mde > 0
    )
    design = policy.design()
    # Information per user in the test: one binary outcome per user, so the log rate has
    # per-user variance q/p in each arm.
    per_user = 1.0 / ((1 - pt) / (pt * split) + (1 - pc) / (pc * (1 - split)))
    users = {
        "no_effect": design.operating_characteristic(0.0).expected_information / per_user,
        "at_mde": design.operating_characteristic(design.effect).expected_information / per_user,
        "max": design.max_information / per_user,
    }

    def days(u: float) -> float | None:
        return None if daily_users is None else u / daily_users

    return ABPlan(
        baseline=baseline,
        relative_mde=relative_mde,
        alpha=alpha,
        power=power,
        split=split,
        treatment_users=n_t,
        control_users=n_c,
        total_users=n_t + n_c,
        days=days(n_t + n_c),
        sequential_users_no_effect=math.ceil(users["no_effect"]),
        sequential_users_at_mde=math.ceil(users["at_mde"]),
        sequential_users_max=math.ceil(users["max"]),
        sequential_days_no_effect=days(users["no_effect"]),
        sequential_days_at_mde=days(users["at_mde"]),
        sequential_days_max=days(users["max"]),
    )
