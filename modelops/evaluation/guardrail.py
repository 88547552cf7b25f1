"""`GuardrailRule`: the online rule a sensor asks today, behind the `DecisionEngine` interface.

Error rate, p99 latency, the spec's declared guardrails and the primary metric (a Wilson bound
against prod; the primary metric is a 0/1 outcome such as a click, whose mean is a rate) roll
back; dwell time and minimum sample sizes hold, and say so honestly ("inconclusive") rather
than guessing, as does an LLM canary whose prompt lengths are not prod's; otherwise the
version takes its next step.
"""

from __future__ import annotations

import math

from modelops.actions import ActionKind
from modelops.evaluation.decision import Decision, Evidence, Verdict, automated_path
from modelops.evaluation.llm_canary import PromptLengthVerdict, compare_window_prompt_lengths
from modelops.spec import State, Tier

__all__ = ["GuardrailRule", "hard_breach", "wilson_interval"]

_Z95 = 1.959963984540054
_WINDOW_METRICS = frozenset(
    {"error_rate", "timeout_rate", "latency_mean_ms", "latency_p50_ms", "latency_p99_ms"}
)
_TAIL_METRICS = frozenset({"latency_p99_ms"})


def wilson_interval(mean: float, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a rate observed over n trials (95% by default).

    Chosen over the normal approximation because it stays inside [0, 1] and behaves at the
    small counts and rare clicks a 1% canary sees.
    """
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, mean))
    z2 = z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    denom = 1 + z2 / n
    return max(0.0, (centre - half) / denom), min(1.0, (centre + half) / denom)


def _fmt_ms(x: float) -> str:
    return f"{x:.0f}ms" if x >= 10 else f"{x:.1f}ms"


class GuardrailRule:
    """Guardrails first (any breach rolls back), then dwell and samples (hold), then the
    next step on the ladder."""

    def decide(self, evidence: Evidence) -> Decision:
        e = evidence
        breach = self._breach(e)
        if breach is not None:
            return Decision(
                verdict=Verdict.ROLLBACK, reason=breach, next_action=ActionKind.rollback
            )
        if e.state is State.PROMOTED:
            left = e.durations.watch_s - e.elapsed_s
            return _hold(f"post-promotion watch, no breach ({_dur(left)} left)")
        if e.state not in (State.SHADOW, State.CANARY, State.AB_TEST):
            return _hold(f"{e.state.value} is not a state the online rule moves")
        waiting = self._dwell(e) or self._short(e) or self._lagging(e) or self._prompt_mix(e)
        if waiting is not None:
            return _hold(waiting)
        return self._advance(e)

    # ---------------------------------------------------------------- roll back

    def _breach(self, e: Evidence) -> str | None:
        breach = hard_breach(e)
        if breach is not None or e.state is State.SHADOW:
            return breach  # outcomes on the shadow arm are prod's; latency and errors only
        return self._primary_breach(e)

    def _primary_breach(self, e: Evidence) -> str | None:
        name, n_min = e.policy.primary_metric, e.policy.min_samples
        c = e.candidate.outcomes.get(name) if e.candidate else None
        b = e.baseline.outcomes.get(name) if e.baseline else None
        if c is None or b is None or c.count < n_min or b.count < n_min:
            return None
        if not (0.0 <= c.mean <= 1.0 and 0.0 <= b.mean <= 1.0):
            return None  # the Wilson bound is for rates; a mean without a variance has none
        lo, hi = wilson_interval(c.mean, c.count)
        drop = e.online.max_primary_drop
        if e.policy.higher_is_better:
            floor = b.mean * (1 - drop)
            if hi < floor:
                return (
                    f"{name} {c.mean:.4f} (95% upper bound {hi:.4f}, n={c.count}) is below "
                    f"prod {b.mean:.4f} x (1 - {drop:g}) = {floor:.4f}"
                )
        else:
            ceiling = b.mean * (1 + drop)
            if lo > ceiling:
                return (
                    f"{name} {c.mean:.4f} (95% lower bound {lo:.4f}, n={c.count}) is above "
                    f"prod {b.mean:.4f} x (1 + {drop:g}) = {ceiling:.4f}"
                )
        return None

    # ---------------------------------------------------------------- hold

    def _dwell(self, e: Evidence) -> str | None:
        d = e.durations
        need = {
            State.SHADOW: d.shadow_min_s,
            State.CANARY: d.canary_step_s,
            State.AB_TEST: d.ab_min_s,
        }[e.state]
        if e.elapsed_s < need:
            where = e.state.value + (f" {e.percent}%" if e.state is State.CANARY else "")
            return f"dwell: {where} for {_dur(e.elapsed_s)} of at least {_dur(need)}"
        return None

    def _short(self, e: Evidence) -> str | None:
        """An honest 'inconclusive': not enough evidence either way, so no step is taken."""
        on, c = e.online, e.candidate
        n = c.requests if c else 0
        if n < on.min_requests:
            msg = f"inconclusive: {n} of {on.min_requests} requests on the {e.state.value} arm"
            if e.state is State.SHADOW and e.elapsed_s >= e.durations.shadow_s:
                msg = (
                    f"shadow ran its maximum {_dur(e.durations.shadow_s)} with {n} of "
                    f"{on.min_requests} requests: no evidence, so no promotion; roll it back "
                    "or send it traffic"
                )
            return msg
        if e.state is State.SHADOW:
            return None
        name, n_min = e.policy.primary_metric, e.policy.min_samples
        co = c.outcomes.get(name) if c else None
        bo = e.baseline.outcomes.get(name) if e.baseline else None
        have_c, have_b = (co.count if co else 0), (bo.count if bo else 0)
        if have_c < n_min:
            return f"inconclusive: {have_c} of {n_min} {name} outcomes on the candidate"
        if have_b < n_min:
            return f"inconclusive: {have_b} of {n_min} {name} outcomes on prod to compare with"
        return None

    def _lagging(self, e: Evidence) -> str | None:
        """Not confidently worse, but not good enough to step up either: a candidate whose
        point estimate is past the tolerance waits for the samples that settle it, instead of
        taking more traffic on the benefit of the doubt."""
        if e.state is State.SHADOW or e.candidate is None or e.baseline is None:
            return None
        name = e.policy.primary_metric
        c, b = e.candidate.outcomes.get(name), e.baseline.outcomes.get(name)
        if c is None or b is None:
            return None
        drop = e.online.max_primary_drop
        if e.policy.higher_is_better:
            bound = b.mean * (1 - drop)
            if c.mean < bound:
                return (
                    f"inconclusive: {name} {c.mean:.4f} (n={c.count}) is below prod "
                    f"{b.mean:.4f} x (1 - {drop:g}) = {bound:.4f}, not yet confidently; "
                    "holding for more samples"
                )
        else:
            bound = b.mean * (1 + drop)
            if c.mean > bound:
                return (
                    f"inconclusive: {name} {c.mean:.4f} (n={c.count}) is above prod "
                    f"{b.mean:.4f} x (1 + {drop:g}) = {bound:.4f}, not yet confidently; "
                    "holding for more samples"
                )
        return None

    def _prompt_mix(self, e: Evidence) -> str | None:
        """An LLM canary speaks only for the prompts it was given: one that did not see prod's
        prompt lengths (its long contexts above all) holds until it has
        (`modelops.evaluation.llm_canary`). Windows read without prompt lengths skip this."""
        if e.state is not State.CANARY:
            return None
        report = compare_window_prompt_lengths(e.candidate, e.baseline)
        if report is None or report.verdict is PromptLengthVerdict.OK:
            return None
        if report.verdict is PromptLengthVerdict.INCONCLUSIVE:
            return f"inconclusive: prompt lengths: {report.reasons[0]}"
        return "canary prompts are not prod's, so its metrics cannot speak for prod: " + (
            "; ".join(report.reasons)
        )

    # ---------------------------------------------------------------- advance

    def _advance(self, e: Evidence) -> Decision:
        auto = automated_path(
            e.tier, is_weight_refresh=e.is_weight_refresh, irreversible=e.irreversible
        )
        ok = self._summary(e)
        ladder = e.canary_ladder
        if e.state is State.SHADOW:
            if not auto:
                return _hold(_human(e, "canary"))
            return Decision(
                verdict=Verdict.ADVANCE,
                reason=f"shadow healthy ({ok}); canary at {ladder[0]}%",
                next_percent=ladder[0],
                next_action=ActionKind.canary_step,
            )
        if e.state is State.CANARY:
            cur = e.percent or 0
            nxt = next((p for p in ladder if p > cur), None)
            if nxt is not None:
                if e.tier is Tier.L3:
                    return _hold(_human(e, f"canary {nxt}%"))
                return Decision(
                    verdict=Verdict.ADVANCE,
                    reason=f"canary {cur}% healthy ({ok}); step to {nxt}%",
                    next_percent=nxt,
                    next_action=ActionKind.canary_step,
                )
            if auto:
                return Decision(
                    verdict=Verdict.PROMOTE,
                    reason=f"canary {cur}% healthy at the top of the ladder ({ok}); promote",
                    next_action=ActionKind.promote,
                )
            if e.tier is Tier.L3:
                return _hold(_human(e, "A/B test"))
            return Decision(
                verdict=Verdict.ADVANCE,
                reason=f"canary {cur}% healthy ({ok}); start the A/B test "
                f"(tier {e.tier.value} goes through A/B unless it is a weight refresh)",
                next_percent=50,
                next_action=ActionKind.start_ab,
            )
        # AB_TEST past its minimum duration, with the samples.
        if not auto:
            return _hold(_human(e, "promotion"))
        return Decision(
            verdict=Verdict.PROMOTE,
            reason=f"A/B test ran {_dur(e.elapsed_s)} with no breach ({ok}); promote",
            next_action=ActionKind.promote,
        )

    def _summary(self, e: Evidence) -> str:
        c = e.candidate
        if c is None:  # unreachable after _short; kept for a total function
            return "no traffic"
        parts = [
            f"{c.requests} req",
            f"err {c.error_rate:.1%}",
            f"p99 {_fmt_ms(c.latency_p99_ms)}",
        ]
        name = e.policy.primary_metric
        if e.state is not State.SHADOW and name in c.outcomes and e.baseline is not None:
            b = e.baseline.outcomes.get(name)
            base = f" vs prod {b.mean:.4f}" if b else ""
            parts.append(f"{name} {c.outcomes[name].mean:.4f}{base}")
        return ", ".join(parts)


def hard_breach(e: Evidence, latency_min_requests: int = 0) -> str | None:
    """The hard guardrails: error rate, p99 latency relative to prod, the spec's declared
    guardrails. None when none is breached.

    `latency_min_requests` is the sample a p99 needs before it may breach (a window field
    `latency_p99_ms`, the online policy's or a declared one): below it the p99 is set by the
    few slowest requests, and a cold start alone can set it. The engines say why they pick it.
    """
    c, on = e.candidate, e.online
    if c is None:
        return None
    if c.requests >= on.min_requests:
        if c.error_rate > on.max_error_rate:
            return (
                f"error rate {c.error_rate:.1%} over {c.requests} requests exceeds "
                f"{on.max_error_rate:.1%}"
            )
        base = e.baseline
        base_p99 = base.latency_p99_ms if base is not None and base.requests else None
        slow = c.latency_p99_ms > on.max_latency_p99_ms and c.requests >= latency_min_requests
        if slow and base_p99 is not None and c.latency_p99_ms < base_p99 * on.max_latency_ratio:
            slow = False  # prod is as slow over the same window: the host, not the model
        if slow:
            vs = "" if base_p99 is None else f" (prod {_fmt_ms(base_p99)})"
            return (
                f"p99 latency {_fmt_ms(c.latency_p99_ms)}{vs} over {c.requests} requests "
                f"exceeds {_fmt_ms(on.max_latency_p99_ms)}"
            )
    return _declared_breach(e, latency_min_requests)


def _declared_breach(e: Evidence, latency_min_requests: int) -> str | None:
    """The spec's own guardrails: a window field (error_rate, timeout_rate, latency_*_ms)
    once min_requests are in, or an outcome's mean once min_samples are in."""
    c = e.candidate
    if c is None:
        return None
    for g in e.policy.guardrails:
        if g.metric in _WINDOW_METRICS:
            need = e.online.min_requests
            if g.metric in _TAIL_METRICS:
                need = max(need, latency_min_requests)
            if c.requests < need:
                continue
            value, n = float(getattr(c, g.metric)), c.requests
        else:
            o = c.outcomes.get(g.metric)
            if e.state is State.SHADOW or o is None or o.count < e.policy.min_samples:
                continue
            value, n = o.mean, o.count
        crossed = value > g.threshold if g.higher_is_worse else value < g.threshold
        if crossed:
            side = "above" if g.higher_is_worse else "below"
            return f"guardrail {g.metric} {value:.4g} (n={n}) is {side} {g.threshold:g}"
    return None


def _hold(reason: str) -> Decision:
    return Decision(verdict=Verdict.HOLD, reason=reason)


def _human(e: Evidence, step: str) -> str:
    why = (
        "tier L3 allows no automatic move; two approvals, one outside the owning team"
        if e.tier is Tier.L3
        else f"tier {e.tier.value} needs an approval unless it is a weight refresh of a model "
        "that can be rolled back"
    )
    return f"healthy, waiting for a human to move it to {step}: {why}"


def _dur(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}min"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"
