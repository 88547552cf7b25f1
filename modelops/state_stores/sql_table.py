"""A SQL table (SQLite or PostgreSQL) as rollback-able state: a dump plus a change log.

The design's failure mode is the canary's own writes: the snapshot is taken on the way in,
and the new model keeps writing afterwards. Quiescing writers for the whole snapshot is not
acceptable, so this is the design's option (b): triggers append every row change (sequence
number, key, operation, old row) to a change-log table, and the snapshot records the log
cursor its dump corresponds to.

Restore is a backward replay, compressed: for every key touched after the cursor, only the
first change after the cursor matters, because its old row is exactly the row at the
snapshot (or, for an insert, the absence of one). So a restore rewrites only the touched
keys, O(changes) instead of O(table), and then proves itself by rehashing the whole table
against the snapshot's hash inside the same transaction. If the log cannot reproduce the
snapshot (a reset marker after the cursor, or writes that bypassed the triggers), the same
transaction falls back to a full reload of the verified dump. Either way a mismatch rolls
back and leaves the table untouched.

Cursor and dump must describe the same instant while writers keep writing:
- SQLite serializes writers, so a read transaction (WAL mode, set on install) sees a prefix
  of the log in commit order; its max(seq) is the cursor.
- PostgreSQL hands out sequence numbers before commit, so a transaction in flight at the
  snapshot can hold a seq below a visible one. The snapshot is taken in a REPEATABLE READ
  transaction that records its MVCC snapshot's in-flight transaction ids next to max(seq);
  "after the cursor" is seq > cursor or written by one of those transactions.

The dialects live beside this module: `sql_sqlite`, `sql_postgres`, and what they share in
`sql_base`.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from modelops.artifacts import ArtifactStore
from modelops.errors import IntegrityError, SpecError, StateStoreUnavailable
from modelops.state_stores.base import (
    ChangeSummary,
    PreparedRestore,
    StateStore,
    StoreManifestEntry,
    StoreRestoreReport,
    unavailable,
)
from modelops.state_stores.config import SqlTableStoreSpec
from modelops.state_stores.sql_base import _DUMP_FORMATS, _Sink
from modelops.state_stores.sql_postgres import _Postgres
from modelops.state_stores.sql_sqlite import _Sqlite

__all__ = ["SqlTableStore"]


class SqlTableStore(StateStore):
    kind = "sql_table"
    spec: SqlTableStoreSpec

    def __init__(self, spec: SqlTableStoreSpec) -> None:
        super().__init__(spec)
        url = spec.resolved_url()
        self.backend: _Sqlite | _Postgres = (
            _Sqlite(self, url) if url.startswith("sqlite") else _Postgres(self, url)
        )

    @property
    def dialect(self) -> str:
        return self.backend.dialect

    def close(self) -> None:
        self.backend.close()

    @contextmanager
    def _reachable(self, what: str, consequence: str) -> Iterator[None]:
        errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, LookupError)
        try:
            import psycopg

            errors = (*errors, psycopg.OperationalError, psycopg.errors.UndefinedTable)
        except ImportError:  # pragma: no cover - psycopg is a core dependency
            pass
        try:
            yield
        except StateStoreUnavailable:
            raise
        except errors as exc:
            self.backend.close()
            raise unavailable(self, what, exc, consequence) from None

    def probe(self) -> None:
        with self._reachable("connecting", "the snapshot was not taken"):
            self.backend.connect()
            self.backend.info()

    def install_change_log(self) -> bool:
        """Create the log table and triggers if missing; True if anything was (re)created."""
        with self._reachable("installing the change log", "nothing was changed"):
            return self.backend.install()

    def snapshot(self, artifacts: ArtifactStore) -> StoreManifestEntry:
        with tempfile.TemporaryDirectory(prefix="modelops-sqlsnap-") as d:
            tmp = Path(d) / "dump"
            with self._reachable("taking the snapshot", "the snapshot was not taken"):
                with open(tmp, "wb") as fh:
                    sink = _Sink(fh)
                    cursor, rows, content = self.backend.snapshot(sink)
            info = self.backend.info()
            ref = artifacts.put_file(tmp)
        if ref.sha256 != sink.digest.hexdigest():
            raise IntegrityError(
                f"state store {self.name!r}: the dump changed on its way to the artifact store"
            )
        return StoreManifestEntry(
            name=self.name,
            kind=self.kind,
            location=self.location(),
            content_sha256=content,
            blobs=[ref.sha256],
            items=rows,
            bytes=ref.size,
            cursor=cursor,
            details={
                "dialect": self.dialect,
                "format": _DUMP_FORMATS[self.dialect],
                "table": self.spec.table,
                "columns": info.all_columns,
                "key_columns": info.key,
                "log_table": self.spec.log_table_name,
                "dump_sha256": ref.sha256,
            },
        )

    def content_sha256(self) -> str:
        with self._reachable("hashing the table", "nothing was changed"):
            return self.backend.content_hash()[0]

    def _check_entry(self, entry: StoreManifestEntry) -> None:
        d = entry.details
        info = self.backend.info()
        if d.get("dialect") != self.dialect or d.get("format") != _DUMP_FORMATS[self.dialect]:
            raise SpecError(
                f"state store {self.name!r}: the snapshot is a {d.get('dialect')} dump, the "
                f"store is {self.dialect}; restore into the same kind of database"
            )
        if d.get("columns") != info.all_columns or d.get("key_columns") != info.key:
            raise SpecError(
                f"state store {self.name!r}: table {self.spec.table} changed shape since the "
                f"snapshot (columns {d.get('columns')} key {d.get('key_columns')}, now "
                f"{info.all_columns} key {info.key}); restore needs the same columns"
            )
        if entry.cursor is None:
            raise SpecError(f"state store {self.name!r}: the manifest entry has no cursor")

    def prepare_restore(
        self,
        entry: StoreManifestEntry,
        artifacts: ArtifactStore,
        staging: Path,
        *,
        mode: str,
        tag: str | None = None,
    ) -> PreparedRestore:
        with self._reachable("preparing the restore", "the store was not changed"):
            self._check_entry(entry)
        # Verified before any store changes: a corrupt dump refuses the restore here. The
        # change-log path never reads it, so it is fetched only if a reload needs it.
        dump_sha = _dump_sha(entry)
        if mode == "full":
            artifacts.fetch(dump_sha, staging / f"{self.name}.dump")
        else:
            artifacts.verify(dump_sha)
        return _SqlPrepared(self, entry, artifacts, staging / f"{self.name}.dump", mode, tag)

    def restore_committed(self, entry: StoreManifestEntry, tag: str) -> bool:
        """Exactly whether a restore of `entry` tagged `tag` committed: its commit marker is
        written in the restore's own transaction."""
        with self._reachable("reading the change log", "nothing was changed"):
            return self.backend.restored(_origin(entry, tag))

    def changes_since(self, entry: StoreManifestEntry, artifacts: ArtifactStore) -> ChangeSummary:
        with self._reachable("reading the change log", "nothing was changed"):
            self._check_entry(entry)
            assert entry.cursor is not None
            stats = self.backend.stats(entry.cursor)
        return ChangeSummary(
            store=self.name,
            kind=self.kind,
            exact_writes=stats.resets == 0,
            writes=stats.app_writes,
            keys=stats.keys,
            by_op=stats.by_op,
        )


class _SqlPrepared(PreparedRestore):
    def __init__(
        self,
        store: SqlTableStore,
        entry: StoreManifestEntry,
        artifacts: ArtifactStore,
        dump: Path,
        mode: str,
        tag: str | None = None,
    ) -> None:
        self.store, self.entry, self.artifacts = store, entry, artifacts
        self.dump, self.mode, self.tag = dump, mode, tag

    def _dump_path(self) -> Path:
        if not self.dump.exists():
            self.artifacts.fetch(_dump_sha(self.entry), self.dump)
        return self.dump

    def apply(self) -> StoreRestoreReport:
        assert self.entry.cursor is not None
        origin = _origin(self.entry, self.tag)
        with self.store._reachable("restoring", "the table was rolled back and is untouched"):
            return self.store.backend.restore(
                self.entry.cursor,
                self._dump_path,
                self.entry.content_sha256,
                self.mode,
                origin,
                mark=self.tag is not None,
            )

    def discard(self) -> None:
        with suppress(FileNotFoundError):
            self.dump.unlink()


def _origin(entry: StoreManifestEntry, tag: str | None) -> str:
    """What the restore's own writes, and its commit marker, are logged under."""
    return f"restore:{entry.content_sha256[:16]}" + (f":{tag}" if tag else "")


def _dump_sha(entry: StoreManifestEntry) -> str:
    return str(entry.details.get("dump_sha256") or entry.blobs[0])
