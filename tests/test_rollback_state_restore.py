"""STATE_SNAPSHOT rollback: the snapshot taken on entry, the restore on the way back.

Real stores (SQLite tables written through the application's own connection), the real
registry on SQLite and PostgreSQL, and a real process kill for the rerun test.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_registry_kit import bootstrap_prod, refused, version

from modelops.artifacts import LocalArtifactStore
from modelops.errors import StateStoreUnavailable
from modelops.registry import Registry
from modelops.rollback import RestoreRefused, enter_with_snapshots, run_rollback
from modelops.spec import RollbackClass, State, Tier
from modelops.state_stores import SqlTableStoreSpec, load_manifest

S = State
M = "ranker"
ROOT = Path(__file__).resolve().parents[1]


class App:
    """The serving process's own writes: autocommit, through a second connection."""

    def __init__(self, path: Path, table: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.table = table
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (user_id INTEGER PRIMARY KEY, clicks INTEGER)"
        )

    def put(self, user: int, clicks: int) -> None:
        self.conn.execute(
            f"INSERT INTO {self.table} VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET "
            "clicks = excluded.clicks",
            (user, clicks),
        )

    def rows(self) -> dict[int, int]:
        return dict(self.conn.execute(f"SELECT user_id, clicks FROM {self.table}").fetchall())


def store(path: Path, table: str, name: str | None = None) -> SqlTableStoreSpec:
    return SqlTableStoreSpec(name=name or table, url=f"sqlite:///{path}", table=table)


def make_model(reg: Registry, stores: list[SqlTableStoreSpec]) -> int:
    """v1 prod, v2 in APPROVED_CANARY, for a STATE_SNAPSHOT model with `stores`."""
    from test_registry_kit import datasets, spec, teams

    teams(reg)
    datasets(reg)
    s = spec(M, tier=Tier.L1, rollback_class=RollbackClass.STATE_SNAPSHOT)
    reg.create_model(s.model_copy(update={"state_stores": stores}))
    bootstrap_prod(reg)
    v2 = version(reg).version
    for st in (S.APPROVED_SHADOW, S.SHADOW, S.APPROVED_CANARY):
        reg.transition(M, v2, st, actor="ops")
    return v2


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def test_entry_to_canary_records_the_snapshot_on_the_version_and_in_the_audit(
    registry: Registry, artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    app = App(tmp_path / "state.db", "counters")
    for u in range(5):
        app.put(u, u)
    v2 = make_model(registry, [store(tmp_path / "state.db", "counters")])
    res = enter_with_snapshots(registry, artifacts, M, v2, S.CANARY, actor="ops", percent=5)
    assert res.to_state is S.CANARY
    snaps = registry.snapshots_of(M, v2)
    assert len(snaps) == 1 and snaps[0].owner_model == M
    mv = registry.get_version(M, v2)
    assert mv.rollback_snapshot_uri == snaps[0].uri
    entry = registry.audit_entries(M)[-1]
    assert entry.id == res.audit_id and entry.payload["snapshot"][0]["sha256"] == snaps[0].sha256
    manifest = load_manifest(artifacts, snaps[0].sha256)
    assert manifest.entry("counters").content_sha256 == snaps[0].stores["counters"]
    assert manifest.entry("counters").items == 5
    # A canary step is not an entry: no second snapshot.
    enter_with_snapshots(registry, artifacts, M, v2, S.CANARY, actor="ops", percent=10)
    assert len(registry.snapshots_of(M, v2)) == 1


def test_an_unreachable_store_refuses_the_transition_and_nothing_moves(
    registry: Registry, artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    gone = tmp_path / "no-such-dir" / "state.db"
    v2 = make_model(registry, [store(gone, "counters")])
    info = refused(
        registry,
        StateStoreUnavailable,
        lambda: enter_with_snapshots(registry, artifacts, M, v2, S.CANARY, actor="ops"),
    )
    msg = str(info.value)
    assert "\n" not in msg and "refused, nothing moved" in msg and "'counters'" in msg
    assert registry.state_of(M, v2) is S.APPROVED_CANARY
    assert registry.get_version(M, v2).rollback_snapshot_uri is None


def canary_with_writes(
    registry: Registry, artifacts: LocalArtifactStore, tmp_path: Path, tables: list[str]
) -> tuple[int, dict[str, App], dict[str, dict[int, int]]]:
    apps = {t: App(tmp_path / "state.db", t) for t in tables}
    for a in apps.values():
        for u in range(10):
            a.put(u, 100 + u)
    v2 = make_model(registry, [store(tmp_path / "state.db", t) for t in tables])
    before = {t: a.rows() for t, a in apps.items()}
    enter_with_snapshots(registry, artifacts, M, v2, S.CANARY, actor="ops", percent=5)
    for a in apps.values():  # the canary's writes: 2 updates of user 1, one of 2, one insert
        a.put(1, 7)
        a.put(1, 8)
        a.put(2, 9)
        a.put(50, 1)
    return v2, apps, before


def test_rollback_restores_the_snapshot_and_counts_the_reverted_writes(
    registry: Registry, artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    v2, apps, before = canary_with_writes(registry, artifacts, tmp_path, ["counters"])
    report = run_rollback(registry, artifacts, M, v2, actor="ops", reason="canary regressed")
    assert apps["counters"].rows() == before["counters"]
    [st] = report.state
    assert st.writes_after_cursor == 4
    assert st.keys_after_cursor == ['{"user_id": 1}', '{"user_id": 2}', '{"user_id": 50}']
    assert st.content_sha256 == registry.snapshots_of(M, v2)[0].stores["counters"]
    assert report.cutover.from_state == "CANARY"
    assert registry.state_of(M, v2) is S.ROLLED_BACK
    md = report.markdown()
    assert "4 writes after the snapshot's cursor reverted" in md
    assert "What rollback delivered" in md
    # A rerun is answered from the record: nothing restored again, nothing written.
    apps["counters"].put(3, 33)  # a write after the rollback
    before_rows = registry.row_counts()
    again = run_rollback(registry, artifacts, M, v2, actor="ops")
    assert again.id == report.id and again.state[0].writes_after_cursor == 4
    assert registry.row_counts() == before_rows
    assert apps["counters"].rows()[3] == 33


def tamper(
    artifacts: LocalArtifactStore, registry: Registry, v2: int, name: str
) -> tuple[Path, bytes]:
    """Corrupt store `name`'s first snapshot blob; returns its path and its good bytes."""
    manifest = load_manifest(artifacts, registry.snapshots_of(M, v2)[0].sha256)
    blob = artifacts.path_for(manifest.entry(name).blobs[0])
    good = blob.read_bytes()
    blob.chmod(0o644)
    blob.write_bytes(good + b"tampered")
    return blob, good


def test_a_snapshot_that_does_not_hash_still_cuts_traffic_over_and_leaves_the_store_untouched(
    registry: Registry, artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    """Rollbacks are never gated by state: traffic goes back to v1 regardless; the store
    whose snapshot does not verify is not touched, is named in the report and the error
    line, and the run ends failed. A rerun retries that restore only once it verifies."""
    v2, apps, before = canary_with_writes(registry, artifacts, tmp_path, ["counters"])
    blob, good = tamper(artifacts, registry, v2, "counters")
    after_canary = apps["counters"].rows()
    db_bytes = (tmp_path / "state.db").read_bytes()
    with pytest.raises(RestoreRefused) as info:
        run_rollback(registry, artifacts, M, v2, actor="ops", reason="canary regressed")
    msg = str(info.value)
    assert "\n" not in msg and "traffic is back on v1" in msg
    assert f"restore refused: {M}/counters left untouched" in msg
    assert f"expected sha256 {blob.name[:16]}" in msg
    assert f"found {hashlib.sha256(good + b'tampered').hexdigest()[:16]}" in msg
    assert "rerun the rollback job" in msg
    # Traffic is back on the last good version.
    assert registry.state_of(M, v2) is S.ROLLED_BACK
    assert registry.state_of(M, 1) is S.PROMOTED
    assert registry.desired_state(M).canary is None
    # The corrupt store is byte-identical to before.
    assert apps["counters"].rows() == after_canary
    assert (tmp_path / "state.db").read_bytes() == db_bytes
    # The report names it; the run is failed; no restore row claims anything for it.
    report = info.value.report
    assert report.failed and report.state == [] and report.writes_reverted == 0
    [ref] = report.refused
    assert (ref.store, ref.expected_sha256) == ("counters", blob.name)
    assert "Restore refused" in report.markdown() and ref.line in report.markdown()
    [run] = registry.rollback_runs_of(M)
    assert run.status == "failed" and run.report is not None
    step = run.progress[f"restore:{M}/counters"]
    assert step["status"] == "refused" and step["refusal"] == ref.line
    assert not {"mode", "verified_sha256", "writes_after_cursor"} & set(step)
    actions = [e.action for e in registry.audit_entries(M)]
    assert actions.count("rollback") == 1 and actions.count("rollback_run_step") == 0
    assert registry.audit_entries(M)[-1].payload["refused"] == [f"restore:{M}/counters"]
    # A rerun while the snapshot is still corrupt: the same refusal, nothing written.
    rows = registry.row_counts()
    with pytest.raises(RestoreRefused):
        run_rollback(registry, artifacts, M, v2, actor="ops")
    assert registry.row_counts() == rows
    assert (tmp_path / "state.db").read_bytes() == db_bytes
    # The blob repaired: the rerun restores that store, once, and the run is done.
    blob.write_bytes(good)
    again = run_rollback(registry, artifacts, M, v2, actor="ops")
    assert not again.failed and again.id == report.id
    assert apps["counters"].rows() == before["counters"]
    [st] = again.state
    assert st.writes_after_cursor == 4
    assert st.content_sha256 == registry.snapshots_of(M, v2)[0].stores["counters"]
    [run] = registry.rollback_runs_of(M)
    assert run.status == "done"
    actions = [e.action for e in registry.audit_entries(M)]
    assert actions.count("rollback") == 1 and actions.count("rollback_run_step") == 1
    assert actions.count("rollback_report") == 2
    # And once done, a rerun is answered from the record.
    apps["counters"].put(3, 33)
    rows = registry.row_counts()
    run_rollback(registry, artifacts, M, v2, actor="ops")
    assert registry.row_counts() == rows and apps["counters"].rows()[3] == 33


def test_only_the_store_whose_snapshot_fails_is_left_untouched(
    registry: Registry, artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    apps = {t: App(tmp_path / "state.db", t) for t in ("alpha", "beta")}
    for u in range(10):
        apps["alpha"].put(u, 100 + u)
        apps["beta"].put(u, 200 + u)
    v2 = make_model(registry, [store(tmp_path / "state.db", t) for t in ("alpha", "beta")])
    before = {t: a.rows() for t, a in apps.items()}
    enter_with_snapshots(registry, artifacts, M, v2, S.CANARY, actor="ops", percent=5)
    for a in apps.values():
        a.put(1, 7)
        a.put(50, 1)
    tamper(artifacts, registry, v2, "beta")
    after_canary = apps["beta"].rows()
    with pytest.raises(RestoreRefused) as info:
        run_rollback(registry, artifacts, M, v2, actor="ops")
    assert "beta" in str(info.value) and "alpha" not in str(info.value)
    assert registry.state_of(M, v2) is S.ROLLED_BACK
    assert apps["alpha"].rows() == before["alpha"]  # restored, verified by hash
    assert apps["beta"].rows() == after_canary  # untouched
    report = info.value.report
    assert [s.store for s in report.state] == ["alpha"] and report.state[0].writes_after_cursor == 2
    assert [r.store for r in report.refused] == ["beta"]
    [run] = registry.rollback_runs_of(M)
    assert run.status == "failed"
    assert run.progress[f"restore:{M}/alpha"]["status"] == "done"
    assert run.progress[f"restore:{M}/beta"]["status"] == "refused"


def test_a_store_that_cannot_be_read_at_rollback_is_refused_after_the_cutover(
    registry: Registry, artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    v2, apps, _ = canary_with_writes(registry, artifacts, tmp_path, ["counters"])
    apps["counters"].conn.close()
    (tmp_path / "state.db").rename(tmp_path / "moved.db")
    (tmp_path / "state.db").mkdir()  # the store's path cannot be opened as a database
    with pytest.raises(RestoreRefused) as info:
        run_rollback(registry, artifacts, M, v2, actor="ops")
    msg = str(info.value)
    assert "\n" not in msg and "traffic is back on v1" in msg
    assert f"restore refused: {M}/counters left untouched (the store could not be read" in msg
    assert registry.state_of(M, v2) is S.ROLLED_BACK
    assert registry.rollback_runs_of(M)[0].status == "failed"
    rows = registry.row_counts()
    with pytest.raises(RestoreRefused):  # still unreachable: refused again, nothing written
        run_rollback(registry, artifacts, M, v2, actor="ops")
    assert registry.row_counts() == rows
    (tmp_path / "state.db").rmdir()
    (tmp_path / "moved.db").rename(tmp_path / "state.db")
    again = run_rollback(registry, artifacts, M, v2, actor="ops")  # reachable: restored
    assert not again.failed and [s.store for s in again.state] == ["counters"]
    assert again.state[0].writes_after_cursor == 4


_CHILD = """
import sys, time
from pathlib import Path
from modelops.artifacts import LocalArtifactStore
from modelops.registry import Registry
from modelops.rollback import run_rollback

url, art, version, kill_at, marker = sys.argv[1:6]

def hook(step):
    if step == kill_at:
        Path(marker).write_text(step)
        time.sleep(120)

reg = Registry(url, auto_upgrade=False)
run_rollback(reg, LocalArtifactStore(art), "ranker", int(version), actor="ops", hook=hook)
print("finished")
"""


def run_child(
    url: str, art: Path, v: int, kill_at: str, tmp: Path
) -> subprocess.CompletedProcess[str] | None:
    """Run the rollback in a child; SIGKILL it when it reaches `kill_at` (None: let it end)."""
    marker = tmp / "reached"
    marker.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(art), str(v), kill_at, str(marker)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_at == "never":
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        return subprocess.CompletedProcess(proc.args, 0, out, err)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the child never reached the kill point"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return None


def test_a_run_killed_between_two_stores_resumes_without_restoring_twice(
    registry: Registry, registry_url: str, artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    v2, apps, before = canary_with_writes(registry, artifacts, tmp_path, ["alpha", "beta"])
    run_child(registry_url, artifacts.root, v2, f"recorded:restore:{M}/alpha", tmp_path)
    assert apps["alpha"].rows() == before["alpha"]  # restored and recorded before the kill
    assert apps["beta"].rows() != before["beta"]  # not reached
    [run] = registry.rollback_runs_of(M)
    assert run.status == "started"
    assert run.progress[f"restore:{M}/alpha"]["status"] == "done"
    apps["alpha"].put(1, 1234)  # written after alpha's restore: must survive the rerun
    run_child(registry_url, artifacts.root, v2, "never", tmp_path)
    assert apps["alpha"].rows()[1] == 1234
    assert apps["beta"].rows() == before["beta"]
    [run] = registry.rollback_runs_of(M)
    assert run.status == "done"
    report = run.report
    assert report is not None
    counts = {s["store"]: s["writes_after_cursor"] for s in report["state"]}
    assert counts == {"alpha": 4, "beta": 4}
    actions = [e.action for e in registry.audit_entries(M)]
    assert actions.count("rollback") == 1 and actions.count("rollback_run_started") == 1
    assert actions.count("rollback_run_step") == 2 and actions.count("rollback_report") == 1


def test_a_run_killed_after_a_restore_it_did_not_record_does_not_restore_again(
    registry: Registry, registry_url: str, artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    v2, apps, before = canary_with_writes(registry, artifacts, tmp_path, ["alpha"])
    run_child(registry_url, artifacts.root, v2, f"applied:restore:{M}/alpha", tmp_path)
    assert apps["alpha"].rows() == before["alpha"]
    [run] = registry.rollback_runs_of(M)
    assert run.progress[f"restore:{M}/alpha"]["status"] == "pending"
    # Written after the killed attempt's restore committed: the rerun must not revert it,
    # although the store no longer hashes to the snapshot (the run's commit marker decides).
    apps["alpha"].put(7, 777)
    run_child(registry_url, artifacts.root, v2, "never", tmp_path)
    [run] = registry.rollback_runs_of(M)
    step = run.progress[f"restore:{M}/alpha"]
    assert (run.status, step["status"], step["mode"]) == (
        "done",
        "done",
        "completed_by_earlier_attempt",
    )
    assert step["writes_after_cursor"] == 4  # counted before the killed attempt reverted them
    assert json.dumps(run.report)  # the report was written
    assert apps["alpha"].rows() == {**before["alpha"], 7: 777}


def test_a_directory_store_is_restored_and_its_differing_files_named(
    registry: Registry, artifacts: LocalArtifactStore, tmp_path: Path
) -> None:
    from modelops.state_stores import DirectoryStoreSpec

    root = tmp_path / "emb-cache"
    root.mkdir()
    for i in range(4):
        (root / f"shard-{i}.bin").write_bytes(bytes([i]) * 64)
    v2 = make_model(registry, [DirectoryStoreSpec(name="cache", path=str(root))])
    enter_with_snapshots(registry, artifacts, M, v2, S.CANARY, actor="ops", percent=5)
    (root / "shard-1.bin").write_bytes(b"canary")
    (root / "shard-3.bin").unlink()
    (root / "new.bin").write_bytes(b"added")
    report = run_rollback(registry, artifacts, M, v2, actor="ops")
    assert sorted(p.name for p in root.iterdir()) == [f"shard-{i}.bin" for i in range(4)]
    assert (root / "shard-1.bin").read_bytes() == bytes([1]) * 64
    [st] = report.state
    assert st.writes_after_cursor is None  # no change log: it does not claim a write count
    assert sorted(st.keys_after_cursor) == ["new.bin", "shard-1.bin", "shard-3.bin"]
    assert "the 3 items that differed were rewritten" in report.markdown()
