"""The approval rule as a pure function: which recorded approvals count, and for what move.

The registry only gathers the rows (approvals at the epoch, the known teams); these tests
pin the rule itself without a database. The registry suites check the same rule end to end.
"""

from __future__ import annotations

import pytest

from modelops.errors import ApprovalRequired, IllegalTransition
from modelops.lifecycle import (
    RecordedApproval,
    SliceContext,
    approval_target,
    counted_approvals,
)
from modelops.spec import State, Tier

S = State
KNOWN = {"ranking", "safety"}


def count(
    *recorded: tuple[str, str], needed: int = 2, cross: bool = True, actor: str = "ops"
) -> list[RecordedApproval]:
    return counted_approvals(
        "m",
        2,
        "global",
        S.PROMOTED,
        tier=Tier.L3,
        owner_team="ranking",
        actor=actor,
        recorded=[RecordedApproval(a, t) for a, t in recorded],
        known_teams=KNOWN,
        needed=needed,
        cross_team=cross,
    )


def test_two_distinct_approvers_one_outside_the_team_count() -> None:
    got = count(("rank-lead", "ranking"), ("safety-lead", "safety"))
    assert got == [
        RecordedApproval("rank-lead", "ranking"),
        RecordedApproval("safety-lead", "safety"),
    ]


def test_the_actors_own_approval_never_counts_in_any_spelling() -> None:
    with pytest.raises(ApprovalRequired, match="ops's own approval does not count") as info:
        count((" OPS ", "safety"), ("rank-lead", "ranking"), actor="ops")
    assert "have: rank-lead (ranking)" in str(info.value)
    assert "run `modelops approve m 2 --slice global --to PROMOTED --actor NAME`" in str(info.value)


def test_cross_team_needs_a_known_team_other_than_the_owner() -> None:
    with pytest.raises(ApprovalRequired, match="at least one outside team 'ranking'"):
        count(("rank-lead", "ranking"), ("rank-eng", " Ranking "))
    # A team nobody registered is no team, never "another team".
    with pytest.raises(ApprovalRequired):
        count(("rank-lead", "ranking"), ("someone", "unknown-team"))
    assert len(count(("rank-lead", "ranking"), ("safety-eng", " SAFETY "))) == 2


def test_one_approval_without_the_team_rule() -> None:
    assert count(("rank-eng", "ranking"), needed=1, cross=False)
    with pytest.raises(ApprovalRequired, match="needs 1 approval from distinct actors; have: none"):
        count(needed=1, cross=False)


def l3(**occupied: int) -> SliceContext:
    occ = {S.PROMOTED: 1, **{S(k): v for k, v in occupied.items()}}
    return SliceContext(tier=Tier.L3, has_prod=True, ever_had_prod=True, occupied=occ)


def test_approval_target_is_the_single_gated_move_or_the_forward_one() -> None:
    assert approval_target("m@2", "global", S.OFFLINE_PASSED, None, l3()) is S.APPROVED_SHADOW
    assert approval_target("m@2", "global", S.CANARY, None, l3()) is S.AB_TEST
    assert approval_target("m@2", "global", S.CANARY, S.CANARY, l3()) is S.CANARY


def test_approval_target_refusals_name_what_is_allowed() -> None:
    l1 = SliceContext(tier=Tier.L1, has_prod=True, ever_had_prod=True, occupied={S.PROMOTED: 1})
    with pytest.raises(IllegalTransition, match=r"no single next move needs approval .*none"):
        approval_target("m@2", "global", S.SHADOW, None, l1)
    with pytest.raises(IllegalTransition, match="legal next states: APPROVED_SHADOW"):
        approval_target("m@2", "global", S.OFFLINE_PASSED, S.CANARY, l3())
    with pytest.raises(IllegalTransition, match="needs no approval at tier L1"):
        approval_target("m@2", "global", S.SHADOW, S.APPROVED_CANARY, l1)
