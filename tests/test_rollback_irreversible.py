"""IRREVERSIBLE rollback: the five-step report, NEEDS_RETRAIN, the decay window, cascades.

The fleet: `embedder` (IRREVERSIBLE; its outputs feed the feature `user_emb`) with three
dependents: `ranker` reads `user_emb` in its contract (trained on the embedder's outputs),
`retrieval` keeps an index built from its outputs (STATE_SNAPSHOT, a real SQLite table),
and `dashboard` only consumes it (L2).
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from test_registry_kit import (
    add_people,
    approve,
    bootstrap_prod,
    contract,
    datasets,
    refused,
    spec,
    version,
)

from modelops.artifacts import LocalArtifactStore
from modelops.errors import ApprovalRequired
from modelops.registry import Registry
from modelops.rollback import RestoreRefused, enter_with_snapshots, run_rollback
from modelops.spec import RollbackClass, State, Tier
from modelops.state_stores import SqlTableStoreSpec

S = State
E = "embedder"


class Fleet:
    def __init__(self, reg: Registry, tmp: Path) -> None:
        self.reg = reg
        self.artifacts = LocalArtifactStore(tmp / "artifacts")
        self.db = sqlite3.connect(tmp / "index.db", isolation_level=None)
        self.db.execute("CREATE TABLE idx (item INTEGER PRIMARY KEY, vec TEXT)")
        for i in range(20):
            self.db.execute("INSERT INTO idx VALUES (?, ?)", (i, f"v1-{i}"))
        add_people(reg)
        datasets(reg)
        reg.create_model(
            spec(
                E,
                rollback_class=RollbackClass.IRREVERSIBLE,
                downstream=["ranker", "retrieval", "dashboard", "reporting"],
            ).model_copy(update={"feeds_features": ["user_emb"]})
        )
        reg.create_model(spec("ranker"))
        store = SqlTableStoreSpec(name="index", url=f"sqlite:///{tmp / 'index.db'}", table="idx")
        reg.create_model(
            spec("retrieval", rollback_class=RollbackClass.STATE_SNAPSHOT).model_copy(
                update={"state_stores": [store]}
            )
        )
        reg.create_model(spec("dashboard"))
        reg.create_model(spec("reporting", tier=Tier.L2))  # nothing serving yet
        ref = reg.register_contract(contract("ranker.features", 1, "user_emb", "country"))
        self.ranker_v = bootstrap_prod(reg, "ranker", contract_ref=ref)
        self.dash_v = bootstrap_prod(reg, "dashboard")
        self.retrieval_v = bootstrap_prod(reg, "retrieval")
        self.v1 = bootstrap_prod(reg, E)
        self.v2 = version(reg, E).version
        for st in (S.APPROVED_SHADOW, S.SHADOW, S.APPROVED_CANARY):
            reg.transition(E, self.v2, st, actor="ops")
        enter_with_snapshots(reg, self.artifacts, E, self.v2, S.CANARY, actor="ops", percent=5)
        reg.transition(E, self.v2, S.PROMOTED, actor="ops")
        self.snapshot_rows = self.rows()
        # The index is rebuilt from v2's embeddings: two items rewritten, one added.
        self.db.execute("UPDATE idx SET vec = 'v2-3' WHERE item = 3")
        self.db.execute("UPDATE idx SET vec = 'v2-4' WHERE item = 4")
        self.db.execute("INSERT INTO idx VALUES (99, 'v2-99')")

    def rows(self) -> dict[int, str]:
        return dict(self.db.execute("SELECT item, vec FROM idx").fetchall())


@pytest.fixture
def fleet(registry: Registry, tmp_path: Path) -> Fleet:
    return Fleet(registry, tmp_path)


def test_the_five_step_report(fleet: Fleet, registry: Registry) -> None:
    f = fleet
    assert set(registry.entry_snapshots(E, f.v2)) == {"retrieval"}
    report = run_rollback(
        registry, f.artifacts, E, f.v2, actor="ops", reason="embedding drift broke recall"
    )
    # 1. cutover: v2 out, v1 back, timed.
    assert (report.cutover.from_state, report.cutover.restored_version) == ("PROMOTED", f.v1)
    assert report.cutover.registry_s >= 0
    assert registry.desired_state(E).prod_version == f.v1
    # 2. the fed feature, contaminated since v2's promotion.
    [feat] = report.contaminated_features
    promoted_at = registry.promoted_since(E, f.v2, "global")
    assert feat == {"feature": "user_emb", "since": promoted_at}
    assert [c.feature for c in registry.contaminated("user_emb")] == ["user_emb"]
    # 3. the model trained on its outputs: NEEDS_RETRAIN, not rolled back.
    assert [d["model_id"] for d in report.needs_retrain] == ["ranker"]
    assert [m.model_id for m in registry.needs_retrain()] == ["ranker"]
    assert registry.state_of("ranker", f.ranker_v) is S.PROMOTED
    # 4. the downstream index, back to its pre-promotion snapshot.
    [ds] = report.downstream_state
    assert (ds.owner_model, ds.store, ds.writes_after_cursor) == ("retrieval", "index", 3)
    assert f.rows() == f.snapshot_rows
    assert registry.state_of("retrieval", f.retrieval_v) is S.PROMOTED  # state, not traffic
    # 5. the decay window, with its reason.
    w = report.decay_window
    assert w is not None and w["days"] == 14.0 and w["relax_factor"] == 2.0
    now = registry.clock()
    assert registry.decay_window(E, at=now + timedelta(days=13)) is not None
    assert registry.decay_window(E, at=now + timedelta(days=15)) is None
    assert "spurious rollback" in registry.decay_window(E, at=now).reason  # type: ignore[union-attr]
    # The consumer is only warned.
    assert report.warned == ["dashboard", "reporting"]
    assert registry.state_of("dashboard", f.dash_v) is S.PROMOTED
    md = report.markdown()
    for heading in (
        "## 1. Traffic cutover",
        "## 2. Features this model's outputs feed",
        "## 3. Downstream models trained on its outputs",
        "## 4. Downstream snapshotted state",
        "## 5. Post-rollback monitoring",
        "## What rollback delivered",
    ):
        assert heading in md
    assert "v1 is running on a shifted input distribution" in md
    assert md.rstrip().splitlines()[-1].startswith("- audit trail complete")
    assert report.document()["sha256"] == registry.audit_entries(E)[-1].payload["report_sha256"]


def test_a_new_version_clears_needs_retrain(fleet: Fleet, registry: Registry) -> None:
    run_rollback(registry, fleet.artifacts, E, fleet.v2, actor="ops")
    assert [m.model_id for m in registry.needs_retrain("ranker")] == ["ranker"]
    version(registry, "ranker")
    assert registry.needs_retrain("ranker") == []


def serve_reporting(reg: Registry) -> int:
    """Put a version of the L2 dependent `reporting` in prod: a cascade would roll it back."""
    v = version(reg, "reporting").version
    approve(reg, "reporting", v, "safety-lead", target=S.PROMOTED)
    reg.transition("reporting", v, S.PROMOTED, actor="rank-eng", expected=S.OFFLINE_PASSED)
    return v


def test_a_cascade_without_approvals_is_refused_whole(fleet: Fleet, registry: Registry) -> None:
    serve_reporting(registry)
    before_rows = fleet.rows()
    info = refused(
        registry,
        ApprovalRequired,
        lambda: run_rollback(registry, fleet.artifacts, E, fleet.v2, actor="ops", cascade=True),
    )
    msg = str(info.value)
    assert "\n" not in msg and "reporting (tier L2) needs 1 approval" in msg
    assert "dashboard" not in msg  # L1: no approval needed
    assert registry.state_of(E, fleet.v2) is S.PROMOTED
    assert fleet.rows() == before_rows


def test_a_corrupt_downstream_snapshot_still_cuts_over_and_marks_but_leaves_the_index(
    fleet: Fleet, registry: Registry
) -> None:
    """Rollbacks are never gated by state: with the index's snapshot manifest corrupt, v1
    still serves, the marks, flags and decay window are still written, and the index is
    left exactly as v2 left it, named in the report and the error line."""
    f = fleet
    snap = registry.entry_snapshots(E, f.v2)["retrieval"]
    manifest = f.artifacts.path_for(snap.sha256)
    manifest.chmod(0o644)
    manifest.write_bytes(manifest.read_bytes()[:-1])
    v2_rows = f.rows()
    with pytest.raises(RestoreRefused) as info:
        run_rollback(registry, f.artifacts, E, f.v2, actor="ops")
    msg = str(info.value)
    assert "\n" not in msg and f"traffic is back on v{f.v1}" in msg
    assert "restore refused: retrieval/index left untouched (its snapshot manifest" in msg
    assert f"expected sha256 {snap.sha256[:16]}" in msg
    assert registry.desired_state(E).prod_version == f.v1
    assert registry.state_of(E, f.v2) is S.ROLLED_BACK
    assert f.rows() == v2_rows
    report = info.value.report
    assert report.downstream_state == [] and [r.store for r in report.refused] == ["index"]
    assert [m.model_id for m in registry.needs_retrain()] == ["ranker"]
    assert registry.decay_window(E, at=registry.clock()) is not None
    assert "state NOT restored: retrieval/index" in report.markdown()
    [run] = registry.rollback_runs_of(E)
    assert run.status == "failed"
    assert run.progress["restore:retrieval/index"]["status"] == "refused"
