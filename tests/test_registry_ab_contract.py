"""The A/B contract the registry enforces: the plan on entry, the L2/L3 minimum duration,
the sequential conclusion that lifts it, and orthogonal layer capacity; on SQLite and
PostgreSQL, each refusal leaving no row behind and each mutation one audit entry."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError
from test_registry_kit import (
    add_people,
    approve_l3,
    bootstrap_prod,
    datasets,
    new_model,
    refused,
    teams,
    version,
)
from test_registry_kit import spec as kit_spec

from modelops.errors import ABTooEarly, ConflictError, IllegalTransition, LayerFull, SpecError
from modelops.evaluation.ab import plan_ab
from modelops.registry import Registry
from modelops.spec import ABContract, DecisionPolicy, ModelSpec, State, Tier

S = State
M = "ranker"
TO_CANARY = [
    (S.APPROVED_SHADOW, None),
    (S.SHADOW, None),
    (S.APPROVED_CANARY, None),
    (S.CANARY, 1),
]


def ab_spec(model_id: str = M, tier: Tier = Tier.L1, **ab: Any) -> ModelSpec:
    base = kit_spec(model_id, tier=tier)
    policy = DecisionPolicy(primary_metric="click", ab=ABContract(**ab))
    return base.model_copy(update={"policy": policy})


def candidate_at_canary(reg: Registry, model_id: str = M, **ab: Any) -> int:
    """An L1 model with a prod version and a second version at CANARY 1%."""
    teams(reg)
    datasets(reg)
    reg.create_model(ab_spec(model_id, **ab))
    bootstrap_prod(reg, model_id)
    v = version(reg, model_id).version
    for target, pct in TO_CANARY:
        reg.transition(model_id, v, target, actor="ops", percent=pct)
    return v


def audit_count(reg: Registry) -> int:
    return reg.row_counts()["audit_log"]


def test_entering_ab_test_records_the_plan(registry: Registry) -> None:
    v = candidate_at_canary(registry)
    before = audit_count(registry)
    registry.transition(M, v, S.AB_TEST, actor="ops", percent=50, layer="home")
    assert audit_count(registry) == before + 1
    entry = registry.audit_entries(M)[-1]
    plan = entry.payload["ab"]
    expected = plan_ab(0.05, 0.01, 0.05, 0.8, daily_users=1_000_000, split=0.5)
    assert plan["layer"] == "home" and plan["share"] == 100 and plan["split"] == 0.5
    assert (plan["n_candidate"], plan["n_prod"]) == (
        expected.treatment_users,
        expected.control_users,
    )
    assert 2.9e6 < plan["n_candidate"] < 3.2e6
    assert plan["days_needed"] == pytest.approx(expected.days, abs=0.01)
    assert plan["planned_days"] == math.ceil(expected.days)  # L1: no weekly minimum
    assert plan["min_days"] is None
    exp = registry.ab_experiment(M, v)
    assert exp is not None and exp.live and exp.plan == plan and exp.layer == "home"
    # L1 promotes from AB_TEST without a minimum; the experiment stops holding its layer.
    registry.transition(M, v, S.PROMOTED, actor="ops")
    assert "ab" not in registry.audit_entries(M)[-1].payload
    exp = registry.ab_experiment(M, v)
    assert exp is not None and not exp.live
    assert registry.layer_usage("home").used == 0


def test_the_plan_follows_the_declared_policy(registry: Registry) -> None:
    v = candidate_at_canary(
        registry, baseline_rate=0.2, relative_mde=0.05, daily_users=20_000, layer_share=50
    )
    registry.transition(M, v, S.AB_TEST, actor="ops", percent=10)
    plan = registry.ab_experiment(M, v).plan  # type: ignore[union-attr]
    expected = plan_ab(0.2, 0.05, 0.05, 0.8, daily_users=10_000, split=0.2)
    assert plan["split"] == 0.2 and plan["daily_users"] == 10_000
    assert plan["n_candidate"] == expected.treatment_users
    assert plan["n_prod"] == expected.control_users
    assert plan["layer"] == f"{M}.global"


def test_a_candidate_share_outside_the_experiment_is_refused(registry: Registry) -> None:
    v = candidate_at_canary(registry, layer_share=40)
    refused(
        registry,
        SpecError,
        lambda: registry.transition(M, v, S.AB_TEST, actor="ops", percent=50),
        match=r"allowed: --percent 1\.\.39",
    )
    assert registry.state_of(M, v) is S.CANARY
    refused(
        registry,
        SpecError,
        lambda: registry.transition(M, v, S.AB_TEST, actor="ops", percent=20, layer="x" * 201),
        match=r"201 characters; allowed: 1\.\.200",
    )


def l3_at_ab_test(reg: Registry) -> int:
    add_people(reg)
    new_model(reg, tier=Tier.L3)
    v1 = version(reg).version
    approve_l3(reg, M, v1, S.PROMOTED)
    reg.transition(M, v1, S.PROMOTED, actor="ops", reason="first version")
    v = version(reg).version
    for target, pct in [*TO_CANARY, (S.AB_TEST, None)]:
        approve_l3(reg, M, v, target)
        reg.transition(M, v, target, actor="ops", percent=pct, reason="walk")
    approve_l3(reg, M, v, S.PROMOTED)
    return v


def test_l3_promotion_waits_out_the_minimum_duration(registry: Registry, clock: Any) -> None:
    v = l3_at_ab_test(registry)
    plan = registry.ab_experiment(M, v).plan  # type: ignore[union-attr]
    assert plan["min_days"] == 14 and plan["planned_days"] == 14  # 6 days, in whole weeks
    promote = lambda: registry.transition(M, v, S.PROMOTED, actor="ops", reason="ab done")  # noqa: E731
    info = refused(registry, ABTooEarly, promote, match="for 0 of the 14 days tier L3")
    msg = str(info.value)
    assert "\n" not in msg and "no sequential conclusion is recorded" in msg
    assert "allowed: PROMOTED from 2026-01-15" in msg
    clock.advance(days=13, hours=23)
    refused(registry, ABTooEarly, promote, match="for 13.96 of the 14 days")
    clock.advance(hours=1)
    promote()
    assert registry.audit_entries(M)[-1].payload["ab"]["allowed_by"] == "duration"
    assert registry.state_of(M, v) is S.PROMOTED


def test_a_conclusion_with_power_lifts_the_minimum(registry: Registry) -> None:
    v = l3_at_ab_test(registry)
    promote = lambda: registry.transition(M, v, S.PROMOTED, actor="ops", reason="ab done")  # noqa: E731
    # A test that ran out its horizon concluded nothing with power: it does not count.
    registry.record_ab_conclusion(
        M, v, actor="sensor", outcome="NO_DETECTABLE_EFFECT", concluded_with_power=False
    )
    refused(registry, ABTooEarly, promote, match="conclusion is NO_DETECTABLE_EFFECT without")
    # A test concludes once: a different conclusion is refused, the same one is a no-op.
    refused(
        registry,
        ConflictError,
        lambda: registry.record_ab_conclusion(
            M, v, actor="sensor", outcome="PROMOTE", concluded_with_power=True
        ),
        match="already concluded NO_DETECTABLE_EFFECT",
    )
    n = audit_count(registry)
    registry.record_ab_conclusion(
        M, v, actor="sensor", outcome="NO_DETECTABLE_EFFECT", concluded_with_power=False
    )
    assert audit_count(registry) == n


def test_a_promote_conclusion_allows_promotion_before_the_minimum(registry: Registry) -> None:
    v = l3_at_ab_test(registry)
    refused(
        registry,
        SpecError,
        lambda: registry.record_ab_conclusion(
            M, v, actor="sensor", outcome="CONTINUE", concluded_with_power=False
        ),
        match="allowed: PROMOTE, NO_DETECTABLE_EFFECT",
    )
    refused(
        registry,
        SpecError,
        lambda: registry.record_ab_conclusion(
            M,
            v,
            actor="sensor",
            outcome="PROMOTE",
            concluded_with_power=True,
            evidence={"lift": float("nan")},
        ),
        match="lift is nan",
    )
    n = audit_count(registry)
    exp = registry.record_ab_conclusion(
        M,
        v,
        actor="sensor",
        outcome="PROMOTE",
        concluded_with_power=True,
        reason="significant lift",
        evidence={"lift": 0.012, "users_candidate": 3_100_000},
    )
    assert audit_count(registry) == n + 1
    assert registry.audit_entries(M)[-1].action == "ab_conclusion"
    assert exp.conclusion is not None and exp.conclusion["evidence"]["lift"] == 0.012
    registry.transition(M, v, S.PROMOTED, actor="ops", reason="concluded")
    assert registry.audit_entries(M)[-1].payload["ab"]["allowed_by"] == "conclusion"
    # Only a running test takes a conclusion.
    refused(
        registry,
        IllegalTransition,
        lambda: registry.record_ab_conclusion(
            M, v, actor="sensor", outcome="PROMOTE", concluded_with_power=True
        ),
        match="is PROMOTED on slice 'global', not AB_TEST",
    )


def test_a_layer_refuses_to_be_over_allocated(registry: Registry) -> None:
    cands = {m: candidate_at_canary(registry, m, layer_share=40) for m in ("a", "b", "c")}
    enter = lambda m: registry.transition(  # noqa: E731
        m, cands[m], S.AB_TEST, actor="ops", percent=20, layer="home"
    )
    enter("a")
    enter("b")
    info = refused(registry, LayerFull, lambda: enter("c"), match="80% of its 100% is held by")
    msg = str(info.value)
    assert "a@2 slice global (40%), b@2 slice global (40%)" in msg
    assert "allowed: a share of at most 20%" in msg and "\n" not in msg
    assert registry.state_of("c", cands["c"]) is S.CANARY
    # Another layer is free; when one test ends its share comes back.
    registry.transition("a", cands["a"], S.ROLLED_BACK, actor="ops")
    enter("c")
    usage = registry.layer_usage("home")
    assert (usage.capacity, usage.used) == (100, 80)
    assert [str(h) for h in usage.holders] == ["b@2 slice global (40%)", "c@2 slice global (40%)"]
    # A configured capacity: not below what is held, one audit entry when it changes.
    refused(
        registry,
        LayerFull,
        lambda: registry.set_layer_capacity("home", 60, actor="ops"),
        match="allowed: at least 80%",
    )
    n = audit_count(registry)
    registry.set_layer_capacity("home", 90, actor="ops")
    registry.set_layer_capacity("home", 90, actor="ops")
    assert audit_count(registry) == n + 1
    assert registry.layer_usage("home").capacity == 90


def test_a_configured_capacity_bounds_entries(registry: Registry) -> None:
    registry.set_layer_capacity("tight", 30, actor="ops")
    v = candidate_at_canary(registry, layer_share=40)
    refused(
        registry,
        LayerFull,
        lambda: registry.transition(M, v, S.AB_TEST, actor="ops", percent=20, layer="tight"),
        match="0% of its 30% is held by nothing; allowed: a share of at most 30%",
    )


def test_policy_validation() -> None:
    assert ABContract().min_days == 14
    for bad in (
        {"min_days": 10},
        {"min_days": 0},
        {"baseline_rate": 0.0},
        {"baseline_rate": 0.99, "relative_mde": 0.5},
        {"layer_share": 101},
        {"power": 0.4},
    ):
        with pytest.raises(ValidationError):
            ABContract(**bad)
