"""Names and teams: one spelling per person and per team, from a known set of teams.

The cross-team and self-approval rules compare names. If `ALICE` and `alice`, or `ads` and
`'ads '`, were different names, either rule could be passed by spelling alone.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from test_registry_kit import OWNER_TEAM, enroll_keys, key_of, new_model, refused, spec, version

from modelops.errors import ApprovalRequired, NotFoundError, SpecError
from modelops.registry import Registry
from modelops.spec import RollbackClass, State, Tier

S = State
M = "ranker"


def test_teams_are_a_known_set_with_one_spelling(registry: Registry) -> None:
    assert registry.list_teams() == []
    assert registry.add_team("  Ranking ") == "ranking"
    assert registry.add_team("ranking") == "ranking"  # idempotent, one audit entry
    registry.add_team("safety", actor="Admin")
    assert registry.list_teams() == ["ranking", "safety"]
    entries = registry.audit_entries(None)
    assert [(e.action, e.payload, e.actor) for e in entries] == [
        ("add_team", {"name": "ranking"}, "admin"),
        ("add_team", {"name": "safety"}, "admin"),
    ]
    for bad in ("", "   ", "ads team", "ads/x", "-ads"):
        refused(registry, SpecError, lambda b=bad: registry.add_team(b), match="team")


def test_an_actor_needs_a_known_team_and_names_are_normalized(registry: Registry) -> None:
    registry.add_team("ranking")
    registry.add_team("safety")
    info = refused(registry, NotFoundError, lambda: registry.add_actor("bob", "adz"))
    assert str(info.value) == (
        "unknown team 'adz'; known teams: ranking, safety; "
        "add it with `modelops team add adz`"
    )
    for team in ("", "  "):
        refused(registry, SpecError, lambda t=team: registry.add_actor("bob", t), match="team")
    refused(registry, SpecError, lambda: registry.add_actor("  ", "ranking"), match="actor")
    refused(registry, SpecError, lambda: registry.add_actor("al ice", "ranking"), match="actor")

    registry.add_actor("  ALICE ", "Ranking ")
    registry.add_actor("alice", "ranking")  # the same actor: idempotent
    assert [e.payload for e in registry.audit_entries(None) if e.action == "add_actor"] == [
        {"name": "alice", "team": "ranking"}
    ]


def test_an_owner_team_must_be_known(registry: Registry) -> None:
    registry.add_team("safety")
    info = refused(registry, NotFoundError, lambda: registry.create_model(spec(M)))
    assert str(info.value) == (
        f"model {M!r}: unknown owner_team {OWNER_TEAM!r}; known teams: safety; "
        f"add it with `modelops team add {OWNER_TEAM}`"
    )
    registry.add_team(OWNER_TEAM)
    assert registry.create_model(spec(M)).owner_team == OWNER_TEAM


def test_an_actor_spelled_in_capitals_is_the_same_actor(registry: Registry) -> None:
    """`--actor ALICE` approved by `alice` must not pass the self-approval rule."""
    new_model(registry, tier=Tier.L2)
    registry.add_actor("alice", OWNER_TEAM)
    enroll_keys(registry, "alice")
    v1 = version(registry).version
    registry.approve(M, v1, actor="ALICE", key=key_of("ALICE"))  # recorded as alice
    info = refused(
        registry,
        ApprovalRequired,
        lambda: registry.transition(M, v1, S.PROMOTED, actor="ALICE"),
    )
    assert "have: none; alice's own approval does not count" in str(info.value)
    res = registry.transition(M, v1, S.PROMOTED, actor=" Ops ")
    assert res.to_state is S.PROMOTED
    assert registry.audit_entries(M)[-1].actor == "ops"
    assert registry.get_version(M, v1).state_history[-1].actor == "ops"


@pytest.mark.parametrize("spelling", ["ranking ", "RANKING", " Ranking"])
def test_the_owning_team_spelled_differently_is_not_another_team(
    registry: Registry, spelling: str
) -> None:
    new_model(registry, tier=Tier.L3)
    registry.add_actor("rank-lead", OWNER_TEAM)
    registry.add_actor("mallory", spelling)  # normalized: the owning team itself
    enroll_keys(registry, "rank-lead", "mallory")
    v1 = version(registry).version
    registry.approve(M, v1, actor="rank-lead", key=key_of("rank-lead"), target=S.PROMOTED)
    registry.approve(M, v1, actor="mallory", key=key_of("mallory"), target=S.PROMOTED)
    info = refused(
        registry, ApprovalRequired, lambda: registry.transition(M, v1, S.PROMOTED, actor="ops")
    )
    assert "at least one outside team 'ranking'" in str(info.value)
    assert "have: mallory (ranking), rank-lead (ranking)" in str(info.value)


def test_a_blank_or_unknown_team_left_by_an_old_registry_is_not_another_team(
    registry: Registry,
) -> None:
    """Rows written before teams were validated ('' or 'ads ') count as no team at all."""
    new_model(registry, tier=Tier.L3, rollback_class=RollbackClass.STATELESS)
    registry.add_team("safety")
    registry.add_actor("rank-lead", OWNER_TEAM)
    registry.add_actor("safety-lead", "safety")
    with registry.engine.begin() as conn:
        for name, team in (("blank", ""), ("spaced", "ranking "), ("ghost-team", "nowhere")):
            conn.execute(
                text("INSERT INTO actors (name, team, created_at) VALUES (:n, :t, 'legacy')"),
                {"n": name, "t": team},
            )
    enroll_keys(registry, "rank-lead", "safety-lead", "blank", "spaced", "ghost-team")
    v1 = version(registry).version
    registry.approve(M, v1, actor="rank-lead", key=key_of("rank-lead"), target=S.PROMOTED)
    for legacy in ("blank", "spaced", "ghost-team"):
        registry.approve(M, v1, actor=legacy, key=key_of(legacy), target=S.PROMOTED)
    info = refused(
        registry, ApprovalRequired, lambda: registry.transition(M, v1, S.PROMOTED, actor="ops")
    )
    assert "at least one outside team 'ranking'" in str(info.value)
    # outside, in a known team
    registry.approve(M, v1, actor="safety-lead", key=key_of("safety-lead"), target=S.PROMOTED)
    res = registry.transition(M, v1, S.PROMOTED, actor="ops", reason="reviewed")
    assert res.to_state is S.PROMOTED
