"""The lifecycle state machine and tier rules, as pure functions: no database."""

from __future__ import annotations

import re
from typing import Any

import pytest

from modelops.errors import IllegalTransition, SpecError
from modelops.lifecycle import (
    BASE_EDGES,
    CANARY_RANGE,
    FORWARD,
    ROLLBACK_SOURCES,
    SliceContext,
    TransitionCheck,
    approvals_needed,
    check_transition,
    legal_next,
)
from modelops.spec import State, Tier

S = State
FORWARD_STATES = [S.APPROVED_SHADOW, S.SHADOW, S.APPROVED_CANARY, S.CANARY, S.AB_TEST, S.PROMOTED]
ALL_TIERS = list(Tier)


def ctx(tier: Tier, *, prod: bool = True, refresh: bool = False, **occupied: int) -> SliceContext:
    occ = {S(k): v for k, v in occupied.items()}
    if prod:
        occ.setdefault(S.PROMOTED, 1)
    return SliceContext(
        tier=tier, has_prod=prod, ever_had_prod=prod, is_weight_refresh=refresh, occupied=occ
    )


def check(current: State, target: State, c: SliceContext, **kw: Any) -> TransitionCheck:
    return check_transition("m@2", "global", current, target, c, **kw)


# ---------------------------------------------------------------------------- the graph


def test_every_state_has_edges_and_every_edge_target_is_a_state() -> None:
    assert set(BASE_EDGES) == set(State)
    for src, targets in BASE_EDGES.items():
        assert targets <= set(State), src


def test_rollback_sources_are_exactly_the_forward_states_and_each_has_the_edge() -> None:
    assert ROLLBACK_SOURCES == frozenset(FORWARD_STATES)
    for st in ROLLBACK_SOURCES:
        assert S.ROLLED_BACK in BASE_EDGES[st], st
        for tier in ALL_TIERS:
            assert S.ROLLED_BACK in legal_next(st, ctx(tier)), (st, tier)
    # ...and nothing outside them can be "rolled back".
    for st in set(State) - ROLLBACK_SOURCES:
        assert S.ROLLED_BACK not in BASE_EDGES[st], st


def test_terminal_and_retirement_states() -> None:
    for tier in ALL_TIERS:
        assert legal_next(S.ARCHIVED, ctx(tier)) == []
        assert legal_next(S.FAILED, ctx(tier)) == [S.ARCHIVED]
        assert legal_next(S.DEPRECATED, ctx(tier)) == [S.ARCHIVED]
        assert legal_next(S.ROLLED_BACK, ctx(tier)) == [S.ARCHIVED]
        assert legal_next(S.REGISTERED, ctx(tier)) == [S.OFFLINE_PASSED, S.FAILED, S.ARCHIVED]


def test_forward_ladder_follows_base_edges() -> None:
    for src, dst in FORWARD.items():
        assert dst in BASE_EDGES[src], (src, dst)


def test_legal_next_is_in_ladder_order() -> None:
    order = list(State)
    for tier in ALL_TIERS:
        for st in State:
            nxt = legal_next(st, ctx(tier))
            assert nxt == sorted(nxt, key=order.index)
            assert len(set(nxt)) == len(nxt)


# ---------------------------------------------------------------------------- tier skips

PROMOTE_SOURCES = [S.OFFLINE_PASSED, S.SHADOW, S.CANARY, S.AB_TEST]


@pytest.mark.parametrize(
    ("tier", "refresh", "allowed"),
    [
        (Tier.L0, False, {S.OFFLINE_PASSED, S.SHADOW, S.CANARY, S.AB_TEST}),
        (Tier.L1, False, {S.CANARY, S.AB_TEST}),
        (Tier.L2, False, {S.AB_TEST}),
        (Tier.L2, True, {S.CANARY, S.AB_TEST}),
        (Tier.L3, False, {S.AB_TEST}),
        (Tier.L3, True, {S.AB_TEST}),
    ],
)
def test_which_states_may_promote_with_a_prod_version(
    tier: Tier, refresh: bool, allowed: set[State]
) -> None:
    c = ctx(tier, refresh=refresh)
    for st in State:
        assert (S.PROMOTED in legal_next(st, c)) == (st in allowed), (tier, refresh, st)


@pytest.mark.parametrize("tier", ALL_TIERS)
def test_bootstrap_first_version_promotes_from_offline_passed_at_any_tier(tier: Tier) -> None:
    c = ctx(tier, prod=False)
    assert S.PROMOTED in legal_next(S.OFFLINE_PASSED, c)
    d = check(S.OFFLINE_PASSED, S.PROMOTED, c)
    assert d.skip == "first version on the slice"
    # The bootstrap still carries the tier's approvals.
    assert d.approvals == {Tier.L0: 0, Tier.L1: 0, Tier.L2: 1, Tier.L3: 2}[tier]


@pytest.mark.parametrize("tier", ALL_TIERS)
@pytest.mark.parametrize("target", [S.SHADOW, S.CANARY, S.AB_TEST])
def test_traffic_states_need_a_prod_version(tier: Tier, target: State) -> None:
    source = {S.SHADOW: S.APPROVED_SHADOW, S.CANARY: S.APPROVED_CANARY, S.AB_TEST: S.CANARY}
    c = ctx(tier, prod=False, CANARY=2) if target is S.AB_TEST else ctx(tier, prod=False)
    kw = {"current_percent": 1} if target is S.AB_TEST else {}
    with pytest.raises(IllegalTransition, match="no PROMOTED version to compare against"):
        check(source[target], target, c, **kw)
    check(source[target], target, ctx(tier, CANARY=2) if target is S.AB_TEST else ctx(tier), **kw)


def test_skip_reasons_name_the_tier_rule() -> None:
    assert check(S.SHADOW, S.PROMOTED, ctx(Tier.L0)).skip == "L0 skips to PROMOTED"
    assert check(S.OFFLINE_PASSED, S.PROMOTED, ctx(Tier.L0)).skip == "L0 skips to PROMOTED"
    assert check(S.CANARY, S.PROMOTED, ctx(Tier.L1)).skip == "L1 skips AB_TEST"
    d = check(S.CANARY, S.PROMOTED, ctx(Tier.L2, refresh=True))
    assert d.skip == "L2 weight refresh on an unchanged contract skips AB_TEST"
    assert check(S.AB_TEST, S.PROMOTED, ctx(Tier.L3)).skip is None


# ---------------------------------------------------------------------------- refusals


def _legal_in_message(message: str) -> list[str]:
    m = re.search(r"legal next states: (.*)$", message)
    assert m, message
    return [s.strip() for s in m.group(1).split(",")]


@pytest.mark.parametrize("tier", ALL_TIERS)
def test_illegal_transition_lists_exactly_the_legal_next_states(tier: Tier) -> None:
    c = ctx(tier)
    for current in State:
        legal = legal_next(current, c)
        for target in set(State) - set(legal):
            with pytest.raises(IllegalTransition) as info:
                check(current, target, c)
            msg = str(info.value)
            assert f"{current.value} -> {target.value} is not allowed at tier {tier.value}" in msg
            if legal:
                assert _legal_in_message(msg) == [s.value for s in legal]
            else:
                assert msg.endswith("legal next states: none (terminal state)")


def test_l2_contract_change_hint() -> None:
    with pytest.raises(IllegalTransition, match="only for a weight refresh") as info:
        check(S.CANARY, S.PROMOTED, ctx(Tier.L2, refresh=False))
    assert _legal_in_message(str(info.value)) == ["CANARY", "AB_TEST", "ROLLED_BACK"]


def test_singletons_and_canary_ab_exclusion() -> None:
    c = ctx(Tier.L1, SHADOW=7)
    with pytest.raises(IllegalTransition, match="version 7 is already in SHADOW"):
        check(S.APPROVED_SHADOW, S.SHADOW, c)
    with pytest.raises(IllegalTransition, match="version 7 is already in CANARY"):
        check(S.APPROVED_CANARY, S.CANARY, ctx(Tier.L1, CANARY=7), percent=1)
    with pytest.raises(IllegalTransition, match="version 7 is in AB_TEST"):
        check(S.APPROVED_CANARY, S.CANARY, ctx(Tier.L1, AB_TEST=7), percent=1)
    with pytest.raises(IllegalTransition, match="version 7 is already in AB_TEST"):
        check(S.CANARY, S.AB_TEST, ctx(Tier.L1, AB_TEST=7, CANARY=2), current_percent=1)
    # The version holding CANARY may itself step and move on to AB_TEST.
    check(S.CANARY, S.CANARY, ctx(Tier.L1, CANARY=2), percent=5, current_percent=1)
    check(S.CANARY, S.AB_TEST, ctx(Tier.L1, CANARY=2), current_percent=5)


# ---------------------------------------------------------------------------- percents


@pytest.mark.parametrize("bad", [0, -1, 11, 50, 100])
def test_canary_percent_out_of_range_names_the_range(bad: int) -> None:
    lo, hi = CANARY_RANGE
    assert (lo, hi) == (1, 10)
    with pytest.raises(SpecError, match=rf"CANARY percent {bad} is out of range; allowed 1\.\.10"):
        check(S.APPROVED_CANARY, S.CANARY, ctx(Tier.L1), percent=bad)


@pytest.mark.parametrize("good", [1, 5, 10])
def test_canary_percent_in_range(good: int) -> None:
    assert check(S.APPROVED_CANARY, S.CANARY, ctx(Tier.L1), percent=good).target is S.CANARY


def test_canary_step_must_change_the_percent() -> None:
    c = ctx(Tier.L1, CANARY=2)
    with pytest.raises(IllegalTransition, match=r"must change the percent \(now 5\)"):
        check(S.CANARY, S.CANARY, c, percent=5, current_percent=5)
    with pytest.raises(IllegalTransition, match="must change the percent"):
        check(S.CANARY, S.CANARY, c, percent=None, current_percent=5)


def test_percent_ranges_for_shadow_and_ab_and_none_elsewhere() -> None:
    with pytest.raises(SpecError, match=r"SHADOW percent 0 is out of range; allowed 1\.\.100"):
        check(S.APPROVED_SHADOW, S.SHADOW, ctx(Tier.L1), percent=0)
    with pytest.raises(SpecError, match=r"AB_TEST percent 100 is out of range; allowed 1\.\.99"):
        check(S.CANARY, S.AB_TEST, ctx(Tier.L1, CANARY=2), percent=100)
    with pytest.raises(SpecError, match="applies only to CANARY, SHADOW and AB_TEST"):
        check(S.AB_TEST, S.PROMOTED, ctx(Tier.L1), percent=5)


# ---------------------------------------------------------------------------- approvals


@pytest.mark.parametrize("refresh", [True, False])
@pytest.mark.parametrize("tier", ALL_TIERS)
def test_approvals_needed_per_tier(tier: Tier, refresh: bool) -> None:
    c = ctx(tier, refresh=refresh)
    for current in State:
        for target in legal_next(current, c):
            n, cross = approvals_needed(current, target, c)
            gate = current is S.REGISTERED and target in (S.OFFLINE_PASSED, S.FAILED)
            gate |= current is S.SHADOW and target is S.FAILED  # the divergence verdict
            if target is S.ROLLED_BACK or gate:
                expected = (0, False)
            elif tier is Tier.L3:
                expected = (2, True)
            elif tier is Tier.L2 and target in (S.APPROVED_CANARY, S.PROMOTED):
                # the human gate is for contract changes; a weight refresh is automated
                expected = (0, False) if refresh else (1, False)
            else:
                expected = (0, False)
            assert (n, cross) == expected, (tier, current, target, refresh)


def test_l3_refuses_automation_except_rollback() -> None:
    c = ctx(Tier.L3, CANARY=2)
    with pytest.raises(IllegalTransition, match="tier L3 allows no automatic transition"):
        check(S.CANARY, S.AB_TEST, c, automated=True, current_percent=1)
    d = check(S.CANARY, S.ROLLED_BACK, c, automated=True)
    assert d.automated_allowed and d.approvals == 0
    for tier in (Tier.L0, Tier.L1, Tier.L2):
        assert check(S.CANARY, S.AB_TEST, ctx(tier, CANARY=2), automated=True).automated_allowed
