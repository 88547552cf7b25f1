"""SequentialRule, the default DecisionEngine, on constructed windows: the latency sample
requirement, the canary and A/B verdicts it maps, and what it escalates."""

from __future__ import annotations

import numpy as np
import pytest

from modelops.evaluation.decision import DecisionEngine, Evidence, Verdict
from modelops.evaluation.sequential_rule import LATENCY_MIN_REQUESTS, SequentialRule
from modelops.evidence import UserSums, WindowStats
from modelops.fleet import OnlinePolicy
from modelops.spec import DecisionPolicy, Guardrail, State, Tier


def sums(x: np.ndarray, y: np.ndarray) -> UserSums:
    return UserSums(
        users=int(x.size),
        sum_x=float(x.sum()),
        sum_y=float(y.sum()),
        sum_xx=float(x @ x),
        sum_yy=float(y @ y),
        sum_xy=float(x @ y),
    )


def clicks(users: int, rate: float, seed: int, per_user: int = 4) -> UserSums:
    """Per-user clicks with a Beta propensity per user (correlated requests)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(10 * rate, 10 * (1 - rate), users)
    y = np.full(users, float(per_user))
    return sums(rng.binomial(per_user, p).astype(float), y)


def window(
    arm: str,
    version: int,
    *,
    requests: int = 1000,
    p99: float = 20.0,
    error_rate: float = 0.0,
    click: UserSums | None = None,
    users: int | None = None,
) -> WindowStats:
    errors = round(requests * error_rate)
    return WindowStats(
        model_id="m",
        version=version,
        arm=arm,
        slice="global",
        since_ts=0.0,
        until_ts=None,
        first_ts=1.0,
        last_ts=2.0,
        requests=requests,
        errors=errors,
        error_rate=errors / requests,
        timeouts=0,
        timeout_rate=0.0,
        latency_mean_ms=p99 / 3,
        latency_p50_ms=p99 / 4,
        latency_p99_ms=p99,
        latency_max_ms=p99 * 2,
        users=users if users is not None else (click.users if click is not None else 0),
        user_outcomes={"click": click} if click is not None else {},
    )


def evidence(
    state: State,
    cand: WindowStats,
    base: WindowStats,
    *,
    percent: int | None = None,
    guardrails: list[Guardrail] | None = None,
    tier: Tier = Tier.L1,
    step_users: tuple[int, int] | None = None,
    ab_mde: float = 0.01,
) -> Evidence:
    return Evidence(
        model_id="m",
        slice="global",
        version=2,
        state=state,
        percent=percent,
        since_ts=0.0,
        now_ts=7200.0,  # every dwell is over, a shadow's maximum is not
        candidate=cand,
        baseline=base,
        policy=DecisionPolicy(
            primary_metric="click",
            min_samples=100,
            guardrails=guardrails or [],
            ab={"relative_mde": ab_mde},
        ),
        online=OnlinePolicy(),
        tier=tier,
        step_users=step_users,
    )


def test_it_is_a_decision_engine() -> None:
    assert isinstance(SequentialRule(), DecisionEngine)


def test_a_cold_start_p99_over_a_thin_sample_does_not_roll_a_shadow_back() -> None:
    """The demo's case: a freshly loaded shadow's p99 over 40 requests is its slowest one."""
    rule = SequentialRule()
    demo = OnlinePolicy(min_requests=20, max_latency_p99_ms=250.0)  # the demo fleet's

    def shadow(cand: WindowStats, base: WindowStats, **kw: object) -> Evidence:
        e = evidence(State.SHADOW, cand, base, **kw)  # type: ignore[arg-type]
        return e.model_copy(update={"online": demo})

    prod = window("prod", 1, requests=20_000, p99=20.0)
    cold = window("shadow", 2, requests=40, p99=900.0)
    d = rule.decide(shadow(cold, prod))
    assert d.verdict is Verdict.HOLD
    assert f"at least {LATENCY_MIN_REQUESTS} requests, 40 so far" in d.reason
    # The same p99 once the sample carries it: the threshold itself never moved.
    slow = window("shadow", 2, requests=LATENCY_MIN_REQUESTS, p99=900.0)
    d = rule.decide(shadow(slow, prod))
    assert d.verdict is Verdict.ROLLBACK and "p99 latency 900ms" in d.reason
    # A declared p99 guardrail waits for the same sample.
    g = [Guardrail(metric="latency_p99_ms", threshold=100.0)]
    ok_p99 = window("shadow", 2, requests=40, p99=150.0)
    assert rule.decide(shadow(ok_p99, prod, guardrails=g)).verdict is Verdict.HOLD
    big = window("shadow", 2, requests=600, p99=150.0)
    d = rule.decide(shadow(big, prod, guardrails=g))
    assert d.verdict is Verdict.ROLLBACK and "guardrail latency_p99_ms" in d.reason


def test_errors_still_roll_back_on_the_online_minimum() -> None:
    prod = window("prod", 1, requests=20_000)
    bad = window("canary", 2, requests=60, error_rate=0.2)
    d = SequentialRule().decide(evidence(State.CANARY, bad, prod, percent=1))
    assert d.verdict is Verdict.ROLLBACK and "error rate" in d.reason


def test_a_collapsed_canary_is_rolled_back_though_it_has_few_clicks() -> None:
    """The candidate's clicks are few because it is bad: the outcomes it would have had at
    prod's rate make the test eligible, and the harm is confirmed."""
    prod = window("prod", 1, click=clicks(9_000, 0.2, seed=1), requests=36_000)
    bad = window("canary", 2, click=clicks(600, 0.015, seed=2), requests=2400)
    assert bad.user_outcomes["click"].sum_x < 50
    d = SequentialRule().decide(evidence(State.CANARY, bad, prod, percent=1))
    assert d.verdict is Verdict.ROLLBACK and "harm confirmed" in d.reason
    assert d.details["state"] == "REJECT" and d.details["lift_high"] < 0


def test_thin_canary_traffic_holds_and_says_so() -> None:
    prod = window("prod", 1, click=clicks(9_000, 0.2, seed=1), requests=36_000)
    thin = window("canary", 2, click=clicks(30, 0.2, seed=2), requests=120)
    d = SequentialRule().decide(evidence(State.CANARY, thin, prod, percent=10))
    assert d.verdict is Verdict.HOLD and "inconclusive: not enough traffic" in d.reason
    assert d.details["state"] == "TOO_FEW"


def test_ab_no_detectable_effect_goes_to_a_human_and_is_never_promoted() -> None:
    prod = window("prod", 1, click=clicks(400_000, 0.05, seed=1, per_user=1), requests=400_000)
    same = window("ab", 2, click=clicks(400_000, 0.05, seed=2, per_user=1), requests=400_000)
    for tier in (Tier.L1, Tier.L2, Tier.L3):
        e = evidence(State.AB_TEST, same, prod, percent=50, tier=tier, ab_mde=0.05)
        d = SequentialRule().decide(e)
        assert d.verdict is Verdict.HOLD and d.next_action is None
        assert d.alert == "ab_no_effect" and "no detectable effect" in d.reason
        assert d.conclusion is not None and d.conclusion["outcome"] == "NO_DETECTABLE_EFFECT"
        if tier is not Tier.L1:
            assert f"a human decides (tier {tier.value})" in d.reason


def test_ab_guardrail_trip_holds_and_alerts_instead_of_rolling_back() -> None:
    prod = window("prod", 1, click=clicks(5_000, 0.2, seed=1), requests=20_000)
    worse = window("ab", 2, click=clicks(5_000, 0.3, seed=2), requests=20_000, error_rate=0.1)
    d = SequentialRule().decide(evidence(State.AB_TEST, worse, prod, percent=50))
    assert (d.verdict, d.alert, d.next_action) == (Verdict.HOLD, "ab_guardrail", None)
    assert "error rate" in d.reason


def test_ab_srm_holds_even_on_a_large_lift() -> None:
    prod = window("prod", 1, click=clicks(10_000, 0.2, seed=1), requests=40_000)
    lift = window("ab", 2, click=clicks(7_000, 0.3, seed=2), requests=28_000)
    d = SequentialRule().decide(evidence(State.AB_TEST, lift, prod, percent=50))
    assert (d.verdict, d.alert) == (Verdict.HOLD, "srm")
    assert "no decision is made on this data" in d.reason
    # The same data at the split it was configured with promotes.
    ok = window("ab", 2, click=clicks(10_000, 0.3, seed=2), requests=40_000)
    d = SequentialRule().decide(evidence(State.AB_TEST, ok, prod, percent=50))
    assert d.verdict is Verdict.PROMOTE and d.conclusion is not None
    assert d.conclusion["concluded_with_power"] is True


def test_a_significant_lift_at_l3_waits_for_a_human() -> None:
    prod = window("prod", 1, click=clicks(10_000, 0.2, seed=1), requests=40_000)
    lift = window("ab", 2, click=clicks(10_000, 0.3, seed=2), requests=40_000)
    d = SequentialRule().decide(evidence(State.AB_TEST, lift, prod, percent=50, tier=Tier.L3))
    assert d.verdict is Verdict.HOLD and "waiting for a human to promote" in d.reason
    assert d.conclusion is not None and d.conclusion["outcome"] == "PROMOTE"


@pytest.mark.parametrize("drop,margin", [(None, 0.10), (0.3, 0.3)])
def test_the_harm_margin_is_the_declared_primary_drop_else_the_benchmarked_default(
    drop: float | None, margin: float
) -> None:
    prod = window("prod", 1, click=clicks(9_000, 0.2, seed=1), requests=36_000)
    cand = window("canary", 2, click=clicks(100, 0.2, seed=2), requests=400)
    e = evidence(State.CANARY, cand, prod, percent=1)
    if drop is not None:
        e = e.model_copy(update={"online": OnlinePolicy(max_primary_drop=drop)})
    assert SequentialRule().canary_policy(e).harm_margin == margin
    assert SequentialRule().canary_policy(e).min_users == 100  # policy.min_samples


def test_a_canary_passes_the_top_only_once_its_p99_could_have_breached() -> None:
    prod = window("prod", 1, click=clicks(9_000, 0.2, seed=1), requests=36_000)
    cand = window("canary", 2, click=clicks(100, 0.2, seed=2), requests=400)
    e = evidence(State.CANARY, cand, prod, percent=10).model_copy(
        update={"online": OnlinePolicy(max_primary_drop=0.3)}
    )
    d = SequentialRule().decide(e)
    assert d.details["state"] == "ACCEPT"  # the harm test alone would pass it
    assert d.verdict is Verdict.HOLD and "at least 500 requests, 400 so far" in d.reason
    more = cand.model_copy(update={"requests": 500})
    d = SequentialRule().decide(e.model_copy(update={"candidate": more}))
    assert d.verdict is Verdict.PROMOTE and "canary passed at 10%" in d.reason


def test_an_ab_past_its_planned_days_without_a_result_ends_as_no_detectable_effect() -> None:
    prod = window("prod", 1, click=clicks(3_000, 0.2, seed=1), requests=12_000)
    same = window("ab", 2, click=clicks(3_000, 0.2, seed=2), requests=12_000)
    e = evidence(State.AB_TEST, same, prod, percent=50)
    running = SequentialRule().decide(e)
    assert running.verdict is Verdict.HOLD and running.alert is None  # still gathering
    late = e.model_copy(update={"ab_plan": {"percent": 50, "sequential_days_max": 0.05}})
    d = SequentialRule().decide(late)  # 7200 s is past 0.05 days
    assert (d.verdict, d.alert) == (Verdict.HOLD, "ab_no_effect")
    assert "by the planned horizon (0.05 days)" in d.reason
    assert d.conclusion is not None and d.conclusion["outcome"] == "NO_DETECTABLE_EFFECT"
    assert d.conclusion["concluded_with_power"] is False
