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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from json.encoder import c_encode_basestring as _c_encode_basestring  # type: ignore[attr-defined]
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from modelops.artifacts import CHUNK_SIZE, ArtifactStore
from modelops.errors import IntegrityError, SpecError, StateStoreUnavailable
from modelops.state_stores.base import (
    ChangeSummary,
    PreparedRestore,
    StateStore,
    StoreManifestEntry,
    StoreRestoreReport,
    timer,
    unavailable,
)
from modelops.state_stores.config import SqlTableStoreSpec

__all__ = ["SqlTableStore"]

_DUMP_FORMATS = {"sqlite": "modelops-sqlite-rows-v1", "postgresql": "modelops-pg-copy-text-v1"}
WRITE_OPS = ("I", "U", "D")
# Log operations: I insert, U update (old row), D delete (old row), K a key an update moved
# a row to (absent before), R reset marker (log not continuous across it: full restore).


@dataclass(frozen=True)
class _TableInfo:
    columns: list[str]  # ordinary (stored, non-generated) columns in table order
    key: list[str]
    all_columns: list[str]  # what the dump contains


@dataclass
class _LogStats:
    resets: int
    app_writes: int
    by_op: dict[str, int]
    keys: list[str]


class _Sink:
    """Hash and count bytes; optionally keep them in a file."""

    def __init__(self, fh: IO[bytes] | None = None) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.fh = fh

    def write(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        self.size += len(data)
        if self.fh is not None:
            self.fh.write(data)


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


# ------------------------------------------------------------------------------ SQLite


def _bytes_to_json(v: Any) -> Any:
    if type(v) is bytes:
        return {"b": v.hex()}
    raise SpecError(f"unsupported SQLite value of type {type(v).__name__}")


# One encoder and one decoder, so each row is a single call into the C implementation.
# Floats need no tag: their JSON spelling is Python's repr, which round-trips every bit and
# always carries a '.', an exponent or a name (NaN, Infinity), so an int never reads back as
# a float or the other way round. Blobs are the one SQLite type JSON lacks.
_ENCODE: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=_bytes_to_json
).encode
if _c_make_encoder is not None:  # the same encoding, without building an encoder per row
    _C_ENCODER = _c_make_encoder(
        None, _bytes_to_json, _c_encode_basestring, None, ":", ",", False, False, True
    )

    def _ENCODE(row: Any) -> str:  # noqa: N802 - same name as the fallback
        return "".join(_C_ENCODER(row, 0))

_DECODE = json.JSONDecoder(object_hook=lambda d: bytes.fromhex(d["b"])).decode


def _ascii_lines(rows: list[Any]) -> bytes:
    """What the content hash of a SQLite table covers: each row's ascii(), one per line.

    Exact (floats by repr, blobs as bytes literals, every non-ASCII character escaped, so no
    Unicode-database version can change it) and about three times cheaper than the
    reloadable JSON dump, which matters because every restore rehashes the whole table.
    """
    return ("\n".join(map(ascii, rows)) + "\n").encode()


def _same(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> bool:
    """Equal values of equal types: 1 and 1.0 differ, as SQLite keeps them apart."""
    if a is None or b is None:
        return a is b
    return bool(_ENCODE(a) == _ENCODE(b))


class _Sqlite:
    dialect = "sqlite"

    def __init__(self, store: SqlTableStore, url: str) -> None:
        self.store = store
        self.spec = store.spec
        self.path = url[len("sqlite:///") :]
        self.t = _q(self.spec.table)
        self.log_name = self.spec.log_table_name
        self.log = _q(self.log_name)
        self.ctl = _q(self.log_name + "_origin")
        self._conn: sqlite3.Connection | None = None
        self._info: _TableInfo | None = None

    def connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not os.path.isfile(self.path):
                raise FileNotFoundError(f"no SQLite database file at {self.path}")
            conn = sqlite3.connect(
                f"file:{quote(os.path.abspath(self.path))}?mode=rw",
                uri=True,
                timeout=60,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA busy_timeout = 60000")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def info(self) -> _TableInfo:
        if self._info is not None:
            return self._info
        conn = self.connect()
        rows = conn.execute(f"PRAGMA table_xinfo({self.t})").fetchall()
        if not rows:
            raise LookupError(f"table {self.spec.table!r} does not exist")
        cols = [r[1] for r in rows if r[6] == 0]
        types = {r[1]: (r[2] or "").upper() for r in rows}
        notnull = {r[1]: bool(r[3]) for r in rows}
        pk = [r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5])]
        key = list(self.spec.key_columns) or pk
        where = f"table {self.spec.table!r}"
        if not key:
            raise SpecError(
                f"state store {self.spec.name!r}: {where} has no primary key; declare "
                "key_columns naming a NOT NULL unique key"
            )
        for c in key:
            if c not in cols:
                raise SpecError(f"state store {self.spec.name!r}: key column {c!r} not in {where}")
        if set(key) != set(pk) and not self._unique_index(set(key)):
            raise SpecError(
                f"state store {self.spec.name!r}: key_columns {key} of {where} are neither its "
                "primary key nor a unique index; a row must be identified by a unique key"
            )
        rowid_alias = pk == key and len(pk) == 1 and types[pk[0]] == "INTEGER"
        nullable = [c for c in key if not notnull[c] and not rowid_alias]
        if nullable:
            raise SpecError(
                f"state store {self.spec.name!r}: key column(s) {nullable} of {where} are "
                "nullable; a key must be NOT NULL"
            )
        self._info = _TableInfo(columns=cols, key=key, all_columns=cols)
        return self._info

    def _unique_index(self, cols: set[str]) -> bool:
        conn = self.connect()
        for idx in conn.execute(f"PRAGMA index_list({self.t})").fetchall():
            if idx[2] and not idx[4]:
                names = {r[2] for r in conn.execute(f"PRAGMA index_info({_q(idx[1])})")}
                if names == cols:
                    return True
        return False

    # -- install

    def _trigger_sql(self, info: _TableInfo) -> dict[str, str]:
        kcols = ", ".join(_q("k__" + c) for c in info.key)
        ocols = ", ".join(_q("o__" + c) for c in info.columns)
        origin = f"(SELECT origin FROM {self.ctl} WHERE id = 1)"
        old_k = ", ".join(f"OLD.{_q(c)}" for c in info.key)
        new_k = ", ".join(f"NEW.{_q(c)}" for c in info.key)
        old_o = ", ".join(f"OLD.{_q(c)}" for c in info.columns)
        same_key = " AND ".join(f"NEW.{_q(c)} IS OLD.{_q(c)}" for c in info.key)
        n = self.log_name
        return {
            f"{n}_ai": (
                f"CREATE TRIGGER {_q(n + '_ai')} AFTER INSERT ON {self.t} BEGIN "
                f"INSERT INTO {self.log} (op, origin, {kcols}) VALUES ('I', {origin}, {new_k}); "
                "END"
            ),
            f"{n}_au": (
                f"CREATE TRIGGER {_q(n + '_au')} AFTER UPDATE ON {self.t} BEGIN "
                f"INSERT INTO {self.log} (op, origin, {kcols}, {ocols}) "
                f"VALUES ('U', {origin}, {old_k}, {old_o}); "
                f"INSERT INTO {self.log} (op, origin, {kcols}) "
                f"SELECT 'K', {origin}, {new_k} WHERE NOT ({same_key}); "
                "END"
            ),
            f"{n}_ad": (
                f"CREATE TRIGGER {_q(n + '_ad')} AFTER DELETE ON {self.t} BEGIN "
                f"INSERT INTO {self.log} (op, origin, {kcols}, {ocols}) "
                f"VALUES ('D', {origin}, {old_k}, {old_o}); "
                "END"
            ),
        }

    def install(self) -> bool:
        """Idempotent. Returns True if triggers had to be (re)created, which also writes a
        reset marker: writes before it may be missing from the log."""
        info = self.info()
        conn = self.connect()
        want = self._trigger_sql(info)
        have = dict(
            conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                (self.spec.table,),
            ).fetchall()
        )
        if {k: have.get(k) for k in want} == want and self._log_columns_ok(info):
            return False
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpecError(
                f"state store {self.spec.name!r}: cannot switch {self.path} to WAL "
                f"(journal_mode is {mode}); writers would wait for every snapshot"
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.log} (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                "op TEXT NOT NULL, origin TEXT, "
                "ts TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
            )
            present = {r[1] for r in conn.execute(f"PRAGMA table_info({self.log})")}
            # Untyped columns have no affinity: old values are kept exactly as stored.
            for c in ["k__" + k for k in info.key] + ["o__" + c for c in info.columns]:
                if c not in present:
                    conn.execute(f"ALTER TABLE {self.log} ADD COLUMN {_q(c)}")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.ctl} "
                "(id INTEGER PRIMARY KEY CHECK (id = 1), origin TEXT)"
            )
            conn.execute(f"INSERT OR IGNORE INTO {self.ctl} (id, origin) VALUES (1, NULL)")
            for name in want:
                conn.execute(f"DROP TRIGGER IF EXISTS {_q(name)}")
            for sql in want.values():
                conn.execute(sql)
            conn.execute(f"INSERT INTO {self.log} (op, origin) VALUES ('R', 'install')")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return True

    def _log_columns_ok(self, info: _TableInfo) -> bool:
        present = {r[1] for r in self.connect().execute(f"PRAGMA table_info({self.log})")}
        need = {"k__" + k for k in info.key} | {"o__" + c for c in info.columns}
        return bool(present) and need <= present

    # -- dump

    def _batches(self, conn: sqlite3.Connection) -> Iterator[list[Any]]:
        info = self.info()
        cols = ", ".join(_q(c) for c in info.columns)
        order = ", ".join(_q(c) for c in info.key)
        cur = conn.execute(f"SELECT {cols} FROM {self.t} ORDER BY {order}")
        while rows := cur.fetchmany(4096):
            yield rows

    def _dump(self, conn: sqlite3.Connection, sink: _Sink, check: _Sink) -> int:
        """The reloadable dump (JSON lines) and, in the same pass, the content hash."""
        n = 0
        for rows in self._batches(conn):
            sink.write("".join([_ENCODE(r) + "\n" for r in rows]).encode())
            check.write(_ascii_lines(rows))
            n += len(rows)
        return n

    def _hash(self, conn: sqlite3.Connection) -> tuple[str, int]:
        check = _Sink()
        n = 0
        for rows in self._batches(conn):
            check.write(_ascii_lines(rows))
            n += len(rows)
        return check.digest.hexdigest(), n

    def snapshot(self, sink: _Sink) -> tuple[dict[str, Any], int, str]:
        self.install()
        conn = self.connect()
        check = _Sink()
        conn.execute("BEGIN")
        try:
            # The first read fixes the WAL snapshot: the cursor and the dump share it.
            seq = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {self.log}").fetchone()[0]
            rows = self._dump(conn, sink, check)
        finally:
            conn.execute("COMMIT")
        return {"seq": int(seq), "in_flight": []}, rows, check.digest.hexdigest()

    def content_hash(self) -> tuple[str, int]:
        conn = self.connect()
        conn.execute("BEGIN")
        try:
            return self._hash(conn)
        finally:
            conn.execute("COMMIT")

    # -- log

    def _stats(self, conn: sqlite3.Connection, cursor: dict[str, Any]) -> _LogStats:
        info = self.info()
        c = int(cursor["seq"])
        by_op = dict(
            conn.execute(
                f"SELECT op, count(*) FROM {self.log} WHERE seq > ? AND origin IS NULL "
                "GROUP BY op",
                (c,),
            ).fetchall()
        )
        resets = conn.execute(
            f"SELECT count(*) FROM {self.log} WHERE seq > ? AND op = 'R'", (c,)
        ).fetchone()[0]
        kc = ", ".join(_q("k__" + k) for k in info.key)
        keys = [
            self._key_text(r)
            for r in conn.execute(
                f"SELECT DISTINCT {kc} FROM {self.log} WHERE seq > ? AND origin IS NULL "
                f"AND op IN ('I', 'U', 'D', 'K') ORDER BY {kc}",
                (c,),
            )
        ]
        writes = sum(by_op.get(op, 0) for op in WRITE_OPS)
        return _LogStats(resets=int(resets), app_writes=writes, by_op=by_op, keys=keys)

    def _key_text(self, values: tuple[Any, ...]) -> str:
        return json.dumps(
            dict(zip(self.info().key, values, strict=True)),
            ensure_ascii=False,
            default=_bytes_to_json,
        )

    def stats(self, cursor: dict[str, Any]) -> _LogStats:
        conn = self.connect()
        conn.execute("BEGIN")
        try:
            return self._stats(conn, cursor)
        finally:
            conn.execute("COMMIT")

    # -- restore

    def restore(
        self,
        cursor: dict[str, Any],
        dump: Callable[[], Path],
        expected: str,
        mode: str,
        origin: str,
    ) -> StoreRestoreReport:
        self.install()
        clock = timer()
        conn = self.connect()
        note = ""
        try:
            if mode != "full":
                conn.execute("BEGIN IMMEDIATE")  # writers wait; readers in WAL mode do not
                stats = self._stats(conn, cursor)
                if stats.resets == 0:
                    rewritten = self._revert(conn, int(cursor["seq"]), origin)
                    got, rows = self._hash_in(conn)
                    if got == expected:
                        conn.execute("COMMIT")
                        return self._report(
                            "incremental" if rewritten else "noop", expected, stats, rewritten,
                            rows, clock(), "",
                        )
                    note = (
                        "the change log did not reproduce the snapshot (writes bypassed the "
                        "triggers?); reloaded the full dump"
                    )
                else:
                    note = "the change log was reset after the cursor; reloaded the full dump"
                conn.execute("ROLLBACK")
            path = dump()  # fetched and verified outside the write lock
            conn.execute("BEGIN IMMEDIATE")
            stats = self._stats(conn, cursor)
            rows = self._reload(conn, path, origin)
            got, _ = self._hash_in(conn)
            if got != expected:
                conn.execute("ROLLBACK")
                raise _mismatch(self.store, expected, got)
            conn.execute("COMMIT")
            return self._report("full", expected, stats, [], rows, clock(), note)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _report(
        self,
        mode: str,
        sha: str,
        stats: _LogStats,
        rewritten: list[str],
        rows: int,
        elapsed: float,
        note: str,
    ) -> StoreRestoreReport:
        return StoreRestoreReport(
            store=self.spec.name,
            kind="sql_table",
            mode=mode,  # type: ignore[arg-type]
            content_sha256=sha,
            writes_after_cursor=stats.app_writes,
            keys_after_cursor=stats.keys,
            rewritten=rewritten,
            rows_or_files_restored=len(rewritten) if mode != "full" else rows,
            elapsed_s=elapsed,
            note=note,
        )

    def _hash_in(self, conn: sqlite3.Connection) -> tuple[str, int]:
        return self._hash(conn)

    def _revert(self, conn: sqlite3.Connection, c: int, origin: str) -> list[str]:
        info = self.info()
        kc = [_q("k__" + k) for k in info.key]
        oc = [_q("o__" + c) for c in info.columns]
        firsts = conn.execute(
            f"SELECT op, {', '.join(kc + oc)} FROM (SELECT op, {', '.join(kc + oc)}, "
            f"row_number() OVER (PARTITION BY {', '.join(kc)} ORDER BY seq) AS rn "
            f"FROM {self.log} WHERE seq > ? AND op <> 'R') WHERE rn = 1",
            (c,),
        ).fetchall()
        nk = len(info.key)
        cols = ", ".join(_q(c) for c in info.columns)
        where = " AND ".join(f"{_q(k)} = ?" for k in info.key)
        ins = f"INSERT INTO {self.t} ({cols}) VALUES ({', '.join('?' * len(info.columns))})"
        conn.execute(f"UPDATE {self.ctl} SET origin = ? WHERE id = 1", (origin,))
        rewritten: list[str] = []
        for r in firsts:
            op, key, old = r[0], tuple(r[1 : 1 + nk]), tuple(r[1 + nk :])
            target = None if op in ("I", "K") else old
            current = conn.execute(f"SELECT {cols} FROM {self.t} WHERE {where}", key).fetchone()
            if _same(current, target):
                continue
            if current is not None:
                conn.execute(f"DELETE FROM {self.t} WHERE {where}", key)
            if target is not None:
                conn.execute(ins, target)
            rewritten.append(self._key_text(key))
        conn.execute(f"UPDATE {self.ctl} SET origin = NULL WHERE id = 1")
        return rewritten

    def _reload(self, conn: sqlite3.Connection, dump: Path, origin: str) -> int:
        info = self.info()
        triggers = self._trigger_sql(info)
        for name in triggers:
            conn.execute(f"DROP TRIGGER IF EXISTS {_q(name)}")
        conn.execute(f"DELETE FROM {self.t}")
        cols = ", ".join(_q(c) for c in info.columns)
        ins = f"INSERT INTO {self.t} ({cols}) VALUES ({', '.join('?' * len(info.columns))})"
        rows = 0
        with open(dump, "rb") as fh:
            batch: list[list[Any]] = []
            for line in fh:
                batch.append(_DECODE(line.decode()))
                if len(batch) >= 10000:
                    conn.executemany(ins, batch)
                    rows += len(batch)
                    batch.clear()
            if batch:
                conn.executemany(ins, batch)
                rows += len(batch)
        for sql in triggers.values():
            conn.execute(sql)
        # The reload bypassed the triggers: older cursors cannot be replayed across it.
        conn.execute(f"INSERT INTO {self.log} (op, origin) VALUES ('R', ?)", (origin,))
        return rows


# ------------------------------------------------------------------------------ PostgreSQL


_SESSION = (
    "SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET IntervalStyle = 'postgres'; "
    "SET bytea_output = 'hex'; SET DateStyle = 'ISO, MDY'"
)
# The trigger function renders old rows under the same settings, so the log and the dump
# spell every value alike and floats keep all their bits.
_FN_SETTINGS = (
    "SET extra_float_digits = 3 SET \"TimeZone\" = 'UTC' SET \"IntervalStyle\" = 'postgres' "
    "SET bytea_output = 'hex' SET \"DateStyle\" = 'ISO, MDY'"
)


class _Postgres:
    dialect = "postgresql"

    def __init__(self, store: SqlTableStore, url: str) -> None:
        self.store = store
        self.spec = store.spec
        self.url = re.sub(r"^postgresql\+psycopg://", "postgresql://", url)
        schema = self.spec.db_schema or "public"
        self.schema = schema
        self.t = f"{_q(schema)}.{_q(self.spec.table)}"
        self.log_name = self.spec.log_table_name
        self.log = f"{_q(schema)}.{_q(self.log_name)}"
        self.fn = f"{_q(schema)}.{_q(self.log_name + '_fn')}"
        self.trg_row = _q(self.log_name + "_row")
        self.trg_trunc = _q(self.log_name + "_truncate")
        self._conn: Any = None
        self._info: _TableInfo | None = None

    def connect(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
            conn.execute(_SESSION)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def info(self) -> _TableInfo:
        if self._info is not None:
            return self._info
        conn = self.connect()
        oid = conn.execute("SELECT to_regclass(%s)::oid", (self.t,)).fetchone()[0]
        if oid is None:
            raise LookupError(f"table {self.schema}.{self.spec.table} does not exist")
        rows = conn.execute(
            "SELECT attname, attgenerated <> '' AS gen, attnotnull FROM pg_attribute "
            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (oid,),
        ).fetchall()
        all_cols = [r[0] for r in rows]
        cols = [r[0] for r in rows if not r[1]]
        notnull = {r[0]: r[2] for r in rows}
        idx = conn.execute(
            "SELECT i.indisprimary, array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL "
            "AND i.indexprs IS NULL GROUP BY i.indexrelid, i.indisprimary",
            (oid,),
        ).fetchall()
        pk = next((list(r[1]) for r in idx if r[0]), [])
        key = list(self.spec.key_columns) or pk
        where = f"table {self.schema}.{self.spec.table}"
        if not key:
            raise SpecError(
                f"state store {self.spec.name!r}: {where} has no primary key; declare "
                "key_columns naming a NOT NULL unique key"
            )
        for c in key:
            if c not in cols:
                raise SpecError(f"state store {self.spec.name!r}: key column {c!r} not in {where}")
        if not any(set(r[1]) == set(key) for r in idx):
            raise SpecError(
                f"state store {self.spec.name!r}: key_columns {key} of {where} are neither its "
                "primary key nor a unique index; a row must be identified by a unique key"
            )
        nullable = [c for c in key if not notnull[c]]
        if nullable:
            raise SpecError(
                f"state store {self.spec.name!r}: key column(s) {nullable} of {where} are "
                "nullable; a key must be NOT NULL"
            )
        self._info = _TableInfo(columns=cols, key=key, all_columns=all_cols)
        return self._info

    def _key_obj(self, rec: str = "") -> str:
        pre = f"{rec}." if rec else ""
        return "jsonb_build_object(" + ", ".join(
            f"'{k}', {pre}{_q(k)}" for k in self.info().key
        ) + ")"

    def _fn_body(self) -> str:
        log = self.log
        ins = f"INSERT INTO {log} (op, origin, key, old_row) VALUES"
        return (
            "\nDECLARE\n"
            "  o text := nullif(current_setting('modelops.origin', true), '');\n"
            "  ok jsonb;\n  nk jsonb;\n"
            "BEGIN\n"
            "  IF TG_OP = 'TRUNCATE' THEN\n"
            f"    INSERT INTO {log} (op, origin) VALUES ('R', coalesce(o, 'truncate'));\n"
            "    RETURN NULL;\n"
            "  END IF;\n"
            f"  IF TG_OP <> 'INSERT' THEN ok := {self._key_obj('OLD')}; END IF;\n"
            f"  IF TG_OP <> 'DELETE' THEN nk := {self._key_obj('NEW')}; END IF;\n"
            "  IF TG_OP = 'INSERT' THEN\n"
            f"    INSERT INTO {log} (op, origin, key) VALUES ('I', o, nk);\n"
            "  ELSIF TG_OP = 'DELETE' THEN\n"
            f"    {ins} ('D', o, ok, to_jsonb(OLD));\n"
            "  ELSE\n"
            f"    {ins} ('U', o, ok, to_jsonb(OLD));\n"
            "    IF nk IS DISTINCT FROM ok THEN\n"
            f"      INSERT INTO {log} (op, origin, key) VALUES ('K', o, nk);\n"
            "    END IF;\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END\n"
        )

    def _installed(self) -> bool:
        conn = self.connect()
        src = conn.execute(
            "SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(%s)", (self.fn + "()",)
        ).fetchone()
        if src is None or src[0] != self._fn_body():
            return False
        trg = dict(
            conn.execute(
                "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
                "AND NOT tgisinternal",
                (self.t,),
            ).fetchall()
        )
        names = (self.log_name + "_row", self.log_name + "_truncate")
        return all(trg.get(n) == "O" for n in names)

    def install(self) -> bool:
        self.info()
        if self._installed():
            return False
        conn = self.connect()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.log,))
            if self._installed():
                return False
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.log} ("
                "seq bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY, "
                "xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
                "op char(1) NOT NULL, origin text, key jsonb, old_row jsonb, "
                "ts timestamptz NOT NULL DEFAULT clock_timestamp())"
            )
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {_q(self.log_name + '_xid')} ON {self.log} (xid)"
            )
            conn.execute(
                f"CREATE OR REPLACE FUNCTION {self.fn}() RETURNS trigger LANGUAGE plpgsql "
                f"{_FN_SETTINGS} AS $modelops_fn${self._fn_body()}$modelops_fn$"
            )
            conn.execute(
                f"CREATE OR REPLACE TRIGGER {self.trg_row} AFTER INSERT OR UPDATE OR DELETE "
                f"ON {self.t} FOR EACH ROW EXECUTE FUNCTION {self.fn}()"
            )
            conn.execute(
                f"CREATE OR REPLACE TRIGGER {self.trg_trunc} AFTER TRUNCATE ON {self.t} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {self.fn}()"
            )
            conn.execute(f"ALTER TABLE {self.t} ENABLE TRIGGER {self.trg_row}")
            conn.execute(f"ALTER TABLE {self.t} ENABLE TRIGGER {self.trg_trunc}")
            conn.execute(f"INSERT INTO {self.log} (op, origin) VALUES ('R', 'install')")
        return True

    def _dump_sql(self) -> str:
        """PostgreSQL's own COPY text format: each type's output function, which its input
        function reads back exactly under the session settings pinned in _SESSION."""
        info = self.info()
        cols = ", ".join(_q(c) for c in info.columns)
        order = ", ".join(_q(k) for k in info.key)
        return f"COPY (SELECT {cols} FROM {self.t} ORDER BY {order}) TO STDOUT"

    def _dump(self, conn: Any, sink: _Sink) -> int:
        rows = 0
        with conn.cursor() as cur, cur.copy(self._dump_sql()) as cp:
            for chunk in cp:
                sink.write(chunk)
                rows += bytes(chunk).count(b"\n")
        return rows

    def snapshot(self, sink: _Sink) -> tuple[dict[str, Any], int, str]:
        self.install()
        conn = self.connect()
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            # One statement fixes the transaction snapshot, the cursor and the in-flight set.
            seq, xip = conn.execute(
                f"SELECT (SELECT coalesce(max(seq), 0) FROM {self.log}), "
                "ARRAY(SELECT x::text FROM pg_snapshot_xip(pg_current_snapshot()) AS x)"
            ).fetchone()
            rows = self._dump(conn, sink)
        finally:
            conn.execute("COMMIT")
        # The COPY text is canonical under the pinned session settings: it is the content.
        cursor = {"seq": int(seq), "in_flight": sorted(int(x) for x in xip)}
        return cursor, rows, sink.digest.hexdigest()

    def content_hash(self) -> tuple[str, int]:
        conn = self.connect()
        sink = _Sink()
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            rows = self._dump(conn, sink)
        finally:
            conn.execute("COMMIT")
        return sink.digest.hexdigest(), rows

    @staticmethod
    def _after(cursor: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return (
            "(seq > %(c)s OR xid = ANY(%(xip)s::text[]::xid8[]))",
            {"c": int(cursor["seq"]), "xip": [str(x) for x in cursor.get("in_flight", [])]},
        )

    def _stats(self, conn: Any, cursor: dict[str, Any]) -> _LogStats:
        pred, params = self._after(cursor)
        by_op = dict(
            conn.execute(
                f"SELECT op, count(*) FROM {self.log} WHERE {pred} AND origin IS NULL "
                "GROUP BY op",
                params,
            ).fetchall()
        )
        resets = conn.execute(
            f"SELECT count(*) FROM {self.log} WHERE {pred} AND op = 'R'", params
        ).fetchone()[0]
        keys = [
            r[0]
            for r in conn.execute(
                f"SELECT k::text FROM (SELECT DISTINCT key AS k FROM {self.log} WHERE {pred} "
                "AND origin IS NULL AND op IN ('I', 'U', 'D', 'K')) AS s ORDER BY k",
                params,
            )
        ]
        writes = sum(int(by_op.get(op, 0)) for op in WRITE_OPS)
        return _LogStats(
            resets=int(resets), app_writes=writes, by_op={k: int(v) for k, v in by_op.items()},
            keys=keys,
        )

    def stats(self, cursor: dict[str, Any]) -> _LogStats:
        conn = self.connect()
        with conn.transaction():
            return self._stats(conn, cursor)

    def restore(
        self,
        cursor: dict[str, Any],
        dump: Callable[[], Path],
        expected: str,
        mode: str,
        origin: str,
    ) -> StoreRestoreReport:
        self.install()
        clock = timer()
        conn = self.connect()
        note = ""
        if mode != "full":
            try:
                with conn.transaction():
                    # Writers wait for the restore; readers do not.
                    conn.execute(f"LOCK TABLE {self.t} IN SHARE ROW EXCLUSIVE MODE")
                    conn.execute("SELECT set_config('modelops.origin', %s, true)", (origin,))
                    stats = self._stats(conn, cursor)
                    if stats.resets:
                        note = "the change log was reset after the cursor; reloaded the full dump"
                        raise _Fallback
                    rewritten = self._revert(conn, cursor)
                    got, rows = self._hash_in(conn)
                    if got != expected:
                        note = (
                            "the change log did not reproduce the snapshot (writes bypassed "
                            "the triggers?); reloaded the full dump"
                        )
                        raise _Fallback
                return StoreRestoreReport(
                    store=self.spec.name,
                    kind="sql_table",
                    mode="incremental" if rewritten else "noop",
                    content_sha256=expected,
                    writes_after_cursor=stats.app_writes,
                    keys_after_cursor=stats.keys,
                    rewritten=rewritten,
                    rows_or_files_restored=len(rewritten),
                    elapsed_s=clock(),
                )
            except _Fallback:
                pass
        path = dump()  # fetched and verified before the table is locked
        with conn.transaction():
            conn.execute(f"LOCK TABLE {self.t} IN ACCESS EXCLUSIVE MODE")
            conn.execute("SELECT set_config('modelops.origin', %s, true)", (origin,))
            stats = self._stats(conn, cursor)
            rows = self._reload(conn, path, origin)
            got, _ = self._hash_in(conn)
            if got != expected:
                raise _mismatch(self.store, expected, got)
        return StoreRestoreReport(
            store=self.spec.name,
            kind="sql_table",
            mode="full",
            content_sha256=expected,
            writes_after_cursor=stats.app_writes,
            keys_after_cursor=stats.keys,
            rows_or_files_restored=rows,
            elapsed_s=clock(),
            note=note,
        )

    def _hash_in(self, conn: Any) -> tuple[str, int]:
        sink = _Sink()
        rows = self._dump(conn, sink)
        return sink.digest.hexdigest(), rows

    def _revert(self, conn: Any, cursor: dict[str, Any]) -> list[str]:
        info = self.info()
        pred, params = self._after(cursor)
        conn.execute(
            "CREATE TEMP TABLE modelops_firsts (key jsonb, op char(1), old_row jsonb) "
            "ON COMMIT DROP"
        )
        conn.execute(
            "INSERT INTO modelops_firsts SELECT DISTINCT ON (key) key, op, old_row "
            f"FROM {self.log} WHERE {pred} AND op <> 'R' ORDER BY key, seq",
            params,
        )
        match_k = " AND ".join(f"t.{_q(k)} = k.{_q(k)}" for k in info.key)
        deleted = [
            r[0]
            for r in conn.execute(
                f"DELETE FROM {self.t} AS t USING modelops_firsts f, "
                f"LATERAL jsonb_populate_record(NULL::{self.t}, f.key) AS k "
                f"WHERE {match_k} AND (f.op IN ('I', 'K') OR "
                "to_jsonb(t)::text IS DISTINCT FROM f.old_row::text) RETURNING f.key::text"
            )
        ]
        cols = ", ".join(_q(c) for c in info.columns)
        rcols = ", ".join(f"r.{_q(c)}" for c in info.columns)
        match_x = " AND ".join(f"x.{_q(k)} = r.{_q(k)}" for k in info.key)
        inserted = [
            r[0]
            for r in conn.execute(
                f"INSERT INTO {self.t} ({cols}) OVERRIDING SYSTEM VALUE "
                f"SELECT {rcols} FROM modelops_firsts f, "
                f"LATERAL jsonb_populate_record(NULL::{self.t}, f.old_row) AS r "
                f"WHERE f.op IN ('U', 'D') AND NOT EXISTS "
                f"(SELECT 1 FROM {self.t} AS x WHERE {match_x}) "
                f"RETURNING {self._key_obj()}::text"
            )
        ]
        return sorted(set(deleted) | set(inserted))

    def _reload(self, conn: Any, dump: Path, origin: str) -> int:
        info = self.info()
        conn.execute(f"ALTER TABLE {self.t} DISABLE TRIGGER {self.trg_row}")
        conn.execute(f"ALTER TABLE {self.t} DISABLE TRIGGER {self.trg_trunc}")
        import psycopg

        try:
            with conn.transaction():  # a savepoint: TRUNCATE fails if a foreign key points here
                conn.execute(f"TRUNCATE ONLY {self.t}")
        except psycopg.errors.FeatureNotSupported:
            conn.execute(f"DELETE FROM ONLY {self.t}")
        cols = ", ".join(_q(c) for c in info.columns)
        with conn.cursor() as cur:
            with cur.copy(f"COPY {self.t} ({cols}) FROM STDIN") as cp:
                with open(dump, "rb") as fh:
                    for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
                        cp.write(chunk)
            rows = cur.rowcount
        conn.execute(f"ALTER TABLE {self.t} ENABLE TRIGGER {self.trg_row}")
        conn.execute(f"ALTER TABLE {self.t} ENABLE TRIGGER {self.trg_trunc}")
        # The reload bypassed the triggers: older cursors cannot be replayed across it.
        conn.execute(f"INSERT INTO {self.log} (op, origin) VALUES ('R', %s)", (origin,))
        return int(rows)


class _Fallback(Exception):
    """Leave the incremental transaction (rolled back) for a full reload."""


def _mismatch(store: StateStore, expected: str, got: str) -> IntegrityError:
    return IntegrityError(
        f"restore of state store {store.name!r} ({store.location()}) would give sha256 "
        f"{got[:16]}, not the snapshot's {expected[:16]}; rolled back, the table is untouched"
    )


# ------------------------------------------------------------------------------ the store


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
        self, entry: StoreManifestEntry, artifacts: ArtifactStore, staging: Path, *, mode: str
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
        return _SqlPrepared(self, entry, artifacts, staging / f"{self.name}.dump", mode)

    def changes_since(
        self, entry: StoreManifestEntry, artifacts: ArtifactStore
    ) -> ChangeSummary:
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
    ) -> None:
        self.store, self.entry, self.artifacts = store, entry, artifacts
        self.dump, self.mode = dump, mode

    def _dump_path(self) -> Path:
        if not self.dump.exists():
            self.artifacts.fetch(_dump_sha(self.entry), self.dump)
        return self.dump

    def apply(self) -> StoreRestoreReport:
        assert self.entry.cursor is not None
        origin = f"restore:{self.entry.content_sha256[:16]}"
        with self.store._reachable("restoring", "the table was rolled back and is untouched"):
            return self.store.backend.restore(
                self.entry.cursor, self._dump_path, self.entry.content_sha256, self.mode, origin
            )

    def discard(self) -> None:
        with suppress(FileNotFoundError):
            self.dump.unlink()


def _dump_sha(entry: StoreManifestEntry) -> str:
    return str(entry.details.get("dump_sha256") or entry.blobs[0])
