"""Continuous learners (C2): hard checkpoints on the weight-refresh path, retention, and
rollback to the checkpoint at time T. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_registry_kit import add_people, approve, contract, refused, spec, teams

from modelops.artifacts import LocalArtifactStore
from modelops.errors import IllegalTransition, IntegrityError, NotFoundError, SpecError
from modelops.registry import Candidate, DatasetInput, Registry
from modelops.spec import ContinuousLearning, ModelSpec, State, Tier, VersionMeta

if TYPE_CHECKING:  # a fixture's type; `conftest` is not importable by name under xdist
    from conftest import FakeClock

M = "ctr"
TRAIN = DatasetInput(name="impressions", version=1, uri="s3://data/impressions/1")
EVALS = DatasetInput(name="impressions-eval", version=1, uri="s3://data/impressions-eval/1")
K = 3


def learner(tier: Tier = Tier.L0, keep: int = K, slices: list[str] | None = None) -> ModelSpec:
    base = spec(M, tier=tier, slices=slices).model_dump()
    base["continuous"] = {"checkpoint_every_hours": 6, "retain_checkpoints": keep}
    return ModelSpec.model_validate(base)


def checkpoint(
    reg: Registry, clock: FakeClock, store: LocalArtifactStore, n: int, **kw: Any
) -> Candidate:
    """The n-th checkpoint, published 6 h after the previous one (the clock moves with it)."""
    clock.advance(hours=6)
    ref = store.put_bytes(f"weights of checkpoint {n}".encode())
    return reg.register_checkpoint(
        kw.pop("model_spec", learner()),
        checkpoint_at=kw.pop("at", clock.now),
        weights_hash=ref.sha256,
        weights_uri=ref.uri,
        training_data=TRAIN,
        eval_set=EVALS,
        contract=contract(),
        meta=VersionMeta(eval_metrics={"auc": 0.9}),
        ensure_team_by="system:fleet",
        **kw,
    )


def promote(reg: Registry, v: int, slice_: str = "global") -> None:
    """L0's automated path: gates pass, then straight to prod (the old prod is DEPRECATED)."""
    reg.record_gate_result(M, v, passed=True, results={"auc": 0.9})
    reg.transition(
        M,
        v,
        State.PROMOTED,
        actor="system",
        expected=State.OFFLINE_PASSED,
        automated=True,
        slice=slice_,
    )


def states(reg: Registry) -> dict[int, State]:
    return {c.version: c.state for c in reg.checkpoints(M)}


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def test_spec_validates_the_cadence_and_the_class() -> None:
    with pytest.raises(ValueError, match="does not divide a day"):
        ContinuousLearning(checkpoint_every_hours=5, retain_checkpoints=3)
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        ContinuousLearning(checkpoint_every_hours=6, retain_checkpoints=1)
    with pytest.raises(ValueError, match="allowed for model_class 'dnn' at tiers L0-L2"):
        learner(tier=Tier.L3)


def test_k_plus_two_checkpoints_archive_the_oldest_and_keep_prod(
    registry: Registry, clock: FakeClock, store: LocalArtifactStore
) -> None:
    teams(registry)
    vs = []
    for n in range(1, K + 3):
        vs.append(checkpoint(registry, clock, store, n).version.version)
        promote(registry, vs[-1])
    # At the last registration prod was v4 and its rollback target v3: v1 and v2 are past K.
    assert states(registry) == {
        vs[0]: State.ARCHIVED,
        vs[1]: State.ARCHIVED,
        vs[2]: State.DEPRECATED,
        vs[3]: State.DEPRECATED,
        vs[4]: State.PROMOTED,
    }
    assert registry.desired_state(M).prod_version == vs[4]
    cps = registry.checkpoints(M)
    assert [c.checkpoint_at for c in cps] == sorted(c.checkpoint_at for c in cps)
    assert [registry.get_version(M, v).parent_model_version for v in vs] == [None, *vs[:-1]]


def test_retention_never_archives_prod_or_the_rollback_target(
    registry: Registry, clock: FakeClock, store: LocalArtifactStore
) -> None:
    teams(registry)
    first = checkpoint(registry, clock, store, 1).version.version
    promote(registry, first)
    second = checkpoint(registry, clock, store, 2).version.version
    promote(registry, second)  # first is now the rollback target
    later = [checkpoint(registry, clock, store, n).version.version for n in range(3, K + 5)]
    got = states(registry)
    assert got[first] is State.DEPRECATED and got[second] is State.PROMOTED
    # Unpromoted checkpoints past the newest K are archived; the newest K are kept.
    assert [got[v] for v in later] == [State.ARCHIVED] * 2 + [State.REGISTERED] * K


def test_a_checkpoints_bytes_are_immutable_once_registered(
    registry: Registry, clock: FakeClock, store: LocalArtifactStore
) -> None:
    teams(registry)
    first = checkpoint(registry, clock, store, 1)
    at = first.version.checkpoint_at
    assert at is not None and at <= clock.now
    # A redelivery of that checkpoint time with other bytes is the same version, bytes unchanged.
    again = checkpoint(registry, clock, store, 99, at=at)
    assert (again.created, again.version.version) == (False, first.version.version)
    assert registry.get_version(M, first.version.version).weights_hash == first.version.weights_hash
    assert store.read_bytes(first.version.weights_hash) == b"weights of checkpoint 1"
    # The store is content-addressed: a blob changed in place is never handed out.
    store.path_for(first.version.weights_hash).write_bytes(b"mutated online")
    with pytest.raises(IntegrityError):
        store.read_bytes(first.version.weights_hash)


def test_rollback_to_t_serves_the_newest_promoted_checkpoint_at_or_before_t(
    registry: Registry, clock: FakeClock, store: LocalArtifactStore
) -> None:
    teams(registry)
    cps = []
    for n in range(1, 5):
        cand = checkpoint(registry, clock, store, n)
        promote(registry, cand.version.version)
        cps.append(cand.version)
    v2, v4 = cps[1].version, cps[3].version
    assert cps[1].checkpoint_at is not None
    t = cps[1].checkpoint_at + timedelta(hours=5)  # after checkpoint 2, before checkpoint 3
    before = len(registry.audit_entries(M))
    res = registry.rollback_to_checkpoint(M, t, actor="oncall")
    assert (res.version, res.changed) == (v2, True)
    assert [s.version for s in res.steps] == [v4, cps[2].version]
    assert all(s.to_state is State.ROLLED_BACK for s in res.steps)
    assert len(registry.audit_entries(M)) == before + 2  # one audited rollback per step
    assert registry.desired_state(M).prod_version == v2
    assert states(registry)[cps[0].version] is State.ARCHIVED  # past K at checkpoint 4
    # Again: nothing to do, nothing written.
    again = registry.rollback_to_checkpoint(M, t, actor="oncall")
    assert (again.version, again.changed, again.steps) == (v2, False, [])
    assert len(registry.audit_entries(M)) == before + 2


def test_rollback_passes_over_rolled_back_and_unpromoted_checkpoints(
    registry: Registry, clock: FakeClock, store: LocalArtifactStore
) -> None:
    teams(registry)
    c1 = checkpoint(registry, clock, store, 1).version
    promote(registry, c1.version)
    c2 = checkpoint(registry, clock, store, 2).version  # never promoted
    c3 = checkpoint(registry, clock, store, 3).version
    promote(registry, c3.version)
    assert c2.checkpoint_at is not None
    res = registry.rollback_to_checkpoint(M, c2.checkpoint_at, actor="oncall")
    assert res.version == c1.version
    # c3 is ROLLED_BACK now: a rollback to its time keeps that verdict and serves c1.
    assert c3.checkpoint_at is not None
    assert registry.rollback_to_checkpoint(M, c3.checkpoint_at, actor="oncall").changed is False


def test_bad_input_is_one_line_and_writes_nothing(
    registry: Registry, clock: FakeClock, store: LocalArtifactStore
) -> None:
    teams(registry)
    first = checkpoint(registry, clock, store, 1).version
    promote(registry, first.version)
    assert first.checkpoint_at is not None
    cases: list[tuple[type[BaseException], Any, str]] = [
        (
            NotFoundError,
            lambda: registry.rollback_to_checkpoint(
                M, first.checkpoint_at - timedelta(seconds=1), actor="oncall"
            ),
            "no checkpoint of ctr at or before",
        ),
        (
            SpecError,
            lambda: registry.rollback_to_checkpoint(
                M, clock.now + timedelta(days=1), actor="oncall"
            ),
            "is in the future",
        ),
        (
            SpecError,
            lambda: registry.rollback_to_checkpoint(M, datetime(2026, 1, 1), actor="oncall"),
            "has no timezone",
        ),
        (
            NotFoundError,
            lambda: registry.rollback_to_checkpoint(M, clock.now, actor="oncall", slice="eu"),
            "unknown slice 'eu'",
        ),
        (
            SpecError,
            lambda: checkpoint(
                registry, clock, store, 2, at=first.checkpoint_at - timedelta(hours=1)
            ),
            "not after ctr's newest checkpoint",
        ),
        (
            SpecError,
            lambda: checkpoint(registry, clock, store, 3, at=clock.now + timedelta(days=1)),
            "is in the future",
        ),
    ]
    for error, call, match in cases:
        info = refused(registry, error, call, match)
        assert "\n" not in str(info.value)
    registry.create_model(spec("plain"))
    info = refused(
        registry,
        SpecError,
        lambda: registry.rollback_to_checkpoint("plain", clock.now, actor="oncall"),
        "'plain' is not a continuous learner",
    )
    assert "\n" not in str(info.value)


def test_an_archived_checkpoint_is_refused_not_skipped(
    registry: Registry, clock: FakeClock, store: LocalArtifactStore
) -> None:
    teams(registry)
    vs = []
    for n in range(1, K + 3):
        vs.append(checkpoint(registry, clock, store, n).version)
        promote(registry, vs[-1].version)
    assert vs[0].checkpoint_at is not None
    refused(
        registry,
        IllegalTransition,
        lambda: registry.rollback_to_checkpoint(M, vs[0].checkpoint_at, actor="oncall"),
        "is ARCHIVED, past retention",
    )


def test_a_checkpoint_on_l2_is_a_weight_refresh_promoted_without_approvals(
    registry: Registry, clock: FakeClock, store: LocalArtifactStore
) -> None:
    """Same feature contract as prod: the automated path, shadow and canary, no human gate."""
    teams(registry)
    l2 = learner(tier=Tier.L2)
    add_people(registry)
    first = checkpoint(registry, clock, store, 1, model_spec=l2).version.version
    registry.record_gate_result(M, first, passed=True, results={"auc": 0.9})
    approve(registry, M, first, "rank-lead", target=State.PROMOTED)  # the first is human-gated
    registry.transition(M, first, State.PROMOTED, actor="ops", expected=State.OFFLINE_PASSED)
    second = checkpoint(registry, clock, store, 2, model_spec=l2)
    assert second.prod_versions == {"global": first}
    v = second.version.version
    registry.record_gate_result(M, v, passed=True, results={"auc": 0.9})
    path = [
        (State.OFFLINE_PASSED, State.APPROVED_SHADOW),
        (State.APPROVED_SHADOW, State.SHADOW),
        (State.SHADOW, State.APPROVED_CANARY),
        (State.APPROVED_CANARY, State.CANARY),
        (State.CANARY, State.PROMOTED),
    ]
    for frm, to in path:
        registry.transition(M, v, to, actor="system", expected=frm, automated=True)
    assert states(registry) == {first: State.DEPRECATED, v: State.PROMOTED}


def test_a_live_candidate_is_rolled_back_first(
    registry: Registry, clock: FakeClock, store: LocalArtifactStore
) -> None:
    teams(registry)
    c1 = checkpoint(registry, clock, store, 1).version
    promote(registry, c1.version)
    c2 = checkpoint(registry, clock, store, 2).version
    promote(registry, c2.version)
    c3 = checkpoint(registry, clock, store, 3).version.version
    registry.record_gate_result(M, c3, passed=True, results={"auc": 0.9})
    registry.transition(M, c3, State.APPROVED_SHADOW, actor="system", expected="OFFLINE_PASSED")
    registry.transition(M, c3, State.SHADOW, actor="system", expected=State.APPROVED_SHADOW)
    assert c1.checkpoint_at is not None
    res = registry.rollback_to_checkpoint(M, c1.checkpoint_at, actor="oncall")
    assert [(s.version, s.from_state) for s in res.steps] == [
        (c3, State.SHADOW),
        (c2.version, State.PROMOTED),
    ]
    assert registry.desired_state(M).prod_version == c1.version
    assert registry.desired_state(M).shadow is None
