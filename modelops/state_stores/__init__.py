"""Externalized state of STATE_SNAPSHOT models: snapshot on the way in, restore on the way back.

Three kinds behind one interface (`StateStore`): a SQL table on SQLite or PostgreSQL (with a
trigger-fed change log, so writes made after the snapshot are reverted exactly), a local
directory and an S3 prefix. Snapshots are content-addressed in the artifact store under one
manifest whose sha256 names the snapshot.
"""

from modelops.state_stores.base import (
    ChangeSummary,
    PreparedRestore,
    SnapshotManifest,
    StateStore,
    StoreManifestEntry,
    StoreRestoreReport,
)
from modelops.state_stores.config import (
    STORE_KINDS,
    DirectoryStoreSpec,
    S3PrefixStoreSpec,
    SqlTableStoreSpec,
    StateStoreSpec,
)
from modelops.state_stores.snapshots import (
    RestoreResult,
    SnapshotRef,
    changes_since_snapshot,
    install_change_logs,
    load_manifest,
    open_state_store,
    restore_snapshot,
    snapshot_sha256,
    snapshot_stores,
)

__all__ = [
    "STORE_KINDS",
    "ChangeSummary",
    "DirectoryStoreSpec",
    "PreparedRestore",
    "RestoreResult",
    "S3PrefixStoreSpec",
    "SnapshotManifest",
    "SnapshotRef",
    "SqlTableStoreSpec",
    "StateStore",
    "StateStoreSpec",
    "StoreManifestEntry",
    "StoreRestoreReport",
    "changes_since_snapshot",
    "install_change_logs",
    "load_manifest",
    "open_state_store",
    "restore_snapshot",
    "snapshot_sha256",
    "snapshot_stores",
]
