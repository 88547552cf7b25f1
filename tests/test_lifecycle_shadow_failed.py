"""SHADOW -> FAILED, the edge the shadow divergence verdict takes: at every tier, with no
approval, by an automated actor even at L3 (it takes a version out, as a rollback does), and
only from SHADOW."""

from __future__ import annotations

import pytest

from modelops.errors import IllegalTransition
from modelops.lifecycle import SliceContext, check_transition, legal_next
from modelops.spec import State, Tier

S = State


def _ctx(tier: Tier) -> SliceContext:
    return SliceContext(
        tier=tier, has_prod=True, ever_had_prod=True, occupied={S.PROMOTED: 1, S.SHADOW: 2}
    )


@pytest.mark.parametrize("tier", list(Tier))
def test_a_shadow_may_fail_automatically_with_no_approval(tier: Tier) -> None:
    assert S.FAILED in legal_next(S.SHADOW, _ctx(tier))
    d = check_transition("m@2", "global", S.SHADOW, S.FAILED, _ctx(tier), automated=True)
    assert (d.approvals, d.cross_team, d.automated_allowed) == (0, False, True)


def test_only_a_shadow_fails_this_way() -> None:
    ctx = _ctx(Tier.L1)
    for st in (S.APPROVED_SHADOW, S.APPROVED_CANARY, S.CANARY, S.AB_TEST, S.PROMOTED):
        assert S.FAILED not in legal_next(st, ctx), st
    with pytest.raises(IllegalTransition, match="legal next states"):
        check_transition("m@2", "global", S.CANARY, S.FAILED, ctx, current_percent=1)
    # L3 still refuses every other automated step out of SHADOW.
    with pytest.raises(IllegalTransition, match="tier L3 allows no automatic transition"):
        check_transition(
            "m@2", "global", S.SHADOW, S.APPROVED_CANARY, _ctx(Tier.L3), automated=True
        )
