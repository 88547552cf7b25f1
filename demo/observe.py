"""What the demo shows beside the sensors' own steps: each canary's planned sample, and what
the old rule would have done on the same windows.

Every few seconds the observer reads the prediction-log windows of each live canary exactly
as the online-metrics sensor does (`OnlineMetricsEvaluator`, with an engine that records the
evidence), and prints:
- the plan: the users the sequential harm test needs for its declared power, from the core
  planning functions (`CanaryPolicy.design`, its operating characteristic and
  `users_for_information`, with the per-user variance measured on prod's window), beside the
  users it has;
- the decision `SequentialRule` (the sensor's engine) takes on that evidence;
- the decision `GuardrailRule`, the rule it replaced, takes on the same evidence at its
  production tolerance (`max_primary_drop` 0.2): the "old rule" line.

It decides nothing and launches nothing: the sensors do, in the daemon.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from modelops.evaluation.decision import Decision, Evidence, Verdict
from modelops.evaluation.guardrail import GuardrailRule
from modelops.evaluation.ratio import (
    as_arrays,
    log_ratio_difference,
    per_user_log_variance,
    users_for_information,
)
from modelops.fleet import Fleet, OnlinePolicy
from modelops.spec import State

__all__ = ["CanaryPlan", "CanaryObserver", "canary_plan", "old_rule_decision"]

OLD_RULE_DROP = OnlinePolicy().max_primary_drop  # the old rule's production tolerance


@dataclass
class CanaryPlan:
    """The harm test's planned sample for one canary at one look, in users."""

    percent: int
    power: float
    margin: float
    alpha: float
    tests: int
    users_expected: int | None  # candidate users the SPRT expects to need at no harm
    users_fixed: int | None  # a fixed-horizon test with the same error rates
    users_max: int | None  # the test's horizon (it stops by then)
    prod_per_candidate: float
    have_candidate: int
    have_prod: int
    information: float
    information_expected: float

    def line(self) -> str:
        if self.users_expected is None:
            need = "needs prod's per-user variance first (too few users yet)"
        else:
            need = (
                f"needs ~{self.users_expected} canary users beside "
                f"{self.prod_per_candidate:.0f}x as many on prod (fixed horizon "
                f"{self.users_fixed}, stops by {self.users_max})"
            )
        return (
            f"canary {self.percent}%: power {self.power:.0%} against a {self.margin:.0%} drop "
            f"(false rollback <= {self.alpha:g}, {self.tests} tests) {need}; have "
            f"{self.have_candidate} / {self.have_prod} users, information "
            f"{self.information:.0f} (a 'no worse' verdict expects ~"
            f"{self.information_expected:.0f})"
        )


def canary_plan(e: Evidence, engine: Any) -> CanaryPlan:
    """The planned sample from the core functions, on this evidence's policy and prod's
    measured per-user variance of the click rate."""
    from modelops.evaluation.sequential_rule import arm_stats

    pol = engine.canary_policy(e)
    tests = 1 + len(e.policy.protected_slices)
    design = pol.design(tests)
    metric = e.policy.primary_metric
    c = arm_stats(e.candidate.user_outcomes.get(metric) if e.candidate else None)
    b = arm_stats(e.baseline.user_outcomes.get(metric) if e.baseline else None)
    pct = int(e.percent or e.canary_ladder[0])
    k = (100 - pct) / pct
    info_exp = design.operating_characteristic(0.0).expected_information
    v_b = float(per_user_log_variance(as_arrays(b))[0]) if b.n_users >= 2 else math.nan
    v_c = float(per_user_log_variance(as_arrays(c))[0]) if c.n_users >= 50 else v_b
    _, var = log_ratio_difference(as_arrays(c), as_arrays(b))
    info = float(1.0 / var[0]) if math.isfinite(var[0]) and var[0] > 0 else 0.0
    expected = fixed = most = None
    if math.isfinite(v_b) and v_b > 0:
        expected = math.ceil(users_for_information(info_exp, v_c, v_b, k))
        fixed = math.ceil(pol.fixed_horizon_users(v_c, v_b, k, tests))
        most = math.ceil(users_for_information(design.max_information, v_c, v_b, k))
    return CanaryPlan(
        percent=pct,
        power=pol.power,
        margin=pol.harm_margin,
        alpha=pol.alpha,
        tests=tests,
        users_expected=expected,
        users_fixed=fixed,
        users_max=most,
        prod_per_candidate=k,
        have_candidate=c.n_users,
        have_prod=b.n_users,
        information=info,
        information_expected=info_exp,
    )


def old_rule_decision(e: Evidence, *, at_top: bool = False) -> Decision:
    """`GuardrailRule` on the same evidence at its production tolerance; `at_top`: as if the
    canary sat at the top of the ladder with its dwell done (what it would do there)."""
    ev = e.model_copy(
        update={"online": e.online.model_copy(update={"max_primary_drop": OLD_RULE_DROP})}
    )
    if at_top:
        ev = ev.model_copy(
            update={
                "percent": e.canary_ladder[-1],
                "since_ts": min(e.since_ts, e.now_ts - e.durations.canary_step_s),
            }
        )
    return GuardrailRule().decide(ev)


class _Recorder:
    """An engine that keeps the evidence and answers HOLD (nothing is launched anyway)."""

    def __init__(self) -> None:
        self.seen: list[Evidence] = []

    def decide(self, evidence: Evidence) -> Decision:
        self.seen.append(evidence)
        return Decision(verdict=Verdict.HOLD, reason="observed")


@dataclass
class _Track:
    last_print: float = 0.0
    last_percent: int | None = None
    evidence: Evidence | None = None
    plan: CanaryPlan | None = None
    new_rule: Decision | None = None
    old_rule: Decision | None = None
    old_verdicts: dict[str, int] = field(default_factory=dict)
    reported: bool = False
    looks: list[tuple[int, float, float | None, float | None]] = field(default_factory=list)
    ab_line: str | None = None


class CanaryObserver:
    """Reads each live canary's windows every `every_s` and prints its plan and both rules."""

    def __init__(self, fleet: Fleet, registry: Any, reader: Any, tl: Any, every_s: float = 4.0):
        from modelops.evaluation.sequential_rule import SequentialRule
        from sensors.online_metrics import OnlineMetricsEvaluator

        self.recorder = _Recorder()
        self.evaluator = OnlineMetricsEvaluator(fleet, engine=self.recorder)
        self.engine = SequentialRule()
        self.registry = registry
        self.reader = reader
        self.tl = tl
        self.every_s = every_s
        self.print_every_s = 10.0
        self.tracks: dict[tuple[str, int], _Track] = {}
        self._last = 0.0

    def poll(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        self.recorder.seen.clear()
        try:
            self.evaluator.evaluate(self.registry, self.reader)
        except Exception as exc:  # noqa: BLE001 - the observer only informs
            self.tl(f"observe   could not read the windows: {exc}")
            return
        live: set[tuple[str, int]] = set()
        for e in self.recorder.seen:
            if e.state is State.AB_TEST:
                live.add((e.model_id, e.version))
                self._ab(e, now)
                continue
            if e.state is not State.CANARY:
                continue
            key = (e.model_id, e.version)
            live.add(key)
            t = self.tracks.setdefault(key, _Track())
            t.evidence = e
            t.plan = canary_plan(e, self.engine)
            t.new_rule = self.engine.decide(e)
            t.old_rule = old_rule_decision(e)
            v = t.old_rule.verdict.value
            t.old_verdicts[v] = t.old_verdicts.get(v, 0) + 1
            if now - t.last_print >= self.print_every_s or t.last_percent != e.percent:
                t.last_print, t.last_percent = now, e.percent
                self.tl(f"plan      {e.model_id} v{e.version} {t.plan.line()}")
                self.tl(
                    f"          sequential test: {t.new_rule.verdict.value} - {t.new_rule.reason}"[
                        :260
                    ]
                )
                self.tl(
                    f"          old rule (GuardrailRule, drop {OLD_RULE_DROP:g}) on the same "
                    f"windows: {t.old_rule.verdict.value} - {t.old_rule.reason}"[:260]
                )
        for key, t in self.tracks.items():
            if key not in live and not t.reported and t.evidence is not None:
                t.reported = True
                self._ended(key, t)

    def _ab(self, e: Evidence, now: float) -> None:
        """An A/B test: its plan (plan_ab on the model's contract), the sequential test's
        decision, and each look's lift with its always-valid interval (the plot's points)."""
        from modelops.evaluation.ab import plan_ab

        key = (e.model_id, e.version)
        t = self.tracks.setdefault(key, _Track())
        t.evidence = e
        d = self.engine.decide(e)
        t.new_rule = d
        c = e.policy.ab
        split = (e.percent or 50) / 100.0
        plan = plan_ab(c.baseline_rate, c.relative_mde, c.alpha, c.power, c.daily_users, split)
        det = d.details
        users = (det.get("users_candidate", 0), det.get("users_prod", 0))
        if det.get("lift") is not None:
            t.looks.append((users[0], det["lift"], det.get("lift_low"), det.get("lift_high")))
        t.ab_line = (
            f"A/B {e.percent}%: {c.relative_mde:.0%} lift at power {c.power:.0%} (alpha "
            f"{c.alpha:g} two-sided) needs {plan.treatment_users} users per arm at a fixed "
            f"horizon, ~{plan.sequential_users_at_mde // 2} per arm expected sequentially at "
            f"the MDE (at most {plan.sequential_users_max // 2}); have {users[0]} / {users[1]}"
        )
        if now - t.last_print >= self.print_every_s:
            t.last_print = now
            self.tl(f"plan      {e.model_id} v{e.version} {t.ab_line}")
            self.tl(f"          sequential test: {d.verdict.value} - {d.reason}"[:260])

    def lift_plot(self, key: tuple[str, int], width: int = 50) -> list[str]:
        """The A/B's lift per look with its always-valid interval, as text: the interval
        narrows as users come in, and promotion needs it clear of zero."""
        t = self.tracks.get(key)
        if t is None or not t.looks:
            return []
        looks = [lk for lk in t.looks if lk[2] is not None and lk[3] is not None]
        if not looks:
            return []
        lo = max(-1.0, min(lk[2] for lk in looks))
        hi = min(1.0, max(lk[3] for lk in looks))
        lo, hi = min(lo, -0.05), max(hi, 0.05)

        def col(v: float) -> int:
            return int(round((min(max(v, lo), hi) - lo) / (hi - lo) * (width - 1)))

        legend = "lift per look (| = 0; [ ] = always-valid interval; * = estimate)"
        out = [f"{legend}, {lo:+.0%}..{hi:+.0%}"]
        step = max(1, len(looks) // 12)
        shown = looks[::step]
        if shown[-1] is not looks[-1]:
            shown.append(looks[-1])  # the last look, the one the decision was taken on
        for users, lift, a, b in shown:
            row = [" "] * width
            row[col(0.0)] = "|"
            row[col(a)] = "["
            row[col(b)] = "]"
            row[col(lift)] = "*"
            out.append(f"  {users:>6} users  {''.join(row)}  {lift:+.1%} [{a:+.1%}, {b:+.1%}]")
        return out

    def _ended(self, key: tuple[str, int], t: _Track) -> None:
        """A canary left CANARY: say what the old rule made of its last windows."""
        m, v = key
        try:
            state = self.registry.state_of(m, v, t.evidence.slice).value  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001
            state = "?"
        e = t.evidence
        assert e is not None
        if e.state is State.AB_TEST:
            self.tl(f"outcome   {m} v{v} is {state} after its A/B test")
            for line in self.lift_plot(key):
                self.tl(f"          {line}")
            return
        top = old_rule_decision(e, at_top=True)
        seen = ", ".join(f"{k} x{n}" for k, n in sorted(t.old_verdicts.items()))
        self.tl(
            f"compare   {m} v{v} is {state}; the old rule on the same windows said {seen}; "
            f"at the top of the ladder it would {top.verdict.value}: {top.reason}"[:320]
        )

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for (m, v), t in self.tracks.items():
            e = t.evidence
            is_ab = e is not None and e.state is State.AB_TEST
            top = old_rule_decision(e, at_top=True) if e is not None and not is_ab else None
            out[f"{m} v{v}"] = {
                "plan": t.ab_line or (t.plan.line() if t.plan else None),
                "lift_plot": self.lift_plot((m, v)),
                "users_expected": t.plan.users_expected if t.plan else None,
                "users_have": t.plan.have_candidate if t.plan else None,
                "sequential_last": t.new_rule.verdict.value if t.new_rule else None,
                "old_rule_verdicts": dict(t.old_verdicts),
                "old_rule_at_top": top.verdict.value if top else None,
                "old_rule_at_top_reason": top.reason if top else None,
            }
        return out
