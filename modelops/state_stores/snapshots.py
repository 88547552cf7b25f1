"""Snapshot every declared store into one manifest; restore them from it.

The manifest is written last and only after every store's bytes are in the artifact store.
The manifest's sha256 is the snapshot's identity (what a version records as its
`rollback_snapshot_uri`), so a failed snapshot leaves at most unreferenced content blobs,
never a document that could pass for a complete snapshot.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from modelops.artifacts import ArtifactStore
from modelops.errors import IntegrityError, SpecError
from modelops.state_stores.base import (
    ChangeSummary,
    PreparedRestore,
    SnapshotManifest,
    StateStore,
    StoreManifestEntry,
    StoreRestoreReport,
    timer,
)
from modelops.state_stores.config import (
    DirectoryStoreSpec,
    S3PrefixStoreSpec,
    SqlTableStoreSpec,
    StateStoreSpec,
)

__all__ = [
    "SnapshotRef",
    "RestoreResult",
    "open_state_store",
    "install_change_logs",
    "snapshot_stores",
    "load_manifest",
    "restore_snapshot",
    "changes_since_snapshot",
    "snapshot_sha256",
]

_SHA = re.compile(r"([0-9a-f]{64})$")


class SnapshotRef(BaseModel):
    sha256: str
    uri: str
    manifest: SnapshotManifest
    elapsed_s: float


class RestoreResult(BaseModel):
    snapshot_sha256: str
    stores: list[StoreRestoreReport]
    elapsed_s: float

    @property
    def writes_reverted(self) -> int:
        return sum(r.writes_after_cursor or 0 for r in self.stores)


def open_state_store(spec: StateStoreSpec, *, s3_client: Any = None) -> StateStore:
    from modelops.state_stores.directory import DirectoryStore
    from modelops.state_stores.s3_prefix import S3PrefixStore
    from modelops.state_stores.sql_table import SqlTableStore

    if isinstance(spec, SqlTableStoreSpec):
        return SqlTableStore(spec)
    if isinstance(spec, DirectoryStoreSpec):
        return DirectoryStore(spec)
    if isinstance(spec, S3PrefixStoreSpec):
        return S3PrefixStore(spec, client=s3_client)
    raise SpecError(f"unknown state store spec {type(spec).__name__}")


def snapshot_sha256(ref: str) -> str:
    """The manifest hash from a bare sha256, `sha256:<hex>` or an artifact URI."""
    m = _SHA.search(ref.strip()) if isinstance(ref, str) else None
    if m is None:
        raise SpecError(
            f"invalid snapshot reference {ref!r}; allowed: a sha256, sha256:<hex> or the "
            "artifact URI of a snapshot manifest"
        )
    return m.group(1)


def install_change_logs(specs: Iterable[StateStoreSpec]) -> dict[str, bool]:
    """Idempotently install the change-log triggers of every SQL store (store -> created)."""
    out: dict[str, bool] = {}
    for spec in specs:
        if isinstance(spec, SqlTableStoreSpec):
            store = open_state_store(spec)
            try:
                out[spec.name] = store.install_change_log()  # type: ignore[attr-defined]
            finally:
                store.close()
    return out


def _open_all(specs: Sequence[StateStoreSpec], s3_client: Any) -> list[StateStore]:
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"state store names must be unique; repeated: {', '.join(dupes)}")
    return [open_state_store(s, s3_client=s3_client) for s in specs]


def snapshot_stores(
    specs: Sequence[StateStoreSpec],
    artifacts: ArtifactStore,
    *,
    label: Mapping[str, str | int | None] | None = None,
    now: datetime | None = None,
    s3_client: Any = None,
) -> SnapshotRef:
    """Snapshot every store, then write the manifest. All stores are probed before any is
    read, so an unreachable store costs no work; one failing mid-way leaves no manifest."""
    if not specs:
        raise SpecError("no state stores declared; a STATE_SNAPSHOT model declares state_stores")
    clock = timer()
    stores = _open_all(specs, s3_client)
    try:
        for s in stores:
            s.probe()
        entries = [s.snapshot(artifacts) for s in stores]
    finally:
        for s in stores:
            s.close()
    manifest = SnapshotManifest(
        created_at=(now or datetime.now(UTC)).astimezone(UTC).isoformat(),
        label=dict(label or {}),
        stores=entries,
    )
    ref = artifacts.put_bytes(manifest.to_bytes())
    return SnapshotRef(sha256=ref.sha256, uri=ref.uri, manifest=manifest, elapsed_s=clock())


def load_manifest(artifacts: ArtifactStore, ref: str) -> SnapshotManifest:
    """Read and verify (by hash) a snapshot manifest."""
    data = artifacts.read_bytes(snapshot_sha256(ref))
    try:
        manifest = SnapshotManifest.model_validate_json(data)
    except ValidationError as exc:
        raise IntegrityError(
            f"artifact {snapshot_sha256(ref)[:16]} is not a state snapshot manifest "
            f"({exc.error_count()} problems)"
        ) from None
    return manifest


def _entries_for(
    manifest: SnapshotManifest, specs: Sequence[StateStoreSpec], only: Iterable[str] | None
) -> list[tuple[StateStoreSpec, StoreManifestEntry]]:
    by_name = {s.name: s for s in specs}
    wanted = list(only) if only is not None else [e.name for e in manifest.stores]
    out: list[tuple[StateStoreSpec, StoreManifestEntry]] = []
    for name in wanted:
        try:
            entry = manifest.entry(name)
        except KeyError:
            have = ", ".join(e.name for e in manifest.stores)
            raise SpecError(
                f"state store {name!r} is not in this snapshot; it has: {have}"
            ) from None
        spec = by_name.get(name)
        if spec is None or spec.kind != entry.kind:
            raise SpecError(
                f"state store {name!r} ({entry.kind}) is in the snapshot but not declared "
                "with that kind by the model spec; restore needs the declaration"
            )
        out.append((spec, entry))
    return out


def restore_snapshot(
    specs: Sequence[StateStoreSpec],
    artifacts: ArtifactStore,
    ref: str,
    *,
    only: Iterable[str] | None = None,
    mode: str = "auto",
    s3_client: Any = None,
    staging_dir: str | Path | None = None,
    tag: str | None = None,
) -> RestoreResult:
    """Restore every store in the snapshot (or `only` these), verified by hash.

    Every store's bytes are fetched and verified before any store is changed: a corrupt
    or missing blob refuses the whole restore with the stores untouched. `mode="full"`
    skips the change log (SQL) and rewrites everything (directory, S3). `tag` names the
    restore, so a SQL store can say later whether it committed (`restore_committed`).
    """
    if mode not in ("auto", "full"):
        raise SpecError(f"restore mode {mode!r} is not allowed; allowed: auto, full")
    clock = timer()
    sha = snapshot_sha256(ref)
    manifest = load_manifest(artifacts, sha)
    pairs = _entries_for(manifest, specs, only)
    stores = [open_state_store(s, s3_client=s3_client) for s, _ in pairs]
    staging = Path(tempfile.mkdtemp(prefix="modelops-restore-", dir=staging_dir))
    prepared: list[PreparedRestore] = []
    try:
        for store, (_, entry) in zip(stores, pairs, strict=True):
            prepared.append(store.prepare_restore(entry, artifacts, staging, mode=mode, tag=tag))
        reports = [p.apply() for p in prepared]
    finally:
        for p in prepared:
            p.discard()
        for s in stores:
            s.close()
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(snapshot_sha256=sha, stores=reports, elapsed_s=clock())


def changes_since_snapshot(
    specs: Sequence[StateStoreSpec],
    artifacts: ArtifactStore,
    ref: str,
    *,
    s3_client: Any = None,
) -> list[ChangeSummary]:
    """What changed in each store since the snapshot, changing nothing."""
    manifest = load_manifest(artifacts, ref)
    out: list[ChangeSummary] = []
    for spec, entry in _entries_for(manifest, specs, None):
        store = open_state_store(spec, s3_client=s3_client)
        try:
            out.append(store.changes_since(entry, artifacts))
        finally:
            store.close()
    return out
