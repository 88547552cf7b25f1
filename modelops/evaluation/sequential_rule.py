"""`SequentialRule`: the default `DecisionEngine`, deciding live versions on always-valid tests.

Per state, in this order:
- **Hard guardrails** (`guardrail.hard_breach`: error rate, p99 latency relative to prod, the
  spec's declared guardrails). A breach rolls a shadow, a canary or a watched promotion
  back; during an A/B it holds and alerts the owners (an A/B is a measurement: a human
  decides), never rolls back.
- **SHADOW**: outcomes on the shadow arm are prod's, so only the guardrails speak. It waits
  for its dwell, for `min_requests`, and for the latency sample (below), then takes the
  tier's next step.
- **CANARY**: `CanaryEngine`'s one-sided harm test on the primary metric's per-user ratio
  (delta method over users, two-boundary SPRT valid at every tick), H1 "worse by the harm
  margin". Confirmed harm rolls back at any step; a step is taken once its dwell is over
  and harm is not confirmed; at the top of the ladder it passes only when the test has
  accepted "no worse" with its declared power, never on "no breach yet"; thin traffic holds
  and says so. Each protected slice (`policy.protected_slices`, the data slices the gateway
  logs as segments) gets its own harm test, Bonferroni over the family. SRM on the current
  step's users holds and alerts.
- **AB_TEST**: `ABEngine`: SRM holds and alerts, and no decision is made on SRM data; a
  guardrail trip (hard, or the per-user error ratio's harm test) holds and alerts; the
  primary metric must be significantly positive to promote; "no detectable effect"
  (futility, or the planned horizon) holds for a human and is never promoted.
- **PROMOTED** inside its watch: guardrails and the harm test against the previous prod
  (before vs after, so a trend over time can confound it) roll back; nothing else moves.

The policy: the harm margin is the online policy's `max_primary_drop` when the fleet
declares it, else `CanaryPolicy`'s 10%; `policy.min_samples` is the users each arm needs
before any test may conclude (the unit is the user); A/B MDE, alpha and power come from
`policy.ab` when the spec has it (alpha halved: the plan is two-sided, the test one-sided).

Latency p99 sample. A p99 guardrail fires only over at least `LATENCY_MIN_REQUESTS` = 500
requests. The sample p99 of n requests is set by its n/100 slowest: below 100 requests it
is the maximum, so one cold-start request (a freshly loaded model's first inference, a JIT
compile, a cold cache) decides it alone, which is how a fresh shadow was once rolled back on
40 requests. At 500 the p99 rests on the five slowest requests, and 500 is past the 299 a
distribution-free bound on the p99 needs at all (the sample maximum is a 95% upper
confidence bound for the p99 only from n >= 299, since 0.99^299 < 0.05; Conover,
"Practical Nonparametric Statistics", 3rd ed., section 3.2). The threshold itself is
unchanged: this is a sample-size requirement. Until it is met a shadow does not advance and
a canary does not pass the top of its ladder (it may take its steps, which is how the sample
grows); the reason says how many requests latency still needs.
"""

from __future__ import annotations

import math
from typing import Any

from modelops.actions import ActionKind
from modelops.evaluation.ab import ABDecision, ABEngine, ABPolicy, GuardrailEvidence
from modelops.evaluation.canary import CanaryDecision, CanaryEngine, CanaryPolicy
from modelops.evaluation.decision import Decision, Evidence, Verdict, automated_path
from modelops.evaluation.guardrail import GuardrailRule, hard_breach
from modelops.evaluation.ratio import ArmStats
from modelops.evaluation.sequential import SequentialReport
from modelops.evidence import UserSums, WindowStats
from modelops.spec import State, Tier

__all__ = ["HEIGHTENED_FACTOR", "LATENCY_MIN_REQUESTS", "SequentialRule", "arm_stats"]

LATENCY_MIN_REQUESTS = 500
HEIGHTENED_FACTOR = 0.5
"""Heightened monitoring multiplies the error-rate and p99-latency limits by this (halves
them); see `SequentialRule.under_monitoring` for why those two and not the harm margin."""
_MAX_MARGIN = 0.95  # a relaxed harm margin stays a relative drop the test can be powered for
_EMPTY = ArmStats(n_users=0)


def arm_stats(sums: UserSums | None) -> ArmStats:
    """The evidence vocabulary's per-user sums as the ratio module's ArmStats."""
    if sums is None:
        return _EMPTY
    return ArmStats(
        n_users=sums.users,
        sum_x=sums.sum_x,
        sum_y=sums.sum_y,
        sum_xx=sums.sum_xx,
        sum_yy=sums.sum_yy,
        sum_xy=sums.sum_xy,
    )


class SequentialRule:
    """The default engine of the online-metrics sensor (see the module docstring).

    `canary` and `ab` are the base policies; each model's declarations refine them per call.
    """

    def __init__(
        self,
        canary: CanaryPolicy | None = None,
        ab: ABPolicy | None = None,
        *,
        latency_min_requests: int = LATENCY_MIN_REQUESTS,
    ) -> None:
        self.canary = canary or CanaryPolicy()
        self.ab = ab or ABPolicy()
        self.latency_min_requests = latency_min_requests
        self._steps = GuardrailRule()  # dwell, shadow sample and the tier's next step

    # ------------------------------------------------------------------ policies

    def canary_policy(self, e: Evidence) -> CanaryPolicy:
        upd: dict[str, Any] = {
            "higher_is_better": e.policy.higher_is_better,
            "min_users": max(2, e.policy.min_samples),
        }
        drop = e.online.max_primary_drop
        if "max_primary_drop" in e.online.model_fields_set and 0 < drop < 1:
            upd["harm_margin"] = drop
        return self.canary.model_copy(update=upd)

    def ab_policy(self, e: Evidence) -> ABPolicy:
        upd: dict[str, Any] = {
            "higher_is_better": e.policy.higher_is_better,
            "min_users": max(2, e.policy.min_samples),
        }
        contract = getattr(e.policy, "ab", None)  # the registry's A/B contract, when declared
        if contract is not None:
            upd["mde"] = float(contract.relative_mde)
            upd["alpha"] = float(contract.alpha) / 2
            upd["power"] = float(contract.power)
        return self.ab.model_copy(update=upd)

    def under_monitoring(
        self,
        e: Evidence,
        *,
        heightened_until: str | None = None,
        relax_factor: float | None = None,
        decay_until: str | None = None,
        decay_reason: str = "",
    ) -> tuple[Evidence, dict[str, Any]]:
        """The evidence with its thresholds set for the monitoring in force, and what was
        changed (for the decision's details and the evidence tag).

        Heightened monitoring (a break-glass skipped the shadow and the canary): the hard
        guardrails' **error-rate and p99-latency limits are halved** (HEIGHTENED_FACTOR);
        the latency ratio to prod, `min_requests` and the 500-request p99 sample are kept,
        so a slow host or a cold start still cannot trip it alone. These are the limits
        the skipped stages would have checked at small exposure; they are absolute
        thresholds on measured rates, so tightening them acts on the next tick, at the
        price of more false alarms for one day while the owners are watching anyway. The
        **harm margin is unchanged**: it is the alternative hypothesis the SPRT is powered
        for, not a limit; a smaller margin would not catch a real harm sooner, it would make
        the test need more users before it concludes either way (Wald 1945), and its alpha
        and power would no longer be the declared ones.

        Decay window (after an IRREVERSIBLE rollback): error-rate and p99 limits and the
        harm margin are multiplied by the window's factor (x2; the margin capped at 95%),
        because the restored version runs on an input distribution its successor shifted
        and its expected decay must not trigger a second, spurious rollback. Both may hold
        at once; the factors multiply.
        """
        on = e.online
        err, p99 = on.max_error_rate, on.max_latency_p99_ms
        upd: dict[str, Any] = {}
        notes: dict[str, Any] = {}
        if relax_factor is not None and relax_factor > 1:
            margin = self.canary_policy(e).harm_margin
            relaxed = min(_MAX_MARGIN, margin * relax_factor)
            err, p99 = min(1.0, err * relax_factor), p99 * relax_factor
            upd["max_primary_drop"] = relaxed
            notes["decay_window"] = (
                f"decay window until {decay_until} (IRREVERSIBLE rollback): thresholds "
                f"relaxed x{relax_factor:g} (error rate {err:.1%}, p99 {p99:g} ms, harm "
                f"margin {margin:.0%} -> {relaxed:.0%})"
                + (f": {decay_reason}" if decay_reason else "")
            )
        if heightened_until is not None:
            err, p99 = err * HEIGHTENED_FACTOR, p99 * HEIGHTENED_FACTOR
            notes["monitoring"] = (
                f"heightened monitoring until {heightened_until} (break-glass): error rate "
                f"limit {err:.1%}, p99 limit {p99:g} ms (halved), harm margin unchanged"
            )
        if not notes:
            return e, {}
        upd.update(max_error_rate=err, max_latency_p99_ms=p99)
        return e.model_copy(update={"online": on.model_copy(update=upd)}), notes

    # ------------------------------------------------------------------ decide

    def decide(self, evidence: Evidence) -> Decision:
        e = evidence
        if e.state not in (State.SHADOW, State.CANARY, State.AB_TEST, State.PROMOTED):
            return _hold(f"{e.state.value} is not a state the online rule moves")
        breach = hard_breach(e, self.latency_min_requests)
        if breach is not None:
            if e.state is State.AB_TEST:
                return _hold(
                    f"guardrail tripped during the A/B test, holding for the owners: {breach}",
                    alert="ab_guardrail",
                    details={"guardrail": breach},
                )
            return Decision(
                verdict=Verdict.ROLLBACK,
                reason=breach,
                next_action=ActionKind.rollback,
                details={"guardrail": breach},
            )
        if e.state is State.SHADOW:
            return self._shadow(e)
        if e.state is State.CANARY:
            return self._canary(e)
        if e.state is State.AB_TEST:
            return self._ab(e)
        return self._watch(e)

    # ------------------------------------------------------------------ states

    def _latency_short(self, e: Evidence) -> str | None:
        n = e.candidate.requests if e.candidate is not None else 0
        if n < self.latency_min_requests:
            return (
                f"inconclusive: p99 latency is judged over at least {self.latency_min_requests} "
                f"requests, {n} so far (a smaller sample's p99 is its few slowest requests)"
            )
        return None

    def _shadow(self, e: Evidence) -> Decision:
        wait = self._steps._dwell(e) or self._steps._short(e) or self._latency_short(e)
        if wait is not None:
            return _hold(wait)
        return self._steps._advance(e)

    def _canary(self, e: Evidence) -> Decision:
        pol = self.canary_policy(e)
        metric = e.policy.primary_metric
        c, b = _user_outcome(e.candidate, metric), _user_outcome(e.baseline, metric)
        if e.candidate is not None and e.candidate.requests and c.n_users == 0:
            return _hold(
                f"inconclusive: the canary's {e.candidate.requests} requests carry no user key, "
                "and the test counts users; waiting for keyed traffic",
                details={"users_candidate": 0},
            )
        slices: dict[str, tuple[ArmStats, ArmStats]] = {}
        for name in e.policy.protected_slices:
            slices[name] = (
                _segment(e.candidate, name, metric),
                _segment(e.baseline, name, metric),
            )
        dwell_done = e.elapsed_s >= e.durations.canary_step_s
        d = CanaryEngine(pol, e.canary_ladder).decide(
            c,
            b,
            percent=int(e.percent or e.canary_ladder[0]),
            dwell_done=dwell_done,
            slices=slices or None,
            assigned=e.step_users,
            metric=metric,
        )
        details = _canary_details(d, pol)
        if d.action == "ROLLBACK":
            return Decision(
                verdict=Verdict.ROLLBACK,
                reason=d.reason,
                next_action=ActionKind.rollback,
                details=details,
            )
        if d.srm is not None and d.srm.mismatch:
            return _hold(d.reason, alert="srm", details=details)
        if d.action == "HOLD":
            alert = "canary_inconclusive" if d.escalate else None
            return _hold(d.reason, alert=alert, details=details)
        # Like the harm test, latency may gather its sample over the ladder's steps, but the
        # canary passes (to prod or the A/B) only once its p99 could have breached.
        wait = self._steps._prompt_mix(e) or (
            self._latency_short(e) if d.action == "PASS" else None
        )
        if wait is not None:
            return _hold(f"{d.reason}; but {wait}", details=details)
        step = self._steps._advance(e)
        why = d.reason if step.verdict is not Verdict.HOLD else f"{d.reason}; {step.reason}"
        return step.model_copy(update={"reason": why, "details": details})

    def _ab(self, e: Evidence) -> Decision:
        pol = self.ab_policy(e)
        metric = e.policy.primary_metric
        c, b = _user_outcome(e.candidate, metric), _user_outcome(e.baseline, metric)
        guards: dict[str, GuardrailEvidence] = {}
        if e.candidate is not None and e.baseline is not None:
            ce, be = e.candidate.user_requests, e.baseline.user_requests
            if ce is not None and be is not None:
                guards["errors per request"] = GuardrailEvidence(
                    candidate=arm_stats(ce), prod=arm_stats(be), higher_is_better=False
                )
        split = _ab_split(e)
        users = (
            e.candidate.users if e.candidate is not None else 0,
            e.baseline.users if e.baseline is not None else 0,
        )
        d = ABEngine(pol).decide(
            c, b, split=split, guardrails=guards or None, assigned=users, metric=metric
        )
        details = _ab_details(d, pol, split)
        if d.outcome == "HOLD_SRM":
            return _hold(d.reason, alert="srm", details=details)
        if d.outcome == "HOLD_ESCALATE":
            return _hold(d.reason, alert="ab_guardrail", details=details)
        if d.outcome == "NO_DETECTABLE_EFFECT":
            human = "a human decides" + (
                f" (tier {e.tier.value})" if e.tier in (Tier.L2, Tier.L3) else ""
            )
            return _hold(
                f"{d.reason}; {human}",
                alert="ab_no_effect",
                details=details,
                conclusion=_conclusion(d),
            )
        if d.outcome == "PROMOTE":
            auto = automated_path(
                e.tier, is_weight_refresh=e.is_weight_refresh, irreversible=e.irreversible
            )
            if not auto:
                return _hold(
                    f"{d.reason}; waiting for a human to promote it "
                    f"(tier {e.tier.value} allows no automatic promotion here)",
                    details=details,
                    conclusion=_conclusion(d),
                )
            return Decision(
                verdict=Verdict.PROMOTE,
                reason=d.reason,
                next_action=ActionKind.promote,
                details=details,
                conclusion=_conclusion(d),
            )
        horizon_days = float((e.ab_plan or {}).get("sequential_days_max") or 0.0)
        if horizon_days > 0 and e.elapsed_s >= horizon_days * 86400 and d.outcome == "CONTINUE":
            # The plan's horizon in time (the sequential maximum at the planned daily users)
            # passed before the test's information did: traffic was thinner than planned.
            why = (
                f"no detectable effect by the planned horizon ({horizon_days:g} days): "
                f"{d.reason}; not promoted, a human decides"
            )
            return _hold(
                why,
                alert="ab_no_effect",
                details=details,
                conclusion={**_conclusion(d), "outcome": "NO_DETECTABLE_EFFECT", "reason": why},
            )
        return _hold(d.reason, details=details)

    def _watch(self, e: Evidence) -> Decision:
        """After a promotion: only confirmed harm against the previous prod moves it."""
        left = e.durations.watch_s - e.elapsed_s
        metric = e.policy.primary_metric
        c, b = _user_outcome(e.candidate, metric), _user_outcome(e.baseline, metric)
        pol = self.canary_policy(e)
        top = e.canary_ladder[-1]
        d = CanaryEngine(pol, e.canary_ladder).decide(
            c, b, percent=top, dwell_done=False, metric=metric
        )
        details = _canary_details(d, pol)
        if d.action == "ROLLBACK":
            return Decision(
                verdict=Verdict.ROLLBACK,
                reason=f"post-promotion watch: {d.reason} (against the previous prod)",
                next_action=ActionKind.rollback,
                details=details,
            )
        return _hold(
            f"post-promotion watch, no harm confirmed ({_dur(left)} left)", details=details
        )


# ---------------------------------------------------------------------- helpers


def _user_outcome(w: WindowStats | None, metric: str) -> ArmStats:
    return arm_stats(w.user_outcomes.get(metric)) if w is not None else _EMPTY


def _segment(w: WindowStats | None, name: str, metric: str) -> ArmStats:
    if w is None:
        return _EMPTY
    return arm_stats(w.segments.get(name, {}).get(metric))


def _ab_split(e: Evidence) -> float:
    """The candidate's configured share of the slice's users (SRM expects it)."""
    plan = e.ab_plan or {}
    pct = plan.get("percent", e.percent)
    return min(0.99, max(0.01, float(pct if pct is not None else 50) / 100.0))


def _conclusion(d: ABDecision) -> dict[str, Any]:
    return {
        "outcome": d.outcome,
        "concluded_with_power": d.concluded_with_power,
        "reason": d.reason,
        "evidence": _report(d.test, ""),
    }


def _report(t: SequentialReport, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        f"{prefix}state": t.state,
        f"{prefix}users_candidate": t.users_candidate,
        f"{prefix}users_prod": t.users_baseline,
    }
    for k, v in (
        ("rate_candidate", t.rate_candidate),
        ("rate_prod", t.rate_baseline),
        ("lift", t.lift),
        ("lift_low", t.lift_low),
        ("lift_high", t.lift_high),
        ("log_lr", t.log_lr),
    ):
        if v is not None and math.isfinite(v):
            out[f"{prefix}{k}"] = round(v, 6)
    out[f"{prefix}information"] = round(t.information, 3)
    out[f"{prefix}information_max"] = round(t.max_information, 3)
    return out


def _canary_details(d: CanaryDecision, pol: CanaryPolicy) -> dict[str, Any]:
    out = {
        "engine": "canary harm test (SPRT)",
        "action": d.action,
        "harm_margin": pol.harm_margin,
        "alpha": pol.alpha,
        "power": pol.power,
        **_report(d.test, ""),
    }
    for name, rep in d.slices.items():
        out.update(_report(rep, f"slice.{name}."))
    if d.srm is not None:
        out["srm_p_always_valid"] = round(d.srm.p_always_valid, 6)
    return out


def _ab_details(d: ABDecision, pol: ABPolicy, split: float) -> dict[str, Any]:
    out = {
        "engine": "A/B sequential test (SPRT)",
        "outcome": d.outcome,
        "mde": pol.mde,
        "alpha": pol.alpha,
        "power": pol.power,
        "split": round(split, 4),
        "srm_p_always_valid": round(d.srm.p_always_valid, 6),
        **_report(d.test, ""),
    }
    for name, rep in d.guardrails.items():
        out.update(_report(rep, f"guardrail.{name}."))
    return out


def _hold(
    reason: str,
    *,
    alert: str | None = None,
    details: dict[str, Any] | None = None,
    conclusion: dict[str, Any] | None = None,
) -> Decision:
    return Decision(
        verdict=Verdict.HOLD,
        reason=reason,
        alert=alert,
        details=details or {},
        conclusion=conclusion,
    )


def _dur(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}min"
    return f"{s / 3600:.1f}h"
