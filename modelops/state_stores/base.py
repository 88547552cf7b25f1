"""One interface over every kind of externalized state store, and the manifest format.

A snapshot of a store is content in the artifact store plus one manifest entry that names
it by hash. A restore reads only verified bytes (the artifact store rehashes every read) and
is checked afterwards against the entry's content hash, so "restored" always means "the
store hashes to what was snapshotted".
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelops.artifacts import ArtifactStore
from modelops.errors import StateStoreUnavailable

__all__ = [
    "StoreManifestEntry",
    "SnapshotManifest",
    "StoreRestoreReport",
    "ChangeSummary",
    "PreparedRestore",
    "StateStore",
    "canonical_json_bytes",
    "unavailable",
]

RestoreMode = Literal["incremental", "full", "noop", "diff"]


def canonical_json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreManifestEntry(_Model):
    """One store in a snapshot: what it must hash to after a restore, and where its bytes are."""

    name: str
    kind: str
    location: str
    content_sha256: str = Field(description="hash a restore must reproduce")
    blobs: list[str] = Field(description="every artifact this entry needs, by sha256")
    items: int = Field(description="rows, files or objects")
    bytes: int
    cursor: dict[str, Any] | None = Field(
        default=None, description="change-log position the content corresponds to (SQL)"
    )
    details: dict[str, Any] = Field(default_factory=dict)


class SnapshotManifest(_Model):
    """The document whose sha256 a version records as its rollback snapshot."""

    format: Literal["modelops-state-snapshot-v1"] = "modelops-state-snapshot-v1"
    created_at: str
    label: dict[str, str | int | None] = Field(default_factory=dict)
    stores: list[StoreManifestEntry]

    def to_bytes(self) -> bytes:
        return canonical_json_bytes(self.model_dump(mode="json"))

    def entry(self, name: str) -> StoreManifestEntry:
        for e in self.stores:
            if e.name == name:
                return e
        raise KeyError(name)


class StoreRestoreReport(_Model):
    """What a restore did to one store. For a SQL table, `writes_after_cursor` counts the
    application's writes logged after the snapshot's cursor (all reverted), and
    `keys_after_cursor` names the rows they touched."""

    store: str
    kind: str
    mode: RestoreMode
    content_sha256: str
    writes_after_cursor: int | None = None
    keys_after_cursor: list[str] = Field(default_factory=list)
    rewritten: list[str] = Field(
        default_factory=list, description="rows/files/objects this run wrote or removed"
    )
    rows_or_files_restored: int = 0
    elapsed_s: float = 0.0
    note: str = ""


class ChangeSummary(_Model):
    """What changed in a store since a snapshot, without changing anything."""

    store: str
    kind: str
    exact_writes: bool = Field(description="True if `writes` counts writes, not net changes")
    writes: int
    keys: list[str]
    by_op: dict[str, int] = Field(default_factory=dict)


class PreparedRestore(ABC):
    """Everything a restore needs, already fetched and verified; applying touches the store.

    Splitting the two lets a multi-store restore verify every store's bytes before it
    changes any store.
    """

    @abstractmethod
    def apply(self) -> StoreRestoreReport: ...

    def discard(self) -> None:  # noqa: B027 - an optional hook
        """Drop staged files; a prepared restore that is never applied leaves nothing."""


class StateStore(ABC):
    kind: str

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return str(self.spec.name)

    def location(self) -> str:
        return str(self.spec.location())

    @abstractmethod
    def probe(self) -> None:
        """Raise StateStoreUnavailable (naming the store) if it cannot be reached."""

    @abstractmethod
    def snapshot(self, artifacts: ArtifactStore) -> StoreManifestEntry:
        """Put the store's content in the artifact store; return its manifest entry."""

    @abstractmethod
    def prepare_restore(
        self,
        entry: StoreManifestEntry,
        artifacts: ArtifactStore,
        staging: Path,
        *,
        mode: str,
        tag: str | None = None,
    ) -> PreparedRestore:
        """Fetch and verify what a restore needs; refuse before touching the store. `tag`
        names the restore (a rollback run) where the store can record that it committed."""

    def restore_committed(self, entry: StoreManifestEntry, tag: str) -> bool | None:
        """Whether a restore of `entry` tagged `tag` committed; None where the kind keeps
        no record (a directory, an S3 prefix), so the caller must judge by content."""
        return None

    @abstractmethod
    def changes_since(
        self, entry: StoreManifestEntry, artifacts: ArtifactStore
    ) -> ChangeSummary: ...

    @abstractmethod
    def content_sha256(self) -> str:
        """The hash of the store's current content, computed as a snapshot would."""

    def restore(
        self,
        entry: StoreManifestEntry,
        artifacts: ArtifactStore,
        staging: Path,
        *,
        mode: str = "auto",
    ) -> StoreRestoreReport:
        prepared = self.prepare_restore(entry, artifacts, staging, mode=mode)
        try:
            return prepared.apply()
        finally:
            prepared.discard()

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release connections; a store object is cheap to reopen."""


def unavailable(
    store: StateStore, what: str, exc: BaseException | str, consequence: str
) -> StateStoreUnavailable:
    """One line: which store, where, doing what, the cause, and what it left behind."""
    text = str(exc).strip()
    detail = text.splitlines()[0] if text else type(exc).__name__
    return StateStoreUnavailable(
        f"state store {store.name!r} ({store.kind} {store.location()}) is unreachable "
        f"while {what}: {detail}; {consequence}"
    )


def timer() -> Callable[[], float]:
    t0 = time.perf_counter()
    return lambda: round(time.perf_counter() - t0, 3)
