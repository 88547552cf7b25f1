"""Offline gate results: recorded once per version; the same result again is a redelivery,
a different one is a conflict that names both, and only finite numbers are measurements."""

from __future__ import annotations

import math

import pytest
from test_registry_kit import new_model, refused, version

from modelops.errors import ConflictError, IllegalTransition, SpecError
from modelops.registry import Registry
from modelops.spec import State, Tier

S = State
M = "ranker"


def unchanged(reg: Registry, call):  # type: ignore[no-untyped-def]
    before = reg.row_counts()
    out = call()
    assert reg.row_counts() == before
    return out


def test_the_same_result_again_is_a_redelivery(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    v = version(registry, passed=None).version
    results = {"auc": 0.91, "slices": {"eu": {"auc": 0.9}}, "gates": [True, 0.5]}
    assert len(registry.record_gate_result(M, v, passed=True, results=results)) == 1
    again = {"gates": [True, 0.5], "slices": {"eu": {"auc": 0.9}}, "auc": 0.91}  # key order
    redelivered = unchanged(
        registry, lambda: registry.record_gate_result(M, v, passed=True, results=again)
    )
    assert redelivered == []
    # Still a redelivery once the version has moved on.
    registry.transition(M, v, S.APPROVED_SHADOW, actor="ops")
    redelivered = unchanged(
        registry, lambda: registry.record_gate_result(M, v, passed=True, results=results)
    )
    assert redelivered == []


def test_a_different_result_is_a_conflict_naming_both(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    v = version(registry, passed=None).version
    registry.record_gate_result(M, v, passed=True, results={"auc": 0.91})
    info = refused(
        registry,
        ConflictError,
        lambda: registry.record_gate_result(M, v, passed=True, results={"auc": 0.71}),
    )
    assert str(info.value) == (
        f'conflict: {M}@{v} already has a gate result, passed {{"auc":0.91}}; this one is '
        'passed {"auc":0.71}; a version is gated once: register a new version to gate again'
    )
    info = refused(
        registry,
        ConflictError,
        lambda: registry.record_gate_result(M, v, passed=False, results={"auc": 0.91}),
    )
    assert 'this one is failed {"auc":0.91}' in str(info.value)
    registry.transition(M, v, S.APPROVED_SHADOW, actor="ops")
    refused(
        registry,
        ConflictError,
        lambda: registry.record_gate_result(M, v, passed=False, results={}),
        match="already has a gate result, passed",
    )
    assert registry.get_version(M, v).state_history[1].gate_results == {"auc": 0.91}


def test_a_version_that_left_registered_ungated_takes_no_result(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    v = version(registry, passed=None).version
    registry.transition(M, v, S.ARCHIVED, actor="ops")
    refused(
        registry,
        IllegalTransition,
        lambda: registry.record_gate_result(M, v, passed=True, results={}),
        match="gate results apply only to REGISTERED versions; it is global=ARCHIVED",
    )


@pytest.mark.parametrize(
    ("results", "key", "value"),
    [
        ({"auc": math.nan}, "auc", "nan"),
        ({"auc": math.inf}, "auc", "inf"),
        ({"auc": 0.9, "loss": -math.inf}, "loss", "-inf"),
        ({"slo": {"p99_ms": math.inf}}, "slo.p99_ms", "inf"),
        ({"gates": [{"value": 1.0}, {"value": math.nan}]}, "gates[1].value", "nan"),
    ],
)
def test_non_finite_values_are_refused_naming_the_key(
    registry: Registry, results: dict[str, object], key: str, value: str
) -> None:
    new_model(registry, tier=Tier.L1)
    v = version(registry, passed=None).version
    info = refused(
        registry,
        SpecError,
        lambda: registry.record_gate_result(M, v, passed=True, results=results),
    )
    assert str(info.value) == (
        f"gate results: {key} is {value}, not a finite number; allowed: finite numbers"
    )
