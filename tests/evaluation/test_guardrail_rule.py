"""GuardrailRule on constructed windows: every verdict, sample minimums, the Wilson bound."""

from __future__ import annotations

from typing import Any

import pytest

from modelops.actions import ActionKind
from modelops.evaluation.decision import (
    Decision,
    DecisionEngine,
    Evidence,
    Verdict,
    automated_path,
)
from modelops.evaluation.guardrail import GuardrailRule, wilson_interval
from modelops.evidence import OutcomeStats, WindowStats
from modelops.fleet import OnlinePolicy, PolicyDurations
from modelops.spec import DecisionPolicy, Guardrail, State, Tier

NOW = 1_800_000_000.0
DUR = PolicyDurations(shadow_s=600, shadow_min_s=60, canary_step_s=60, ab_min_s=300, watch_s=900)
ONLINE = OnlinePolicy(
    max_error_rate=0.05, max_latency_p99_ms=250, max_primary_drop=0.2, min_requests=50
)
POLICY = DecisionPolicy(primary_metric="click", min_samples=100)
ARMS = {State.SHADOW: "shadow", State.CANARY: "canary", State.AB_TEST: "ab"}


def win(
    *,
    version: int = 2,
    arm: str = "canary",
    requests: int = 400,
    errors: int = 0,
    p99: float = 20.0,
    clicks: tuple[int, float] | None = (400, 0.10),
) -> WindowStats:
    outcomes = {} if clicks is None else {"click": OutcomeStats(count=clicks[0], mean=clicks[1])}
    return WindowStats(
        model_id="ctr",
        version=version,
        arm=arm,
        slice="global",
        since_ts=NOW - 3600,
        until_ts=None,
        first_ts=NOW - 3500,
        last_ts=NOW - 1,
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        timeouts=0,
        timeout_rate=0.0,
        latency_mean_ms=p99 / 3,
        latency_p50_ms=p99 / 3,
        latency_p99_ms=p99,
        latency_max_ms=p99 * 1.1,
        outcomes=outcomes,
    )


def evidence(
    state: State = State.CANARY,
    *,
    percent: int | None = 1,
    elapsed: float = 3600.0,
    candidate: Any = "default",
    baseline: Any = "default",
    tier: Tier = Tier.L1,
    **kw: Any,
) -> Evidence:
    arm = ARMS.get(state, "prod")
    return Evidence(
        model_id="ctr",
        slice="global",
        version=2,
        state=state,
        percent=percent,
        since_ts=NOW - elapsed,
        now_ts=NOW,
        candidate=win(arm=arm) if candidate == "default" else candidate,
        baseline=win(version=1, arm="prod", requests=4000, clicks=(4000, 0.10))
        if baseline == "default"
        else baseline,
        policy=kw.pop("policy", POLICY),
        online=kw.pop("online", ONLINE),
        durations=DUR,
        canary_ladder=[1, 5, 10],
        tier=tier,
        **kw,
    )


def decide(ev: Evidence) -> Decision:
    return GuardrailRule().decide(ev)


def test_rule_is_the_decision_engine_interface() -> None:
    assert isinstance(GuardrailRule(), DecisionEngine)


@pytest.mark.parametrize(
    ("mean", "n", "lo", "hi"), [(0.5, 100, 0.4038, 0.5962), (0.0, 50, 0.0, 0.0714)]
)
def test_wilson_interval_matches_the_textbook(mean: float, n: int, lo: float, hi: float) -> None:
    got = wilson_interval(mean, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


# ---------------------------------------------------------------------------- advance


@pytest.mark.parametrize(("percent", "nxt"), [(1, 5), (5, 10), (3, 5)])
def test_healthy_canary_steps_up_the_ladder(percent: int, nxt: int) -> None:
    d = decide(evidence(percent=percent))
    assert (d.verdict, d.next_action, d.next_percent) == (
        Verdict.ADVANCE,
        ActionKind.canary_step,
        nxt,
    )
    assert f"step to {nxt}%" in d.reason


@pytest.mark.parametrize(
    ("tier", "refresh", "irreversible", "verdict", "action"),
    [
        (Tier.L0, False, False, Verdict.PROMOTE, ActionKind.promote),
        (Tier.L1, False, False, Verdict.PROMOTE, ActionKind.promote),
        (Tier.L2, True, False, Verdict.PROMOTE, ActionKind.promote),
        (Tier.L2, False, False, Verdict.ADVANCE, ActionKind.start_ab),
        (Tier.L2, True, True, Verdict.ADVANCE, ActionKind.start_ab),
        (Tier.L3, True, False, Verdict.HOLD, None),
    ],
)
def test_top_of_the_ladder_depends_on_tier(
    tier: Tier, refresh: bool, irreversible: bool, verdict: Verdict, action: ActionKind | None
) -> None:
    d = decide(
        evidence(percent=10, tier=tier, is_weight_refresh=refresh, irreversible=irreversible)
    )
    assert (d.verdict, d.next_action) == (verdict, action)
    if verdict is Verdict.HOLD:
        assert "waiting for a human" in d.reason


def test_healthy_shadow_starts_the_canary_at_the_first_step() -> None:
    d = decide(evidence(State.SHADOW, percent=100))
    assert (d.verdict, d.next_action, d.next_percent) == (
        Verdict.ADVANCE,
        ActionKind.canary_step,
        1,
    )


def test_shadow_of_an_l2_contract_change_waits_for_a_human() -> None:
    d = decide(evidence(State.SHADOW, percent=100, tier=Tier.L2, is_weight_refresh=False))
    assert d.verdict is Verdict.HOLD and "approval" in d.reason
    l3 = decide(evidence(State.CANARY, percent=1, tier=Tier.L3))
    assert l3.verdict is Verdict.HOLD and "tier L3" in l3.reason


def test_ab_test_promotes_only_after_its_minimum_duration() -> None:
    early = decide(evidence(State.AB_TEST, percent=50, elapsed=100, tier=Tier.L2))
    assert early.verdict is Verdict.HOLD and early.reason.startswith("dwell")
    done = decide(
        evidence(State.AB_TEST, percent=50, elapsed=400, tier=Tier.L2, is_weight_refresh=True)
    )
    assert (done.verdict, done.next_action) == (Verdict.PROMOTE, ActionKind.promote)
    gated = decide(evidence(State.AB_TEST, percent=50, elapsed=400, tier=Tier.L2))
    assert gated.verdict is Verdict.HOLD and "promotion" in gated.reason


# ---------------------------------------------------------------------------- hold


@pytest.mark.parametrize(("state", "elapsed"), [(State.SHADOW, 30), (State.CANARY, 59)])
def test_dwell_time_holds(state: State, elapsed: float) -> None:
    d = decide(evidence(state, elapsed=elapsed))
    assert d.verdict is Verdict.HOLD and d.next_action is None
    assert d.reason.startswith("dwell")


def test_too_few_requests_is_inconclusive_not_a_verdict() -> None:
    d = decide(evidence(candidate=win(requests=49, errors=10, clicks=(49, 0.0))))
    # 20% errors and no clicks, but 49 < min_requests and 49 < min_samples: no rollback
    assert d.verdict is Verdict.HOLD
    assert d.reason == "inconclusive: 49 of 50 requests on the CANARY arm"
    assert decide(evidence(candidate=None)).verdict is Verdict.HOLD


def test_too_few_primary_outcomes_holds_on_either_arm() -> None:
    d = decide(evidence(candidate=win(clicks=(99, 0.10))))
    assert d.verdict is Verdict.HOLD
    assert d.reason == "inconclusive: 99 of 100 click outcomes on the candidate"
    p = decide(evidence(baseline=win(version=1, arm="prod", clicks=(10, 0.1))))
    assert p.verdict is Verdict.HOLD and "on prod" in p.reason


def test_shadow_at_its_maximum_without_evidence_never_promotes() -> None:
    d = decide(evidence(State.SHADOW, percent=100, elapsed=700, candidate=win(requests=3)))
    assert d.verdict is Verdict.HOLD
    assert "no evidence" in d.reason and "no promotion" in d.reason


def test_promoted_within_watch_holds_unless_it_breaches() -> None:
    prev = win(version=1, arm="prod", requests=4000, clicks=(4000, 0.10))
    ok = decide(evidence(State.PROMOTED, percent=None, candidate=win(arm="prod"), baseline=prev))
    assert ok.verdict is Verdict.HOLD and "watch" in ok.reason
    bad = decide(
        evidence(
            State.PROMOTED,
            percent=None,
            candidate=win(arm="prod", clicks=(2000, 0.04)),
            baseline=prev,
        )
    )
    assert (bad.verdict, bad.next_action) == (Verdict.ROLLBACK, ActionKind.rollback)


# ---------------------------------------------------------------------------- roll back


def test_error_rate_breach_rolls_back_even_during_dwell() -> None:
    d = decide(evidence(elapsed=5, candidate=win(requests=100, errors=6)))
    assert (d.verdict, d.next_action) == (Verdict.ROLLBACK, ActionKind.rollback)
    assert "error rate 6.0%" in d.reason
    at_limit = decide(evidence(candidate=win(requests=100, errors=5)))
    assert at_limit.verdict is Verdict.ADVANCE


def test_latency_breach_rolls_back() -> None:
    d = decide(evidence(State.SHADOW, candidate=win(arm="shadow", p99=400.0)))
    assert d.verdict is Verdict.ROLLBACK and "p99 latency 400ms (prod 20ms)" in d.reason


def test_a_slow_host_is_not_a_slow_model() -> None:
    """Over the threshold, but prod is as slow over the same window: the host is loaded, and
    rolling the candidate back would punish it for its neighbours."""
    prod = win(version=1, arm="prod", requests=4000, p99=300.0, clicks=(4000, 0.10))
    both = decide(evidence(State.SHADOW, candidate=win(arm="shadow", p99=400.0), baseline=prod))
    assert both.verdict is not Verdict.ROLLBACK
    alone = decide(evidence(State.SHADOW, candidate=win(arm="shadow", p99=700.0), baseline=prod))
    assert alone.verdict is Verdict.ROLLBACK and "(prod 300ms)" in alone.reason


def test_primary_metric_rolls_back_only_when_confidently_below() -> None:
    # 4% clicks over 400 outcomes: Wilson upper bound ~0.066 < 0.10 * 0.8
    bad = decide(evidence(candidate=win(clicks=(400, 0.04))))
    assert bad.verdict is Verdict.ROLLBACK and "click" in bad.reason
    # 6% over 100: the point estimate is below 0.08 but the upper bound (~0.125) is not, so
    # it neither rolls back nor takes more traffic: it holds for the samples that settle it
    noisy = decide(evidence(candidate=win(clicks=(100, 0.06))))
    assert noisy.verdict is Verdict.HOLD and "not yet confidently" in noisy.reason
    # 9% over 100 is within the 20% tolerance of prod's 10%: the step goes ahead
    within = decide(evidence(candidate=win(clicks=(100, 0.09))))
    assert within.verdict is Verdict.ADVANCE
    # the same drop under min_samples is not judged at all
    few = decide(evidence(candidate=win(clicks=(60, 0.0))))
    assert few.verdict is Verdict.HOLD and few.reason.startswith("inconclusive")


def test_outcomes_on_the_shadow_arm_are_ignored() -> None:
    """A shadow's mirrored requests carry the user's request id, so their outcomes are the
    served prod version's outcomes: they must not roll the shadow back."""
    shadow = win(arm="shadow", clicks=(400, 0.0))
    d = decide(evidence(State.SHADOW, percent=100, candidate=shadow))
    assert (d.verdict, d.next_action) == (Verdict.ADVANCE, ActionKind.canary_step)


def test_lower_is_better_mirrors_the_bound() -> None:
    policy = DecisionPolicy(primary_metric="click", higher_is_better=False, min_samples=100)
    worse = decide(evidence(policy=policy, candidate=win(clicks=(400, 0.20))))
    assert worse.verdict is Verdict.ROLLBACK and "lower bound" in worse.reason
    better = decide(evidence(policy=policy, candidate=win(clicks=(400, 0.04))))
    assert better.verdict is Verdict.ADVANCE


def test_automated_path_follows_the_registry_tier_rules() -> None:
    assert automated_path(Tier.L1, is_weight_refresh=False, irreversible=True)
    assert automated_path(Tier.L2, is_weight_refresh=True, irreversible=False)
    assert not automated_path(Tier.L2, is_weight_refresh=True, irreversible=True)
    assert not automated_path(Tier.L3, is_weight_refresh=True, irreversible=False)


def test_declared_guardrails_roll_back() -> None:
    policy = DecisionPolicy(
        primary_metric="click",
        min_samples=100,
        guardrails=[
            Guardrail(metric="latency_p99_ms", threshold=100.0),
            Guardrail(metric="conversion", threshold=0.01, higher_is_worse=False),
        ],
    )
    slow = decide(evidence(policy=policy, candidate=win(p99=150.0)))
    assert slow.verdict is Verdict.ROLLBACK
    assert slow.reason == "guardrail latency_p99_ms 150 (n=400) is above 100"
    cand = win()
    cand.outcomes["conversion"] = OutcomeStats(count=300, mean=0.002)
    low = decide(evidence(policy=policy, candidate=cand))
    assert low.verdict is Verdict.ROLLBACK and "conversion" in low.reason
    # On the shadow arm an outcome guardrail is prod's outcome: ignored.
    shadow = win(arm="shadow")
    shadow.outcomes["conversion"] = OutcomeStats(count=300, mean=0.002)
    assert decide(evidence(State.SHADOW, policy=policy, candidate=shadow)).verdict is (
        Verdict.ADVANCE
    )
