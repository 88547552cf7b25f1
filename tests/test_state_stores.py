"""Externalized state stores: snapshot on the way in, restore verified by hash on the way back.

SQL tables run on SQLite and on the real PostgreSQL server (`pg_url`, which fails instead
of skipping under MODELOPS_REQUIRE_PG); S3 runs over HTTP against a moto server. Nothing is
mocked: the application's writes are real writes through a second connection.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelops.artifacts import LocalArtifactStore
from modelops.errors import IntegrityError, SpecError, StateStoreUnavailable
from modelops.spec import ModelSpec
from modelops.state_stores import (
    DirectoryStoreSpec,
    S3PrefixStoreSpec,
    SnapshotManifest,
    SqlTableStoreSpec,
    changes_since_snapshot,
    install_change_logs,
    load_manifest,
    open_state_store,
    restore_snapshot,
    snapshot_sha256,
    snapshot_stores,
)
from modelops.yamlio import load_yaml_model

# ------------------------------------------------------------------------------ fixtures


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def artifacts(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


class AppDB:
    """The application's own connection: autocommit writes, as a serving process makes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        if self.dialect == "sqlite":
            path = url[len("sqlite:///") :]
            self.conn: Any = sqlite3.connect(path, isolation_level=None, timeout=60,
                                             check_same_thread=False)
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)

    def sql(self, text: str) -> str:
        return text if self.dialect == "sqlite" else text.replace("?", "%s")

    def args(self, params: tuple[Any, ...]) -> Any:
        # psycopg parses placeholders only when given parameters; '%' is then an operator.
        return params if self.dialect == "sqlite" or params else None

    def run(self, text: str, params: tuple[Any, ...] = ()) -> None:
        self.conn.execute(self.sql(text), self.args(params))

    def many(self, text: str, rows: list[tuple[Any, ...]]) -> None:
        if self.dialect == "sqlite":
            self.conn.executemany(text, rows)
        else:
            with self.conn.cursor() as cur:
                cur.executemany(self.sql(text), rows)

    def rows(self, text: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(self.sql(text), self.args(params)).fetchall()]

    def one(self, text: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(self.sql(text), self.args(params)).fetchone()[0]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "state.db"
        sqlite3.connect(path).close()
        return f"sqlite:///{path}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def app(db_url: str) -> Iterator[AppDB]:
    db = AppDB(db_url)
    try:
        yield db
    finally:
        db.close()


def make_table(app: AppDB, rows: int = 200) -> SqlTableStoreSpec:
    """A counter table with every kind of value whose spelling could drift."""
    blob = "BLOB" if app.dialect == "sqlite" else "BYTEA"
    app.run(
        "CREATE TABLE counters (user_id INTEGER PRIMARY KEY, n INTEGER NOT NULL, "
        f"w DOUBLE PRECISION, note TEXT, raw {blob})"
    )
    app.many(
        "INSERT INTO counters VALUES (?, ?, ?, ?, ?)",
        [(i, i * 3, i / 7 + 0.1, f"user {i} ✓", bytes([i % 256, 0])) for i in range(1, rows + 1)],
    )
    return SqlTableStoreSpec(name="counters", url=app.url, table="counters")


def table(app: AppDB) -> list[tuple[Any, ...]]:
    out = []
    for r in app.rows("SELECT user_id, n, w, note, raw FROM counters ORDER BY user_id"):
        out.append(tuple(bytes(v) if isinstance(v, memoryview) else v for v in r))
    return out


def log_rows(app: AppDB, spec: SqlTableStoreSpec) -> int:
    return int(app.one(f'SELECT count(*) FROM "{spec.log_table_name}"'))


def no_manifest_in(artifacts: LocalArtifactStore) -> bool:
    root = artifacts.root / "sha256"
    for p in root.rglob("*") if root.exists() else []:
        if p.is_file():
            try:
                SnapshotManifest.model_validate_json(p.read_bytes())
            except Exception:  # noqa: BLE001 - anything that is not a manifest is fine
                continue
            return False
    return True


# ------------------------------------------------------------------------------ spec


def _spec(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        model_id="emb",
        owner_team="ranking",
        tier="L2",
        rollback_class="STATE_SNAPSHOT",
        model_class="dnn",
        framework="pytorch",
        policy={"primary_metric": "ctr"},
    )
    base.update(kw)
    return base


def test_model_spec_declares_state_stores_and_old_specs_stay_valid(tmp_path: Path) -> None:
    old = ModelSpec.model_validate(_spec(rollback_class="STATELESS"))
    assert old.state_stores == []
    assert ModelSpec.model_validate_json(old.model_dump_json()) == old
    spec = ModelSpec.model_validate(
        _spec(
            state_stores=[
                {"name": "counts", "kind": "sql_table", "url": "sqlite:///x.db",
                 "table": "counters"},
                {"name": "cal", "kind": "sql_table", "url_env": "CAL_DB", "table": "cal",
                 "db_schema": "models", "key_columns": ["bucket"]},
                {"name": "cache", "kind": "directory", "path": "$MODELOPS_HOME/cache"},
                {"name": "index", "kind": "s3_prefix", "bucket": "state-bucket",
                 "prefix": "/emb/index/"},
            ]
        )
    )
    kinds = [(s.name, s.kind) for s in spec.state_stores]
    assert kinds == [("counts", "sql_table"), ("cal", "sql_table"), ("cache", "directory"),
                     ("index", "s3_prefix")]
    assert spec.state_stores[3].prefix == "emb/index"  # type: ignore[union-attr]
    assert spec.state_stores[0].log_table_name == "counters__modelops_log"  # type: ignore[union-attr]
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    "stores, rollback_class, message",
    [
        ([{"name": "c", "kind": "directory", "path": "/x"}], "STATELESS",
         "a STATELESS model declares no state_stores"),
        ([{"name": "c", "kind": "directory", "path": "/x"},
          {"name": "c", "kind": "directory", "path": "/y"}], "STATE_SNAPSHOT",
         "names must be unique; repeated: c"),
        ([{"name": "c", "kind": "redis", "path": "/x"}], "STATE_SNAPSHOT",
         "state_stores[0]"),
        ([{"name": "c", "kind": "s3_prefix", "bucket": "bkt", "prefix": "/"}], "STATE_SNAPSHOT",
         "never owns a whole bucket"),
        ([{"name": "c", "kind": "sql_table", "table": "t"}], "STATE_SNAPSHOT",
         "exactly one of url and url_env"),
        ([{"name": "c", "kind": "sql_table", "url": "mysql://h/db", "table": "t"}],
         "STATE_SNAPSHOT", "allowed: sqlite:///PATH or postgresql://"),
        ([{"name": "c", "kind": "sql_table", "url": "sqlite:///x", "table": "t; drop"}],
         "STATE_SNAPSHOT", "table 't; drop' is not allowed"),
    ],
)
def test_bad_store_declarations_are_one_line(
    tmp_path: Path, stores: list[dict[str, Any]], rollback_class: str, message: str
) -> None:
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec(rollback_class=rollback_class, state_stores=stores)))
    with pytest.raises(SpecError) as info:
        load_yaml_model(path, ModelSpec)
    assert "\n" not in str(info.value) and message in str(info.value), str(info.value)
    assert str(info.value).startswith(str(path))


def test_url_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = SqlTableStoreSpec(name="c", url_env="STATE_DB_URL", table="t")
    monkeypatch.delenv("STATE_DB_URL", raising=False)
    with pytest.raises(SpecError, match="STATE_DB_URL is not set"):
        open_state_store(spec)
    monkeypatch.setenv("STATE_DB_URL", "postgresql://user:secret@db.example/state")
    assert "secret" not in SqlTableStoreSpec(
        name="c", url="postgresql://user:secret@db.example/state", table="t"
    ).location()
    assert spec.resolved_url().endswith("/state")
    monkeypatch.setenv("STATE_DB_URL", "oracle://x")
    with pytest.raises(SpecError, match="STATE_DB_URL: url scheme 'oracle' is not supported"):
        spec.resolved_url()


# ------------------------------------------------------------------------------ SQL tables


def canary_writes(app: AppDB) -> tuple[int, set[str]]:
    """What a canary does after the snapshot: returns (writes, keys touched)."""
    app.run("UPDATE counters SET n = n + 1 WHERE user_id <= 3")  # 3 writes
    app.run("UPDATE counters SET n = n + 1 WHERE user_id = 2")  # 1 more on the same key
    app.run("UPDATE counters SET w = 0.1 + 0.2, raw = NULL WHERE user_id = 4")
    app.run("DELETE FROM counters WHERE user_id = 10")
    app.run("INSERT INTO counters VALUES (5000, 1, NULL, 'new', NULL)")
    app.run("UPDATE counters SET user_id = 6000 WHERE user_id = 20")  # the key moves
    keys = {1, 2, 3, 4, 10, 5000, 20, 6000}
    return 8, {json.dumps({"user_id": k}) for k in keys}


def test_restore_reverts_exactly_the_writes_after_the_cursor(
    app: AppDB, artifacts: LocalArtifactStore
) -> None:
    spec = make_table(app)
    before = table(app)
    ref = snapshot_stores([spec], artifacts, label={"model": "emb", "version": 3})
    entry = ref.manifest.stores[0]
    assert (entry.name, entry.kind, entry.items) == ("counters", "sql_table", 200)
    assert entry.cursor is not None and entry.cursor["seq"] >= 1
    assert load_manifest(artifacts, ref.uri) == ref.manifest
    assert snapshot_sha256(f"sha256:{ref.sha256}") == ref.sha256

    writes, keys = canary_writes(app)
    assert table(app) != before
    changes = changes_since_snapshot([spec], artifacts, ref.sha256)[0]
    assert (changes.writes, set(changes.keys), changes.exact_writes) == (writes, keys, True)

    result = restore_snapshot([spec], artifacts, ref.sha256)
    report = result.stores[0]
    assert report.mode == "incremental"
    assert report.writes_after_cursor == writes == result.writes_reverted
    assert set(report.keys_after_cursor) == keys
    assert set(report.rewritten) == keys  # each touched key rewritten once, not per write
    assert report.content_sha256 == entry.content_sha256
    assert table(app) == before
    assert open_state_store(spec).content_sha256() == entry.content_sha256

    # A rerun (a killed job retried) finds the table at the snapshot and writes nothing.
    logged = log_rows(app, spec)
    again = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
    assert (again.mode, again.rewritten, again.writes_after_cursor) == ("noop", [], writes)
    assert log_rows(app, spec) == logged and table(app) == before


def test_a_corrupt_dump_refuses_and_leaves_the_table_untouched(
    app: AppDB, artifacts: LocalArtifactStore
) -> None:
    spec = make_table(app)
    ref = snapshot_stores([spec], artifacts)
    canary_writes(app)
    after_canary = table(app)
    blob = artifacts.path_for(ref.manifest.stores[0].blobs[0])  # the dump
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    logged = log_rows(app, spec)
    with pytest.raises(IntegrityError) as info:
        restore_snapshot([spec], artifacts, ref.sha256)
    assert "\n" not in str(info.value) and "corrupt" in str(info.value)
    assert table(app) == after_canary and log_rows(app, spec) == logged


def test_a_log_that_cannot_reproduce_the_snapshot_falls_back_to_the_full_dump(
    app: AppDB, artifacts: LocalArtifactStore
) -> None:
    spec = make_table(app)
    before = table(app)
    ref = snapshot_stores([spec], artifacts)
    canary_writes(app)
    # Someone prunes the log past the cursor: the incremental replay misses those writes.
    app.run(f'DELETE FROM "{spec.log_table_name}" WHERE seq > ?',
            (ref.manifest.stores[0].cursor["seq"],))  # type: ignore[index]
    report = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
    assert report.mode == "full" and "did not reproduce the snapshot" in report.note
    assert report.rows_or_files_restored == 200
    assert table(app) == before
    # The reload bypassed the triggers, so it left a reset marker behind it.
    assert app.one(f'SELECT op FROM "{spec.log_table_name}" ORDER BY seq DESC LIMIT 1') == "R"


def test_an_older_snapshot_restores_across_a_newer_restore(
    app: AppDB, artifacts: LocalArtifactStore
) -> None:
    """Restores are themselves logged, so every earlier cursor stays replayable."""
    spec = make_table(app, rows=50)
    s1_rows = table(app)
    s1 = snapshot_stores([spec], artifacts)
    app.run("UPDATE counters SET n = 0")
    s2_rows = table(app)
    s2 = snapshot_stores([spec], artifacts)
    app.run("DELETE FROM counters WHERE user_id > 25")
    r2 = restore_snapshot([spec], artifacts, s2.sha256).stores[0]
    assert (r2.mode, r2.writes_after_cursor, table(app)) == ("incremental", 25, s2_rows)
    r1 = restore_snapshot([spec], artifacts, s1.sha256).stores[0]
    # Writes after s1: 50 updates and 25 deletes by the application; the restore's own
    # writes are logged but not counted as the application's.
    assert (r1.mode, r1.writes_after_cursor, table(app)) == ("incremental", 75, s1_rows)


def test_full_mode_reloads_and_an_old_cursor_then_needs_the_dump(
    app: AppDB, artifacts: LocalArtifactStore
) -> None:
    spec = make_table(app, rows=30)
    before = table(app)
    ref = snapshot_stores([spec], artifacts)
    app.run("UPDATE counters SET n = -1 WHERE user_id < 5")
    full = restore_snapshot([spec], artifacts, ref.sha256, mode="full").stores[0]
    assert (full.mode, full.rows_or_files_restored, full.writes_after_cursor) == ("full", 30, 4)
    assert table(app) == before
    app.run("UPDATE counters SET n = -2 WHERE user_id = 7")
    again = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
    assert again.mode == "full" and "reset after the cursor" in again.note
    assert table(app) == before
    with pytest.raises(SpecError, match="allowed: auto, full"):
        restore_snapshot([spec], artifacts, ref.sha256, mode="fast")


def test_a_changed_table_shape_is_refused_untouched(
    app: AppDB, artifacts: LocalArtifactStore
) -> None:
    spec = make_table(app, rows=10)
    ref = snapshot_stores([spec], artifacts)
    app.run("ALTER TABLE counters ADD COLUMN extra INTEGER")
    app.run("UPDATE counters SET n = 99")
    with pytest.raises(SpecError) as info:
        restore_snapshot([spec], artifacts, ref.sha256)
    assert "changed shape since the snapshot" in str(info.value)
    assert {r[1] for r in table(app)} == {99}


def test_a_table_without_a_key_is_refused(app: AppDB, artifacts: LocalArtifactStore) -> None:
    app.run("CREATE TABLE loose (a INTEGER, b TEXT)")
    spec = SqlTableStoreSpec(name="loose", url=app.url, table="loose")
    with pytest.raises(SpecError, match="has no primary key; declare key_columns"):
        snapshot_stores([spec], artifacts)
    app.run("CREATE UNIQUE INDEX loose_a ON loose (a)")
    with pytest.raises(SpecError, match=r"key column\(s\) \['a'\] .* are nullable"):
        snapshot_stores([spec.model_copy(update={"key_columns": ["a"]})], artifacts)
    with pytest.raises(SpecError, match="neither its primary key nor a unique index"):
        snapshot_stores([spec.model_copy(update={"key_columns": ["b"]})], artifacts)
    assert no_manifest_in(artifacts)


def test_install_is_idempotent(app: AppDB) -> None:
    spec = make_table(app, rows=3)
    assert install_change_logs([spec]) == {"counters": True}
    assert install_change_logs([spec]) == {"counters": False}
    assert log_rows(app, spec) == 1  # one reset marker from the first install


def test_a_write_in_flight_during_the_snapshot_is_after_the_cursor(
    app: AppDB, artifacts: LocalArtifactStore
) -> None:
    """The transaction that started writing before the snapshot but committed after it is
    not in the dump, so the restore must revert it (PostgreSQL: its seq is below the
    cursor; SQLite: its write lock does not block the WAL reader)."""
    spec = make_table(app, rows=5)
    install_change_logs([spec])
    slow = AppDB(app.url)
    try:
        if app.dialect == "sqlite":
            slow.run("BEGIN IMMEDIATE")
            slow.run("UPDATE counters SET n = 100 WHERE user_id = 1")
        else:
            slow.run("BEGIN")
            slow.run("UPDATE counters SET n = 100 WHERE user_id = 1")  # takes a seq first
            app.run("UPDATE counters SET n = 200 WHERE user_id = 2")  # higher seq, committed
        ref = snapshot_stores([spec], artifacts)
        slow.run("COMMIT")
    finally:
        slow.close()
    assert {r[0]: r[1] for r in table(app)}[1] == 100  # committed, but after the snapshot
    report = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
    assert report.mode == "incremental", report.note
    assert (report.writes_after_cursor, report.keys_after_cursor) == (1, ['{"user_id": 1}'])
    n = {r[0]: r[1] for r in table(app)}
    assert n[1] == 3 and n[2] == (200 if app.dialect == "postgresql" else 6)
    if app.dialect == "postgresql":
        assert ref.manifest.stores[0].cursor["in_flight"]  # type: ignore[index]


def test_snapshot_under_a_concurrent_writer_is_one_consistent_instant(
    app: AppDB, artifacts: LocalArtifactStore
) -> None:
    """A writer keeps writing through the snapshot. Write g sets key g % 40 to g (every
    fifth write inserts a new key instead), one transaction each, in order. A consistent
    snapshot is exactly "writes 1..G applied" for some G, and the restore must report the
    writes after G, no more and no fewer."""
    app.run("CREATE TABLE counters (user_id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
    app.many("INSERT INTO counters VALUES (?, ?)", [(k, 0) for k in range(40)])
    spec = SqlTableStoreSpec(name="counters", url=app.url, table="counters")
    install_change_logs([spec])
    writer = AppDB(app.url)
    started, stop = threading.Event(), threading.Event()
    done: list[int] = []
    errors: list[BaseException] = []
    after_snapshot = threading.Event()
    snap_taken_at: list[int] = []

    def write() -> None:
        try:
            g = 0
            while not stop.is_set():
                g += 1
                if g % 5 == 0:
                    writer.run("INSERT INTO counters VALUES (?, ?)", (1000 + g, g))
                else:
                    writer.run("UPDATE counters SET n = ? WHERE user_id = ?", (g, g % 40))
                done.append(g)
                if g == 150:
                    started.set()
                if snap_taken_at and g >= snap_taken_at[0] + 150:
                    after_snapshot.set()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)
            started.set()
            after_snapshot.set()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        assert started.wait(60)
        ref = snapshot_stores([spec], artifacts)
        snap_taken_at.append(len(done))
        assert after_snapshot.wait(60)
    finally:
        stop.set()
        thread.join(60)
        writer.close()
    assert not errors, errors
    total = len(done)

    def state_after(g_max: int) -> dict[int, int]:
        s = {k: 0 for k in range(40)}
        for g in range(1, g_max + 1):
            if g % 5 == 0:
                s[1000 + g] = g
            else:
                s[g % 40] = g
        return s

    report = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
    assert report.mode == "incremental", report.note
    restored = dict(app.rows("SELECT user_id, n FROM counters"))
    g_snap = max(restored.values())
    assert 150 <= g_snap < total
    assert restored == state_after(g_snap)  # not torn: one prefix of the writes
    assert report.writes_after_cursor == total - g_snap
    touched = {1000 + g if g % 5 == 0 else g % 40 for g in range(g_snap + 1, total + 1)}
    assert set(report.keys_after_cursor) == {json.dumps({"user_id": k}) for k in touched}


def test_an_unreachable_database_fails_the_snapshot_naming_the_store(
    tmp_path: Path, artifacts: LocalArtifactStore
) -> None:
    good = tmp_path / "ok"
    good.mkdir()
    (good / "a.bin").write_bytes(b"state")
    specs: list[Any] = [
        DirectoryStoreSpec(name="cache", path=str(good)),
        SqlTableStoreSpec(name="counters", url=f"sqlite:///{tmp_path / 'absent.db'}",
                          table="counters"),
    ]
    with pytest.raises(StateStoreUnavailable) as info:
        snapshot_stores(specs, artifacts)
    msg = str(info.value)
    assert "\n" not in msg and "state store 'counters'" in msg and "absent.db" in msg
    assert not (tmp_path / "absent.db").exists()  # never created by the probe
    pg = SqlTableStoreSpec(
        name="calib", url=f"postgresql://postgres@127.0.0.1:{_free_port()}/x", table="cal"
    )
    with pytest.raises(StateStoreUnavailable, match="state store 'calib' .* is unreachable"):
        snapshot_stores([specs[0], pg], artifacts)
    assert no_manifest_in(artifacts)


# ------------------------------------------------------------------------------ directory


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def read_tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_directory_restore_removes_added_and_restores_changed_and_deleted(
    tmp_path: Path, artifacts: LocalArtifactStore
) -> None:
    root = tmp_path / "emb-cache"
    write_tree(root, {"a.bin": b"a" * 1000, "sub/b.bin": b"b", "sub/deep/c.bin": b"c",
                      "same1": b"dup", "same2": b"dup"})
    os.chmod(root / "sub/b.bin", 0o600)
    spec = DirectoryStoreSpec(name="cache", path=str(root))
    before = read_tree(root)
    ref = snapshot_stores([spec], artifacts)
    entry = ref.manifest.stores[0]
    assert (entry.items, entry.bytes) == (5, 1000 + 1 + 1 + 3 + 3)
    # The canary writes: changes, deletes, adds, a mode change, a new directory.
    (root / "a.bin").write_bytes(b"changed")
    (root / "same1").unlink()
    (root / "same2").unlink()
    os.chmod(root / "sub/deep/c.bin", 0o666)
    write_tree(root, {"new/x.bin": b"x", "sub/added.bin": b"y"})
    (root / "app-made-empty").mkdir()
    changes = changes_since_snapshot([spec], artifacts, ref.sha256)[0]
    assert changes.by_op == {"added": 2, "changed": 2, "deleted": 2}
    report = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
    assert report.mode == "diff" and report.content_sha256 == entry.content_sha256
    assert set(report.rewritten) == {"a.bin", "same1", "same2", "sub/deep/c.bin", "new/x.bin",
                                     "sub/added.bin"}
    assert read_tree(root) == before
    assert not (root / "new").exists()  # emptied by the restore
    assert (root / "app-made-empty").is_dir()  # empty directories are not state
    assert not list(tmp_path.glob(".emb-cache.restore-*"))  # staging cleaned up
    assert restore_snapshot([spec], artifacts, ref.sha256).stores[0].mode == "noop"


def test_directory_restore_with_a_corrupt_blob_leaves_the_directory_untouched(
    tmp_path: Path, artifacts: LocalArtifactStore
) -> None:
    root = tmp_path / "d"
    write_tree(root, {"a": b"original a", "b": b"original b"})
    spec = DirectoryStoreSpec(name="cache", path=str(root))
    ref = snapshot_stores([spec], artifacts)
    (root / "a").write_bytes(b"canary a")
    (root / "b").unlink()
    (root / "c").write_bytes(b"canary c")
    after = read_tree(root)
    import hashlib

    blob = artifacts.path_for(hashlib.sha256(b"original b").hexdigest())
    os.chmod(blob, 0o644)
    blob.write_bytes(b"original B")
    with pytest.raises(IntegrityError, match="corrupt"):
        restore_snapshot([spec], artifacts, ref.sha256)
    assert read_tree(root) == after


def test_directory_refusals(tmp_path: Path, artifacts: LocalArtifactStore) -> None:
    missing = DirectoryStoreSpec(name="cache", path=str(tmp_path / "nope"))
    with pytest.raises(StateStoreUnavailable, match="state store 'cache' .* no directory at"):
        snapshot_stores([missing], artifacts)
    root = tmp_path / "d"
    write_tree(root, {"a": b"1"})
    (root / "link").symlink_to(root / "a")
    with pytest.raises(SpecError, match="is not a regular file; allowed: regular files"):
        snapshot_stores([DirectoryStoreSpec(name="cache", path=str(root))], artifacts)
    assert no_manifest_in(artifacts)


# ------------------------------------------------------------------------------ S3


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server over real HTTP on a free port, one per module."""
    from moto.server import ThreadedMotoServer

    env = pytest.MonkeyPatch()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }.items():
        env.setenv(name, value)
    env.delenv("AWS_PROFILE", raising=False)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        env.undo()


@pytest.fixture
def s3(moto_endpoint: str) -> tuple[Any, S3PrefixStoreSpec]:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint)
    bucket = f"state-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, S3PrefixStoreSpec(
        name="index", bucket=bucket, prefix="emb/index", endpoint_url=moto_endpoint
    )


def s3_tree(client: Any, bucket: str) -> dict[str, tuple[bytes, str, dict[str, str]]]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            r = client.get_object(Bucket=bucket, Key=o["Key"])
            out[o["Key"]] = (r["Body"].read(), r.get("ContentType", ""), r.get("Metadata", {}))
    return out


def test_s3_prefix_restore_over_http(
    s3: tuple[Any, S3PrefixStoreSpec], artifacts: LocalArtifactStore
) -> None:
    client, spec = s3
    b = spec.bucket
    client.put_object(Bucket=b, Key="emb/index/shard-0", Body=b"0" * 10000,
                      ContentType="application/x-index", Metadata={"dim": "64"})
    client.put_object(Bucket=b, Key="emb/index/shard-1", Body=b"one")
    client.put_object(Bucket=b, Key="emb/index/meta/manifest.json", Body=b"{}")
    client.put_object(Bucket=b, Key="other/untouched", Body=b"not ours")
    before = s3_tree(client, b)
    ref = snapshot_stores([spec], artifacts)
    entry = ref.manifest.stores[0]
    assert (entry.items, entry.kind) == (3, "s3_prefix")
    # The canary: change bytes, change only metadata, delete, add; and a neighbour prefix.
    client.put_object(Bucket=b, Key="emb/index/shard-1", Body=b"canary")
    client.copy_object(Bucket=b, Key="emb/index/shard-0", MetadataDirective="REPLACE",
                       CopySource={"Bucket": b, "Key": "emb/index/shard-0"},
                       ContentType="application/x-index", Metadata={"dim": "128"})
    client.delete_object(Bucket=b, Key="emb/index/meta/manifest.json")
    client.put_object(Bucket=b, Key="emb/index/shard-2", Body=b"new")
    client.put_object(Bucket=b, Key="other/new", Body=b"not ours either")
    changes = changes_since_snapshot([spec], artifacts, ref.sha256)[0]
    assert changes.by_op == {"added": 1, "changed": 2, "deleted": 1}
    report = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
    assert report.mode == "diff" and report.content_sha256 == entry.content_sha256
    assert set(report.rewritten) == {"shard-0", "shard-1", "meta/manifest.json", "shard-2"}
    now = s3_tree(client, b)
    assert now.pop("other/new")[0] == b"not ours either"  # outside the prefix: not state
    assert now == before
    assert restore_snapshot([spec], artifacts, ref.sha256).stores[0].mode == "noop"


def test_s3_corrupt_blob_and_unreachable_endpoint(
    s3: tuple[Any, S3PrefixStoreSpec], artifacts: LocalArtifactStore
) -> None:
    client, spec = s3
    client.put_object(Bucket=spec.bucket, Key="emb/index/a", Body=b"original")
    ref = snapshot_stores([spec], artifacts)
    client.put_object(Bucket=spec.bucket, Key="emb/index/a", Body=b"canary")
    import hashlib

    blob = artifacts.path_for(hashlib.sha256(b"original").hexdigest())
    os.chmod(blob, 0o644)
    blob.write_bytes(b"Original")
    with pytest.raises(IntegrityError, match="corrupt"):
        restore_snapshot([spec], artifacts, ref.sha256)
    assert s3_tree(client, spec.bucket)["emb/index/a"][0] == b"canary"

    down = spec.model_copy(update={"endpoint_url": f"http://127.0.0.1:{_free_port()}"})
    fresh = LocalArtifactStore(artifacts.root.parent / "fresh")
    with pytest.raises(StateStoreUnavailable) as info:
        snapshot_stores([down], fresh)
    assert "\n" not in str(info.value) and "state store 'index' (s3_prefix" in str(info.value)
    assert no_manifest_in(fresh)
    missing = spec.model_copy(update={"bucket": "no-such-bucket-here"})
    with pytest.raises(StateStoreUnavailable, match="state store 'index'"):
        snapshot_stores([missing], fresh)


# ------------------------------------------------------------------------------ manifests


def test_one_snapshot_of_three_kinds_and_a_failure_midway_leaves_no_manifest(
    tmp_path: Path,
    s3: tuple[Any, S3PrefixStoreSpec],
    artifacts: LocalArtifactStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, s3_spec = s3
    client.put_object(Bucket=s3_spec.bucket, Key="emb/index/a", Body=b"A")
    db = tmp_path / "state.db"
    app = AppDB(f"sqlite:///{db}")
    try:
        sql_spec = make_table(app, rows=20)
        root = tmp_path / "cache"
        write_tree(root, {"x": b"x"})
        specs: list[Any] = [sql_spec, DirectoryStoreSpec(name="cache", path=str(root)), s3_spec]
        ref = snapshot_stores(specs, artifacts, label={"model": "emb", "version": 7,
                                                       "slice": "global"})
        assert [e.name for e in ref.manifest.stores] == ["counters", "cache", "index"]
        assert ref.manifest.label == {"model": "emb", "version": 7, "slice": "global"}
        app.run("DELETE FROM counters")
        (root / "x").write_bytes(b"y")
        client.delete_object(Bucket=s3_spec.bucket, Key="emb/index/a")
        result = restore_snapshot(specs, artifacts, ref.uri)
        assert [r.mode for r in result.stores] == ["incremental", "diff", "diff"]
        assert result.writes_reverted == 20 and len(table(app)) == 20
        # Only some stores, and a store the snapshot does not know.
        assert [r.store for r in restore_snapshot(specs, artifacts, ref.sha256,
                                                  only=["cache"]).stores] == ["cache"]
        with pytest.raises(SpecError, match="'nope' is not in this snapshot; it has: counters"):
            restore_snapshot(specs, artifacts, ref.sha256, only=["nope"])
        with pytest.raises(SpecError, match="not declared with that kind"):
            restore_snapshot(specs[:1], artifacts, ref.sha256)

        # The S3 store dies after the SQL and directory stores were snapshotted.
        fresh = LocalArtifactStore(tmp_path / "fresh")
        dead = s3_spec.model_copy(update={"endpoint_url": f"http://127.0.0.1:{_free_port()}"})
        from modelops.state_stores.s3_prefix import S3PrefixStore

        class DiesMidway(S3PrefixStore):
            def probe(self) -> None:  # reachable when probed, gone when read
                pass

        import modelops.state_stores.snapshots as snaps

        real_open = snaps.open_state_store

        def opener(spec: Any, *, s3_client: Any = None) -> Any:
            return DiesMidway(spec) if spec.kind == "s3_prefix" else real_open(spec)

        monkeypatch.setattr(snaps, "open_state_store", opener)
        with pytest.raises(StateStoreUnavailable, match="state store 'index'"):
            snapshot_stores([sql_spec, specs[1], dead], fresh)
        assert any((fresh.root / "sha256").rglob("*"))  # content blobs were written ...
        assert no_manifest_in(fresh)  # ... but nothing that passes for a snapshot
    finally:
        app.close()


def test_manifest_references_are_checked(artifacts: LocalArtifactStore) -> None:
    with pytest.raises(SpecError, match="invalid snapshot reference"):
        load_manifest(artifacts, "latest")
    blob = artifacts.put_bytes(b'{"not": "a manifest"}')
    with pytest.raises(IntegrityError, match="is not a state snapshot manifest"):
        load_manifest(artifacts, blob.sha256)
    with pytest.raises(SpecError, match="no state stores declared"):
        snapshot_stores([], artifacts)



def test_postgres_types_round_trip_exactly(pg_url: str, artifacts: LocalArtifactStore) -> None:
    """Every value comes back bit for bit: floats, numerics, times, arrays, JSON, bytes, an
    identity column and a generated one (which is derived, not stored in the dump)."""
    app = AppDB(pg_url)
    try:
        app.run(
            "CREATE TABLE calib (id INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "w DOUBLE PRECISION, r REAL, amount NUMERIC(12, 4), at TIMESTAMPTZ, span INTERVAL, "
            "tags TEXT[], doc JSONB, raw BYTEA, note TEXT, twice DOUBLE PRECISION "
            "GENERATED ALWAYS AS (w * 2) STORED)"
        )
        app.run(
            "INSERT INTO calib (w, r, amount, at, span, tags, doc, raw, note) "
            "SELECT i / 3.0::float8 + 1e-17 * i, i / 7.0::real, i * 1.00005, "
            "'2026-01-01 00:00:00.123456+02'::timestamptz + i * interval '1 second', "
            "make_interval(days => i, secs => i / 10.0), ARRAY['a', 'b\tc', NULL], "
            "jsonb_build_object('k', i, 'nested', jsonb_build_array(1.5, 'x')), "
            "decode(md5(i::text), 'hex'), E'line\\nbreak ' || i FROM generate_series(1, 300) i"
        )
        app.run("INSERT INTO calib (w, note) VALUES ('NaN', 'nan'), ('Infinity', NULL), (-0.0, '')")
        spec = SqlTableStoreSpec(name="calib", url=pg_url, table="calib")
        cols = "id, w, r, amount, at, span, tags, doc, raw, note, twice, w::text, r::text"

        def rows() -> list[str]:  # repr: NaN equals NaN, and 0.0 differs from -0.0
            return [repr(r) for r in app.rows(f"SELECT {cols} FROM calib ORDER BY id")]

        before = rows()
        ref = snapshot_stores([spec], artifacts)
        assert ref.manifest.stores[0].details["columns"][-1] == "twice"
        app.run("UPDATE calib SET w = w + 1, doc = '{}', tags = NULL WHERE id % 3 = 0")
        app.run("DELETE FROM calib WHERE id > 250")
        inc = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
        assert inc.mode == "incremental" and inc.writes_after_cursor == 101 + 53
        assert rows() == before
        app.run("UPDATE calib SET amount = 0")
        full = restore_snapshot([spec], artifacts, ref.sha256, mode="full").stores[0]
        assert full.mode == "full" and full.rows_or_files_restored == 303
        assert rows() == before
    finally:
        app.close()


def test_sqlite_values_keep_their_storage_class(tmp_path: Path,
                                                artifacts: LocalArtifactStore) -> None:
    """SQLite types values, not columns: 1, 1.0, '1' and x'01' in one column stay apart, and
    every float keeps all its bits through the log and through the dump."""
    db = tmp_path / "dyn.db"
    app = AppDB(f"sqlite:///{db}")
    try:
        app.run("CREATE TABLE dyn (k TEXT NOT NULL PRIMARY KEY, v)")
        values = [1, 1.0, "1", b"\x01", None, -0.0, 0.1 + 0.2, 1e300, 2**63 - 1, -(2**63),
                  "line\nbreak ✓", b"", 5e-324, "", '{"b": "00"}']
        app.many("INSERT INTO dyn VALUES (?, ?)", [(f"k{i:02d}", v) for i, v in enumerate(values)])

        def rows() -> list[str]:
            return [repr(r) for r in app.rows("SELECT k, v, typeof(v) FROM dyn ORDER BY k")]

        before = rows()
        spec = SqlTableStoreSpec(name="dyn", url=app.url, table="dyn")
        ref = snapshot_stores([spec], artifacts)
        app.run("UPDATE dyn SET v = 2")
        app.run("DELETE FROM dyn WHERE k > 'k10'")
        inc = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
        assert (inc.mode, inc.writes_after_cursor) == ("incremental", 15 + 4)
        assert rows() == before
        app.run("UPDATE dyn SET v = 3")
        full = restore_snapshot([spec], artifacts, ref.sha256, mode="full").stores[0]
        assert full.mode == "full" and rows() == before
    finally:
        app.close()


def test_a_tagged_restore_leaves_a_commit_marker_that_no_later_restore_replays(
    app: AppDB, artifacts: LocalArtifactStore
) -> None:
    """A rollback run tags its restores, so a rerun after a kill can ask the store whether
    the restore committed, exactly, even after newer writes changed the table again."""
    spec = make_table(app)
    before = table(app)
    ref = snapshot_stores([spec], artifacts)
    entry = ref.manifest.stores[0]
    store = open_state_store(spec)
    try:
        assert store.restore_committed(entry, "run7") is False
        writes, _ = canary_writes(app)
        report = restore_snapshot([spec], artifacts, ref.sha256, tag="run7").stores[0]
        assert report.writes_after_cursor == writes and table(app) == before
        # The rewrites and one marker, all under the run's origin; none counts as a write.
        assert store.restore_committed(entry, "run7") is True
        assert store.restore_committed(entry, "run8") is False
        app.run("UPDATE counters SET n = 0 WHERE user_id = 50")  # after the rollback
        assert store.restore_committed(entry, "run7") is True
        changes = changes_since_snapshot([spec], artifacts, ref.sha256)[0]
        assert changes.writes == writes + 1
        # An untagged restore writes no marker; a later restore reverts the new write and
        # skips the marker (it is no row of the table).
        markers = f"SELECT count(*) FROM \"{spec.log_table_name}\" WHERE op = 'M'"
        assert int(app.one(markers)) == 1
        again = restore_snapshot([spec], artifacts, ref.sha256).stores[0]
        assert again.mode == "incremental" and table(app) == before
        assert int(app.one(markers)) == 1
    finally:
        store.close()
