"""The lifecycle as the Registry enforces it, on SQLite and PostgreSQL.

Every refused operation goes through `refused`, which also proves that nothing partial
was written: the row count of every table is the same before and after.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_registry_kit import (
    add_people,
    approve_l3,
    bootstrap_prod,
    contract,
    key_of,
    new_model,
    refused,
    version,
)

from modelops.desired import CanaryTarget
from modelops.errors import (
    ApprovalRequired,
    ConflictError,
    IllegalTransition,
    NotFoundError,
    SpecError,
)
from modelops.registry import Registry, TransitionResult
from modelops.spec import RollbackClass, ShadowMode, State, Tier, VersionMeta

S = State
M = "ranker"

# Each step: (target, percent or None).
LADDER: list[tuple[State, int | None]] = [
    (S.APPROVED_SHADOW, None),
    (S.SHADOW, None),
    (S.APPROVED_CANARY, None),
    (S.CANARY, 1),
    (S.CANARY, 5),
    (S.CANARY, 10),
]


def step(
    reg: Registry,
    v: int,
    target: State,
    percent: int | None = None,
    *,
    model: str = M,
    slice: str = "global",  # noqa: A002
    actor: str = "ops",
    **kw: Any,
) -> TransitionResult:
    """One compare-and-set move from whatever the version is now."""
    current = reg.state_of(model, v, slice)
    if reg.get_model(model).tier is Tier.L3:  # every L3 move says why
        kw.setdefault("reason", f"to {target.value}")
    res = reg.transition(
        model, v, target, actor=actor, slice=slice, expected=current, percent=percent, **kw
    )
    assert (res.from_state, res.to_state) == (current, target)
    assert reg.state_of(model, v, slice) is target
    return res


def walk(reg: Registry, v: int, steps: list[tuple[State, int | None]], **kw: Any) -> None:
    for target, percent in steps:
        step(reg, v, target, percent, **kw)


def last_audit(reg: Registry, model: str = M) -> dict[str, Any]:
    return reg.audit_entries(model)[-1].payload


def states(reg: Registry, model: str = M, sl: str = "global") -> dict[int, State]:
    return {v.version: v.state[sl] for v in reg.list_versions(model)}


def promoted(reg: Registry, model: str = M, sl: str = "global") -> list[int]:
    return [v for v, st in states(reg, model, sl).items() if st is S.PROMOTED]


# ---------------------------------------------------------------------------- per-tier walks


def test_l0_walk_and_every_skip(registry: Registry) -> None:
    new_model(registry, tier=Tier.L0)
    v1 = version(registry).version
    res = step(registry, v1, S.PROMOTED, automated=True)
    assert last_audit(registry)["skip"] == "first version on the slice"
    assert res.deprecated_version is None

    v2 = version(registry).version  # OFFLINE_PASSED -> PROMOTED with a prod present
    res = step(registry, v2, S.PROMOTED, automated=True)
    assert last_audit(registry)["skip"] == "L0 skips to PROMOTED"
    assert res.deprecated_version == v1

    v3 = version(registry).version  # SHADOW -> PROMOTED
    walk(registry, v3, LADDER[:2], automated=True)
    step(registry, v3, S.PROMOTED, automated=True)
    assert last_audit(registry)["skip"] == "L0 skips to PROMOTED"

    v4 = version(registry).version  # CANARY -> PROMOTED
    walk(registry, v4, LADDER[:4], automated=True)
    step(registry, v4, S.PROMOTED, automated=True)
    assert last_audit(registry)["skip"] == "L0 skips to PROMOTED"

    v5 = version(registry).version  # the full ladder
    walk(registry, v5, [*LADDER, (S.AB_TEST, None), (S.PROMOTED, None)], automated=True)
    assert "skip" not in last_audit(registry)
    assert states(registry) == {
        v1: S.DEPRECATED,
        v2: S.DEPRECATED,
        v3: S.DEPRECATED,
        v4: S.DEPRECATED,
        v5: S.PROMOTED,
    }


def test_l1_walk(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    v1 = bootstrap_prod(registry)
    v2 = version(registry).version
    info = refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v2, S.PROMOTED, actor="ops"),
    )
    assert "legal next states: APPROVED_SHADOW, ARCHIVED" in str(info.value)
    walk(registry, v2, LADDER[:2], automated=True)
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v2, S.PROMOTED, actor="ops"),
        match="legal next states: FAILED, APPROVED_CANARY, ROLLED_BACK",
    )
    walk(registry, v2, LADDER[2:5], automated=True)
    res = step(registry, v2, S.PROMOTED, automated=True)
    assert last_audit(registry)["skip"] == "L1 skips AB_TEST"
    assert res.deprecated_version == v1

    v3 = version(registry).version
    walk(registry, v3, [*LADDER, (S.AB_TEST, None), (S.PROMOTED, None)], automated=True)
    assert states(registry) == {v1: S.DEPRECATED, v2: S.DEPRECATED, v3: S.PROMOTED}


def test_l2_walk_refresh_skips_ab_but_a_contract_change_does_not(registry: Registry) -> None:
    add_people(registry)
    c1 = registry.register_contract(contract(version=1))
    c2 = registry.register_contract(contract(version=2))
    new_model(registry, tier=Tier.L2)
    v1 = version(registry, contract_ref=c1).version
    # Even the bootstrap carries the L2 approval.
    refused(
        registry,
        ApprovalRequired,
        lambda: registry.transition(M, v1, S.PROMOTED, actor="ops"),
        match="needs 1 approval from distinct actors; have: none",
    )
    assert registry.approve(M, v1, actor="rank-lead", key=key_of("rank-lead")).target is S.PROMOTED
    step(registry, v1, S.PROMOTED)
    assert last_audit(registry)["approvals"] == [{"approver": "rank-lead", "team": "ranking"}]

    # A weight refresh: same contract as prod. It is the automated path: no human gate.
    v2 = version(registry, contract_ref=c1).version
    walk(registry, v2, LADDER[:4], automated=True)
    step(registry, v2, S.PROMOTED, automated=True)
    audit = last_audit(registry)
    assert audit["skip"] == "L2 weight refresh on an unchanged contract skips AB_TEST"
    assert audit.get("approvals", []) == []

    # A contract change: the human gate is back, CANARY -> PROMOTED is refused, AB_TEST is
    # the way.
    v3 = version(registry, contract_ref=c2).version
    walk(registry, v3, LADDER[:2])
    refused(
        registry,
        ApprovalRequired,
        lambda: registry.transition(M, v3, S.APPROVED_CANARY, actor="ops", automated=True),
    )
    registry.approve(M, v3, actor="rank-lead", key=key_of("rank-lead"))
    walk(registry, v3, LADDER[2:4])
    refused(  # approvals are only for legal moves
        registry,
        IllegalTransition,
        lambda: registry.approve(
            M, v3, actor="rank-lead", key=key_of("rank-lead"), target=S.PROMOTED
        ),
        match="legal next states: CANARY, AB_TEST, ROLLED_BACK",
    )
    info = refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v3, S.PROMOTED, actor="ops"),
        match="only for a weight refresh",
    )
    assert str(info.value).endswith("legal next states: CANARY, AB_TEST, ROLLED_BACK")
    step(registry, v3, S.AB_TEST)
    registry.clock.advance(days=14)  # type: ignore[attr-defined]  # L2 A/B minimum
    refused(
        registry,
        ApprovalRequired,
        lambda: registry.transition(M, v3, S.PROMOTED, actor="ops"),
    )
    registry.approve(M, v3, actor="rank-lead", key=key_of("rank-lead"))
    step(registry, v3, S.PROMOTED)
    assert "skip" not in last_audit(registry)
    assert states(registry) == {v1: S.DEPRECATED, v2: S.DEPRECATED, v3: S.PROMOTED}


def test_l3_walk_needs_two_cross_team_approvals_for_each_move(registry: Registry) -> None:
    add_people(registry)
    new_model(registry, tier=Tier.L3)
    v1 = version(registry).version  # the gate result needs no approval
    assert registry.state_of(M, v1) is S.OFFLINE_PASSED
    refused(
        registry,
        ApprovalRequired,
        lambda: registry.transition(M, v1, S.PROMOTED, actor="ops"),
        match="needs 2 approvals from distinct actors, at least one outside team 'ranking'",
    )
    approve_l3(registry, M, v1, S.PROMOTED)
    step(registry, v1, S.PROMOTED)
    assert last_audit(registry)["approvals"] == [
        {"approver": "rank-lead", "team": "ranking"},
        {"approver": "safety-lead", "team": "safety"},
    ]

    v2 = version(registry).version
    for target, percent in LADDER:
        refused(
            registry,
            ApprovalRequired,
            lambda t=target, p=percent: registry.transition(M, v2, t, actor="ops", percent=p),
        )
        approve_l3(registry, M, v2, target)
        step(registry, v2, target, percent)
    # L3 never skips AB_TEST, not even for a refresh.
    refused(
        registry,
        IllegalTransition,
        lambda: registry.approve(
            M, v2, actor="rank-lead", key=key_of("rank-lead"), target=S.PROMOTED
        ),
        match="legal next states: CANARY, AB_TEST, ROLLED_BACK",
    )
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v2, S.PROMOTED, actor="ops"),
        match="legal next states: CANARY, AB_TEST, ROLLED_BACK",
    )
    approve_l3(registry, M, v2, S.AB_TEST)
    step(registry, v2, S.AB_TEST)
    registry.clock.advance(days=14)  # type: ignore[attr-defined]  # L3 A/B minimum
    approve_l3(registry, M, v2)  # the default target from AB_TEST is PROMOTED
    step(registry, v2, S.PROMOTED)
    assert states(registry) == {v1: S.DEPRECATED, v2: S.PROMOTED}


def test_a_slice_without_prod_takes_no_traffic_candidates(registry: Registry) -> None:
    new_model(registry, tier=Tier.L0)
    v1 = version(registry).version
    step(registry, v1, S.APPROVED_SHADOW)
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v1, S.SHADOW, actor="ops"),
        match="no PROMOTED version to compare against; the first version goes "
        "OFFLINE_PASSED -> PROMOTED",
    )
    v2 = bootstrap_prod(registry)
    step(registry, v1, S.SHADOW)
    assert registry.desired_state(M).prod_version == v2


# ---------------------------------------------------------------------------- L3 approvals


@pytest.fixture
def l3(registry: Registry) -> Registry:
    add_people(registry)
    new_model(registry, tier=Tier.L3)
    v1 = version(registry).version
    approve_l3(registry, M, v1, S.PROMOTED)
    step(registry, v1, S.PROMOTED)
    v2 = version(registry).version
    assert v2 == 2
    return registry


def test_l3_two_approvals_from_the_owning_team_are_not_enough(l3: Registry) -> None:
    l3.approve(M, 2, actor="rank-lead", key=key_of("rank-lead"))
    l3.approve(M, 2, actor="rank-eng", key=key_of("rank-eng"))
    info = refused(
        l3, ApprovalRequired, lambda: l3.transition(M, 2, S.APPROVED_SHADOW, actor="ops")
    )
    assert "at least one outside team 'ranking'" in str(info.value)
    assert "have: rank-eng (ranking), rank-lead (ranking)" in str(info.value)
    l3.approve(M, 2, actor="safety-eng", key=key_of("safety-eng"))
    step(l3, 2, S.APPROVED_SHADOW)


def test_l3_the_actors_own_approval_does_not_count(l3: Registry) -> None:
    approve_l3(l3, M, 2)  # rank-lead (ranking) and safety-lead (safety)
    for actor in ("rank-lead", "safety-lead"):
        info = refused(
            l3, ApprovalRequired, lambda a=actor: l3.transition(M, 2, S.APPROVED_SHADOW, actor=a)
        )
        assert f"{actor}'s own approval does not count" in str(info.value)
    step(l3, 2, S.APPROVED_SHADOW, actor="rank-eng")


def test_l3_one_actor_approves_once(l3: Registry) -> None:
    l3.approve(M, 2, actor="safety-lead", key=key_of("safety-lead"))
    refused(
        l3,
        ConflictError,
        lambda: l3.approve(M, 2, actor="safety-lead", key=key_of("safety-lead")),
        match="a second approval must come from another actor",
    )
    refused(
        l3,
        NotFoundError,
        lambda: l3.approve(M, 2, actor="intruder", key=key_of("intruder")),
        match="unknown actor",
    )
    refused(
        l3,
        ApprovalRequired,
        lambda: l3.transition(M, 2, S.APPROVED_SHADOW, actor="ops"),
        match="have: safety-lead \\(safety\\)",
    )


def test_l3_approvals_are_stale_once_the_version_moves(l3: Registry) -> None:
    for target, percent in LADDER[:4]:
        approve_l3(l3, M, 2, target)
        step(l3, 2, target, percent)
    # Approvals given at CANARY 1 for the next step and for AB_TEST...
    approve_l3(l3, M, 2, S.CANARY)
    approve_l3(l3, M, 2, S.AB_TEST)
    step(l3, 2, S.CANARY, 5)  # ...the step uses its own and moves the version on,
    # ...so neither set counts at CANARY 5.
    refused(
        l3,
        ApprovalRequired,
        lambda: l3.transition(M, 2, S.CANARY, actor="ops", percent=10),
        match="have: none",
    )
    refused(l3, ApprovalRequired, lambda: l3.transition(M, 2, S.AB_TEST, actor="ops"), match="none")
    approve_l3(l3, M, 2, S.AB_TEST)
    step(l3, 2, S.AB_TEST)


def test_l3_refuses_automated_moves_but_not_automated_rollback(l3: Registry) -> None:
    approve_l3(l3, M, 2)
    refused(
        l3,
        IllegalTransition,
        lambda: l3.transition(M, 2, S.APPROVED_SHADOW, actor="ops", automated=True),
        match="tier L3 allows no automatic transition to APPROVED_SHADOW",
    )
    step(l3, 2, S.APPROVED_SHADOW)
    res = l3.transition(M, 2, S.ROLLED_BACK, actor="watcher", automated=True)
    assert res.to_state is S.ROLLED_BACK
    assert last_audit(l3)["automated"] is True
    # An automated rollback of prod needs no approval either.
    res = l3.rollback(M, actor="watcher", automated=True)
    assert (res.version, res.to_state, res.restored_version) == (1, S.ROLLED_BACK, None)


def test_approve_refuses_what_needs_no_approval_or_is_not_legal(registry: Registry) -> None:
    add_people(registry)
    new_model(registry, tier=Tier.L2)
    bootstrap = version(registry).version
    registry.approve(M, bootstrap, actor="rank-lead", key=key_of("rank-lead"))
    step(registry, bootstrap, S.PROMOTED)
    v2 = version(registry).version
    refused(
        registry,
        IllegalTransition,
        lambda: registry.approve(
            M, v2, actor="rank-lead", key=key_of("rank-lead"), target=S.APPROVED_SHADOW
        ),
        match="needs no approval at tier L2",
    )
    refused(
        registry,
        IllegalTransition,
        lambda: registry.approve(
            M, v2, actor="rank-lead", key=key_of("rank-lead"), target=S.CANARY
        ),
        match="legal next states: APPROVED_SHADOW, ARCHIVED",
    )
    refused(
        registry,
        IllegalTransition,
        lambda: registry.approve(M, v2, actor="rank-lead", key=key_of("rank-lead")),
        match="no single next move needs approval",
    )


# ---------------------------------------------------------------------------- IRREVERSIBLE


@pytest.mark.parametrize("tier", [Tier.L2, Tier.L3])
def test_irreversible_promotion_needs_an_override(registry: Registry, tier: Tier) -> None:
    add_people(registry)
    new_model(registry, tier=tier, rollback_class=RollbackClass.IRREVERSIBLE)
    v1 = version(registry).version

    def approve() -> None:
        if tier is Tier.L3:
            approve_l3(registry, M, v1, S.PROMOTED)
        else:
            registry.approve(M, v1, actor="rank-lead", key=key_of("rank-lead"), target=S.PROMOTED)

    approve()
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v1, S.PROMOTED, actor="ops"),
        match=f"IRREVERSIBLE at tier {tier.value}: promotion needs an explicit override",
    )
    refused(
        registry,
        SpecError,
        lambda: registry.override(M, v1, actor="safety-eng", key=key_of("safety-eng"), reason="  "),
        match="needs a reason",
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.override(M, v1, actor="nobody", key=key_of("nobody"), reason="x"),
        match="unknown actor",
    )
    registry.override(
        M, v1, actor="safety-eng", key=key_of("safety-eng"), reason="ledger writes reviewed"
    )
    step(registry, v1, S.PROMOTED)
    assert last_audit(registry)["override"] == {
        "actor": "safety-eng",
        "reason": "ledger writes reviewed",
    }


def test_irreversible_override_binds_to_the_state_it_was_given_in(registry: Registry) -> None:
    add_people(registry)
    new_model(registry, tier=Tier.L2, rollback_class=RollbackClass.IRREVERSIBLE)
    v1 = version(registry).version
    registry.approve(M, v1, actor="rank-lead", key=key_of("rank-lead"))
    registry.override(M, v1, actor="safety-eng", key=key_of("safety-eng"), reason="first version")
    step(registry, v1, S.PROMOTED)

    v2 = version(registry).version  # a refresh: CANARY -> PROMOTED is legal at L2
    walk(registry, v2, LADDER[:2])
    registry.approve(M, v2, actor="rank-lead", key=key_of("rank-lead"))
    walk(registry, v2, LADDER[2:4])
    registry.override(M, v2, actor="safety-eng", key=key_of("safety-eng"), reason="at 1%")
    step(registry, v2, S.CANARY, 5)
    registry.approve(M, v2, actor="rank-lead", key=key_of("rank-lead"))
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v2, S.PROMOTED, actor="ops"),
        match="override",
    )
    registry.override(M, v2, actor="safety-eng", key=key_of("safety-eng"), reason="at 5%")
    res = step(registry, v2, S.PROMOTED)
    assert last_audit(registry)["override"]["reason"] == "at 5%"
    assert res.deprecated_version == v1

    # Rolling an IRREVERSIBLE model back is allowed, and says what it cannot undo.
    rb = registry.rollback(M, actor="ops")
    assert rb.restored_version == v1
    assert any("IRREVERSIBLE" in c and "cannot be undone" in c for c in rb.caveats)


def test_override_is_only_for_irreversible_models(registry: Registry) -> None:
    add_people(registry)
    new_model(registry, tier=Tier.L2)
    v1 = version(registry).version
    refused(
        registry,
        IllegalTransition,
        lambda: registry.override(
            M, v1, actor="safety-eng", key=key_of("safety-eng"), reason="why not"
        ),
        match="overrides are only for IRREVERSIBLE models",
    )


def test_l1_irreversible_needs_no_override(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1, rollback_class=RollbackClass.IRREVERSIBLE)
    bootstrap_prod(registry)
    assert promoted(registry) == [1]


# ---------------------------------------------------------------------------- promote, rollback


def test_promotion_deprecates_the_old_prod_in_the_same_transaction(registry: Registry) -> None:
    new_model(registry, tier=Tier.L0)
    v1 = bootstrap_prod(registry)
    v2 = version(registry).version
    before = registry.row_counts()
    audit_before = len(registry.audit_entries(M))
    res = step(registry, v2, S.PROMOTED)
    after = registry.row_counts()
    assert res.deprecated_version == v1
    assert states(registry) == {v1: S.DEPRECATED, v2: S.PROMOTED}
    # Two state changes (v2 promoted, v1 deprecated), one audit entry naming both.
    assert after["state_changes"] == before["state_changes"] + 2
    assert len(registry.audit_entries(M)) == audit_before + 1
    assert last_audit(registry)["deprecated"] == v1
    old = registry.get_version(M, v1).state_history[-1]
    assert (old.state, old.reason) == (S.DEPRECATED, f"replaced by version {v2}")
    d = registry.desired_state(M)
    assert (d.prod_version, d.rollback_target) == (v2, v1)


def test_rollback_restores_the_most_recently_deprecated_version(registry: Registry) -> None:
    new_model(registry, tier=Tier.L0)
    v1 = bootstrap_prod(registry)
    v2 = bootstrap_prod(registry)
    v3 = bootstrap_prod(registry)
    assert states(registry) == {v1: S.DEPRECATED, v2: S.DEPRECATED, v3: S.PROMOTED}

    res = registry.transition(M, v3, S.ROLLED_BACK, actor="ops", expected=S.PROMOTED)
    assert (res.restored_version, res.caveats) == (v2, [])
    assert states(registry) == {v1: S.DEPRECATED, v2: S.PROMOTED, v3: S.ROLLED_BACK}
    d = registry.desired_state(M)
    assert (d.prod_version, d.rollback_target, d.warm_versions) == (v2, v1, [v1, v2])
    assert last_audit(registry)["restored"] == v2

    # Going further back is a decision per step: each names the version it rolls back.
    res = registry.rollback(M, actor="ops", reason="still bad", expected_version=v2)
    assert (res.version, res.restored_version, res.caveats) == (v2, v1, [])
    res = registry.rollback(M, actor="ops", expected_version=v1)
    assert (res.version, res.restored_version) == (v1, None)
    assert res.caveats == [
        "no earlier version was promoted on slice 'global': the slice now has no prod version"
    ]
    d = registry.desired_state(M)
    assert (d.prod_version, d.rollback_target, d.warm_versions) == (None, None, [])
    # A bare rollback now repeats the last one: it answers with it and writes nothing.
    before = registry.row_counts()
    res = registry.rollback(M, actor="ops")
    assert (res.version, res.changed) == (v1, False)
    assert registry.row_counts() == before
    # With no prod left, the slice bootstraps again.
    v4 = bootstrap_prod(registry)
    assert promoted(registry) == [v4]


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (None, "but no snapshot was recorded"),
        ("s3://snapshots/ranker/2", "from snapshot s3://snapshots/ranker/2"),
    ],
)
def test_state_snapshot_rollback_is_honest_about_state(
    registry: Registry, snapshot: str | None, expected: str
) -> None:
    new_model(registry, tier=Tier.L0, rollback_class=RollbackClass.STATE_SNAPSHOT)
    v1 = bootstrap_prod(registry)
    v2 = bootstrap_prod(registry, meta=VersionMeta(rollback_snapshot_uri=snapshot))
    res = registry.rollback(M, actor="ops")
    assert res.restored_version == v1
    assert len(res.caveats) == 1
    assert res.caveats[0].startswith(f"traffic only: state written while version {v2} served")
    assert res.caveats[0].endswith(expected)
    assert last_audit(registry)["caveats"] == res.caveats


def test_rollback_prefers_the_live_candidate_over_prod(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    v1 = bootstrap_prod(registry)
    v2 = version(registry).version
    walk(registry, v2, LADDER[:5])
    res = registry.rollback(M, actor="watcher", automated=True)
    assert (res.version, res.from_state, res.to_state) == (v2, S.CANARY, S.ROLLED_BACK)
    assert res.restored_version is None and res.caveats == []
    assert states(registry) == {v1: S.PROMOTED, v2: S.ROLLED_BACK}
    assert registry.desired_state(M).canary is None


def test_rollback_from_every_forward_state(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    bootstrap_prod(registry)
    path = [*LADDER[:4], (S.AB_TEST, None)]
    for i in range(len(path)):
        v = version(registry).version
        walk(registry, v, path[: i + 1])
        res = step(registry, v, S.ROLLED_BACK)
        assert res.from_state is path[i][0]
        step(registry, v, S.ARCHIVED)
    assert promoted(registry) == [1]


# ---------------------------------------------------------------------------- singletons, slices


def test_singletons_per_slice(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    bootstrap_prod(registry)
    v2 = version(registry).version
    v3 = version(registry).version
    walk(registry, v2, LADDER[:2])
    step(registry, v3, S.APPROVED_SHADOW)
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v3, S.SHADOW, actor="ops"),
        match=f"version {v2} is already in SHADOW",
    )
    walk(registry, v2, LADDER[2:4])
    walk(registry, v3, LADDER[1:3])  # SHADOW is free again
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v3, S.CANARY, actor="ops"),
        match=f"version {v2} is already in CANARY",
    )
    step(registry, v2, S.AB_TEST)
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v3, S.CANARY, actor="ops"),
        match=f"version {v2} is in AB_TEST on this slice; only one candidate",
    )
    step(registry, v2, S.ROLLED_BACK)
    step(registry, v3, S.CANARY, 2)


def test_one_version_in_shadow_on_one_slice_while_a_sibling_is_in_ab_on_another(
    registry: Registry,
) -> None:
    new_model(registry, tier=Tier.L1, slices=["eu", "us"])
    v1 = version(registry).version
    for s in ("eu", "us"):
        step(registry, v1, S.PROMOTED, slice=s)
    v2 = version(registry).version
    v3 = version(registry).version
    walk(registry, v2, LADDER[:2], slice="eu")
    walk(registry, v3, [*LADDER[:4], (S.AB_TEST, None)], slice="us")
    assert registry.get_version(M, v2).state == {"eu": S.SHADOW, "us": S.OFFLINE_PASSED}
    assert registry.get_version(M, v3).state == {"eu": S.OFFLINE_PASSED, "us": S.AB_TEST}

    eu, us = registry.desired_state(M, "eu"), registry.desired_state(M, "us")
    assert eu.shadow is not None and eu.shadow.version == v2
    assert eu.ab_test is None and eu.canary is None
    assert us.shadow is None and us.canary is None
    assert us.ab_test is not None
    assert [(a.version, a.percent) for a in us.ab_test.arms] == [(v1, 50), (v3, 50)]
    assert us.ab_test.layer == f"{M}.us"
    assert (eu.prod_version, us.prod_version) == (v1, v1)

    # The singletons are per slice: v3 may not shadow on eu (v2 holds it) but v2 may on us;
    # on us v2 may not canary while v3 is in AB_TEST.
    step(registry, v3, S.APPROVED_SHADOW, slice="eu")
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v3, S.SHADOW, actor="ops", slice="eu"),
        match=f"version {v2} is already in SHADOW",
    )
    walk(registry, v2, LADDER[:3], slice="us")
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, v2, S.CANARY, actor="ops", slice="us"),
        match=f"version {v3} is in AB_TEST",
    )
    # Promoting v3 on us leaves eu alone.
    step(registry, v3, S.PROMOTED, slice="us")
    assert registry.get_version(M, v1).state == {"eu": S.PROMOTED, "us": S.DEPRECATED}
    assert registry.desired_state(M, "eu") == eu


def test_gate_results_move_every_slice_once(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1, slices=["eu", "us"])
    v = version(registry, passed=None).version
    assert registry.get_version(M, v).state == {"eu": S.REGISTERED, "us": S.REGISTERED}
    res = registry.record_gate_result(M, v, passed=True, results={"auc": 0.91})
    assert sorted((r.slice, r.to_state) for r in res) == [
        ("eu", S.OFFLINE_PASSED),
        ("us", S.OFFLINE_PASSED),
    ]
    before = registry.row_counts()
    assert registry.record_gate_result(M, v, passed=True, results={"auc": 0.91}) == []
    assert registry.row_counts() == before
    refused(
        registry,
        ConflictError,
        lambda: registry.record_gate_result(M, v, passed=False, results={}),
        match="already has a gate result, passed",
    )
    assert registry.get_version(M, v).state_history[-1].gate_results == {"auc": 0.91}

    failed = version(registry, passed=False).version
    refused(
        registry,
        IllegalTransition,
        lambda: registry.transition(M, failed, S.APPROVED_SHADOW, actor="ops", slice="eu"),
        match="legal next states: ARCHIVED",
    )


# ---------------------------------------------------------------------------- desired state


def test_desired_state_contents_and_generation(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    d0 = registry.desired_state(M)
    assert d0.generation == 0 and d0.content()["prod_version"] is None

    def gen_after(res: TransitionResult, expected: int) -> None:
        assert res.generation == expected
        assert registry.desired_state(M).generation == expected

    v1 = version(registry).version
    gen_after(step(registry, v1, S.PROMOTED), 1)
    d = registry.desired_state(M)
    assert (d.prod_version, d.warm_versions, d.rollback_target) == (v1, [v1], None)

    v2 = version(registry).version
    gen_after(step(registry, v2, S.APPROVED_SHADOW), 1)  # no traffic changes
    gen_after(step(registry, v2, S.SHADOW, 20, mode=ShadowMode.replay), 2)
    d = registry.desired_state(M)
    assert d.shadow is not None
    assert (d.shadow.version, d.shadow.percent, d.shadow.mode) == (v2, 20, ShadowMode.replay)
    assert d.warm_versions == [v1, v2]

    gen_after(step(registry, v2, S.APPROVED_CANARY), 3)  # the shadow goes away
    assert registry.desired_state(M).shadow is None
    gen_after(step(registry, v2, S.CANARY), 4)
    d = registry.desired_state(M)
    assert d.canary is not None and (d.canary.version, d.canary.percent) == (v2, 1)
    gen_after(step(registry, v2, S.CANARY, 5), 5)
    assert registry.desired_state(M).canary == CanaryTarget(version=v2, percent=5)

    # A refused move changes nothing, generation included.
    refused(
        registry,
        SpecError,
        lambda: registry.transition(M, v2, S.CANARY, actor="ops", percent=11),
        match="allowed 1..10",
    )
    assert registry.desired_state(M).generation == 5

    gen_after(step(registry, v2, S.AB_TEST, 30, layer="exp-7"), 6)
    d = registry.desired_state(M)
    assert d.canary is None and d.ab_test is not None
    assert d.ab_test.layer == "exp-7"
    assert [(a.version, a.percent) for a in d.ab_test.arms] == [(v1, 70), (v2, 30)]

    gen_after(step(registry, v2, S.PROMOTED), 7)
    d = registry.desired_state(M)
    assert (d.prod_version, d.rollback_target, d.warm_versions, d.ab_test) == (
        v2,
        v1,
        [v1, v2],
        None,
    )

    # Moves that change no traffic leave the generation alone.
    v3 = version(registry).version
    for target in (S.APPROVED_SHADOW, S.ROLLED_BACK, S.ARCHIVED):
        gen_after(step(registry, v3, target), 7)

    # Archiving the deprecated version takes it out of the rollback target and warm set.
    gen_after(step(registry, v1, S.ARCHIVED), 8)
    d = registry.desired_state(M)
    assert (d.prod_version, d.rollback_target, d.warm_versions) == (v2, None, [v2])
    assert registry.all_desired_states() == [d]


def test_generation_moves_only_when_the_desired_content_changes(registry: Registry) -> None:
    new_model(registry, tier=Tier.L0)
    v1 = bootstrap_prod(registry)
    v2 = bootstrap_prod(registry)
    v3 = bootstrap_prod(registry)
    d = registry.desired_state(M)
    assert (d.generation, d.prod_version, d.rollback_target, d.warm_versions) == (
        3,
        v3,
        v2,
        [v2, v3],
    )
    # v1 is deprecated but neither the rollback target nor warm: archiving it changes nothing.
    assert step(registry, v1, S.ARCHIVED).generation == 3
    assert registry.desired_state(M) == d
    # v2 is the rollback target: archiving it is a new desire.
    assert step(registry, v2, S.ARCHIVED).generation == 4
    d = registry.desired_state(M)
    assert (d.generation, d.rollback_target, d.warm_versions) == (4, None, [v3])


def test_desired_state_unknown_slice(registry: Registry) -> None:
    new_model(registry, slices=["eu", "us"])
    with pytest.raises(
        NotFoundError, match="unknown slice 'global' for model 'ranker'; allowed: eu, us"
    ):
        registry.desired_state(M)


# ---------------------------------------------------------------------------- compare-and-set


def test_transition_is_compare_and_set(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    bootstrap_prod(registry)
    v2 = version(registry).version
    info = refused(
        registry,
        ConflictError,
        lambda: registry.transition(M, v2, S.APPROVED_SHADOW, actor="ops", expected=S.SHADOW),
    )
    assert f"{M}@{v2} on slice 'global' is OFFLINE_PASSED, not SHADOW as expected" in str(
        info.value
    )
    walk(registry, v2, LADDER[:4])
    refused(
        registry,
        ConflictError,
        lambda: registry.transition(M, v2, S.AB_TEST, actor="ops", expected="approved_canary"),
        match=r"is CANARY \(1%\), not APPROVED_CANARY as expected",
    )
    refused(
        registry,
        SpecError,
        lambda: registry.transition(M, v2, "LIVE", actor="ops"),
        match="unknown state 'LIVE'; allowed: REGISTERED, OFFLINE_PASSED, FAILED",
    )
    # States may be spelled in any case.
    assert registry.transition(M, v2, "ab_test", actor="ops", expected="canary").changed


def test_a_stale_canary_step_is_a_conflict_not_a_step_backwards(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    bootstrap_prod(registry)
    v2 = version(registry).version
    walk(registry, v2, LADDER[:4])
    # A watcher reads CANARY 1 and decides on 5; meanwhile another steps to 5 and to 10.
    seen = registry.get_version(M, v2)
    assert (seen.state["global"], seen.canary_percent["global"]) == (S.CANARY, 1)
    step(registry, v2, S.CANARY, 5)
    step(registry, v2, S.CANARY, 10)
    refused(
        registry,
        ConflictError,
        lambda: registry.transition(
            M, v2, S.CANARY, actor="watcher", expected=S.CANARY, expected_percent=1, percent=5
        ),
        match=r"is CANARY \(10%\), not CANARY \(1%\) as expected",
    )
    assert registry.get_version(M, v2).canary_percent == {"global": 10}
    res = registry.transition(
        M, v2, S.PROMOTED, actor="watcher", expected=S.CANARY, expected_percent=10
    )
    assert res.to_state is S.PROMOTED


def test_unknown_model_version_and_slice(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1, slices=["eu"])
    version(registry)
    refused(
        registry,
        NotFoundError,
        lambda: registry.transition("nope", 1, S.ARCHIVED, actor="ops"),
        match="unknown model 'nope'; create it first",
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.transition(M, 9, S.ARCHIVED, actor="ops", slice="eu"),
        match="unknown version ranker@9; the model has versions 1..1",
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.transition(M, 1, S.ARCHIVED, actor="ops", slice="us"),
        match="unknown slice 'us' for model 'ranker'; allowed: eu",
    )
    refused(
        registry,
        SpecError,
        lambda: registry.transition(M, 1, S.ARCHIVED, actor=" ", slice="eu"),
        match="an actor is required",
    )


def test_live_states_scan_the_fleet_with_percent_and_entry_time(registry: Registry) -> None:
    add_people(registry)
    new_model(registry, tier=Tier.L1)
    v1 = version(registry).version
    step(registry, v1, S.PROMOTED)
    v2 = version(registry).version
    walk(registry, v2, LADDER[:4], automated=True)
    live = registry.live_states([S.CANARY, S.PROMOTED])
    assert [(s.model_id, s.version, s.slice, s.state, s.percent) for s in live] == [
        (M, v1, "global", S.PROMOTED, None),
        (M, v2, "global", S.CANARY, 1),
    ]
    assert all(s.since.tzinfo is not None for s in live)
    assert registry.live_states(["SHADOW"]) == []
    assert {s.state for s in registry.live_states()} == {S.PROMOTED, S.CANARY}


def test_record_alert_is_an_audit_entry_on_the_models_chain(registry: Registry) -> None:
    add_people(registry)
    new_model(registry, tier=Tier.L1)
    registry.record_alert(
        M, kind="rollback_failed", detail="run abc failed", payload={"run": "abc"}
    )
    entry = registry.audit_entries(M)[-1]
    assert entry.action == "alert"
    assert entry.payload == {"kind": "rollback_failed", "detail": "run abc failed", "run": "abc"}
    assert registry.verify_audit(M).ok
    refused(registry, SpecError, lambda: registry.record_alert(M, kind=" ", detail="x"))
    refused(registry, NotFoundError, lambda: registry.record_alert("nope", kind="k", detail="x"))
