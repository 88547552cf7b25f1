"""Rollback as a compare-and-set, decided and done in one locked transaction.

A rollback either names the version it rolls back (`expected_version`, optionally with the
state it expects it in) or is bare. A bare rollback undoes the slice's latest serving change
once: run again (or by a second responder at the same moment) it answers "already rolled
back" and writes nothing, because a repeat cannot be told from a concurrent duplicate. A
second, deliberate rollback names its version.
"""

from __future__ import annotations

from test_registry_kit import bootstrap_prod, new_model, refused, version

from modelops.errors import ConflictError, IllegalTransition, NotFoundError
from modelops.registry import Registry
from modelops.spec import State, Tier

S = State
M = "ranker"


def states(reg: Registry, sl: str = "global") -> dict[int, State]:
    return {v.version: v.state[sl] for v in reg.list_versions(M)}


def unchanged(reg: Registry, call):  # type: ignore[no-untyped-def]
    """An idempotent answer: exactly nothing is written."""
    before = reg.row_counts()
    out = call()
    assert reg.row_counts() == before
    return out


def prod_and_shadow(reg: Registry) -> tuple[int, int, int]:
    """v1 deprecated (the rollback target), v2 prod, v3 in SHADOW."""
    new_model(reg, tier=Tier.L0)
    v1 = bootstrap_prod(reg)
    v2 = version(reg).version
    reg.transition(M, v2, S.PROMOTED, actor="ops", expected=S.OFFLINE_PASSED)
    v3 = version(reg).version
    reg.transition(M, v3, S.APPROVED_SHADOW, actor="ops")
    reg.transition(M, v3, S.SHADOW, actor="ops")
    return v1, v2, v3


def test_a_repeated_bare_rollback_does_not_roll_back_prod(registry: Registry) -> None:
    v1, v2, v3 = prod_and_shadow(registry)
    first = registry.rollback(M, actor="oncall-a")
    assert (first.version, first.from_state, first.changed) == (v3, S.SHADOW, True)
    audit_id = registry.audit_entries(M)[-1].id
    assert first.audit_id == audit_id

    again = unchanged(registry, lambda: registry.rollback(M, actor="oncall-b"))
    assert (again.version, again.to_state, again.changed) == (v3, S.ROLLED_BACK, False)
    assert again.audit_id == audit_id
    assert "already rolled back by oncall-a" in again.note
    assert f"--version {v2}" in again.note  # how to roll back prod on purpose
    assert states(registry) == {v1: S.DEPRECATED, v2: S.PROMOTED, v3: S.ROLLED_BACK}
    assert registry.desired_state(M).prod_version == v2


def test_a_bare_rollback_of_prod_happens_once(registry: Registry) -> None:
    new_model(registry, tier=Tier.L0)
    v1 = bootstrap_prod(registry)
    v2 = bootstrap_prod(registry)
    res = registry.rollback(M, actor="ops")
    assert (res.version, res.restored_version, res.changed) == (v2, v1, True)
    again = unchanged(registry, lambda: registry.rollback(M, actor="ops"))
    assert (again.version, again.restored_version, again.changed) == (v2, v1, False)
    assert states(registry) == {v1: S.PROMOTED, v2: S.ROLLED_BACK}
    # Rolling back the restored prod as well is a decision that names it.
    res = registry.rollback(M, actor="ops", expected_version=v1, expected=S.PROMOTED)
    assert (res.version, res.restored_version, res.changed) == (v1, None, True)
    assert registry.desired_state(M).prod_version is None


def test_a_new_serving_change_makes_a_bare_rollback_act_again(registry: Registry) -> None:
    v1, v2, v3 = prod_and_shadow(registry)
    registry.rollback(M, actor="ops")
    v4 = version(registry).version
    registry.transition(M, v4, S.APPROVED_SHADOW, actor="ops")
    registry.transition(M, v4, S.SHADOW, actor="ops")
    res = registry.rollback(M, actor="ops")
    assert (res.version, res.from_state, res.changed) == (v4, S.SHADOW, True)
    assert states(registry)[v2] is S.PROMOTED


def test_a_named_rollback_is_idempotent(registry: Registry) -> None:
    v1, v2, v3 = prod_and_shadow(registry)
    res = registry.rollback(M, actor="ops", expected_version=v2)
    assert (res.version, res.from_state, res.restored_version) == (v2, S.PROMOTED, v1)
    again = unchanged(registry, lambda: registry.rollback(M, actor="ops", expected_version=v2))
    assert (again.version, again.changed, again.audit_id) == (v2, False, res.audit_id)
    # The shadow still runs against the restored prod.
    assert states(registry) == {v1: S.PROMOTED, v2: S.ROLLED_BACK, v3: S.SHADOW}


def test_a_named_rollback_of_a_version_that_is_not_live_is_a_conflict(
    registry: Registry,
) -> None:
    v1, v2, v3 = prod_and_shadow(registry)
    info = refused(
        registry,
        ConflictError,
        lambda: registry.rollback(M, actor="ops", expected_version=v1),
    )
    assert str(info.value) == (
        f"conflict: {M}@{v1} on slice 'global' is DEPRECATED, not in a state a rollback "
        "applies to (APPROVED_SHADOW, SHADOW, APPROVED_CANARY, CANARY, AB_TEST, PROMOTED); "
        "re-read and retry"
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.rollback(M, actor="ops", expected_version=9),
        match="unknown version ranker@9",
    )


def test_an_expected_state_makes_rollback_a_compare_and_set(registry: Registry) -> None:
    v1, v2, v3 = prod_and_shadow(registry)
    info = refused(
        registry,
        ConflictError,
        lambda: registry.rollback(M, actor="ops", expected_version=v3, expected=S.CANARY),
    )
    assert f"{M}@{v3} on slice 'global' is SHADOW (100%), not CANARY as expected" in str(
        info.value
    )
    res = registry.rollback(M, actor="ops", expected_version=v3, expected=S.SHADOW)
    assert res.changed and res.from_state is S.SHADOW
    # The same compare-and-set again no longer holds: a conflict naming the state now.
    info = refused(
        registry,
        ConflictError,
        lambda: registry.rollback(M, actor="ops", expected_version=v3, expected=S.SHADOW),
    )
    assert "is ROLLED_BACK, not SHADOW as expected" in str(info.value)


def test_an_expected_state_without_a_version_names_the_slices_holder(
    registry: Registry,
) -> None:
    v1, v2, v3 = prod_and_shadow(registry)
    res = registry.rollback(M, actor="ops", expected=S.SHADOW)
    assert (res.version, res.changed) == (v3, True)
    info = refused(
        registry, ConflictError, lambda: registry.rollback(M, actor="ops", expected="SHADOW")
    )
    assert str(info.value) == (
        f"conflict: no version of {M} is in SHADOW on slice 'global' (live: "
        f"{v1} DEPRECATED, {v2} PROMOTED); re-read and retry"
    )
    refused(
        registry,
        IllegalTransition,
        lambda: registry.rollback(M, actor="ops", expected=S.APPROVED_CANARY),
        match="name the version",
    )


def test_a_bare_rollback_with_nothing_live_is_refused(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    version(registry)
    refused(
        registry,
        IllegalTransition,
        lambda: registry.rollback(M, actor="ops"),
        match="nothing to roll back",
    )
