"""The SQLite side of the SQL table store: triggers feeding the change log, a dump that
shares one WAL read snapshot with its cursor, and restore by backward replay or reload.

SQLite serializes writers, so a read transaction (WAL mode, set on install) sees a prefix of
the log in commit order; its max(seq) is the cursor.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from json.encoder import c_encode_basestring as _c_encode_basestring  # type: ignore[attr-defined]
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from modelops.errors import SpecError
from modelops.state_stores.base import StoreRestoreReport, timer
from modelops.state_stores.sql_base import WRITE_OPS, _LogStats, _mismatch, _q, _Sink, _TableInfo

if TYPE_CHECKING:
    from modelops.state_stores.sql_table import SqlTableStore


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
                f"SELECT op, count(*) FROM {self.log} WHERE seq > ? AND origin IS NULL GROUP BY op",
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
        mark: bool = False,
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
                        if mark:
                            self._mark(conn, origin)
                        conn.execute("COMMIT")
                        return self._report(
                            "incremental" if rewritten else "noop",
                            expected,
                            stats,
                            rewritten,
                            rows,
                            clock(),
                            "",
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
            if mark:
                self._mark(conn, origin)
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

    def _mark(self, conn: sqlite3.Connection, origin: str) -> None:
        """The restore's commit marker, in its own transaction: present iff it committed."""
        conn.execute(f"INSERT INTO {self.log} (op, origin) VALUES ('M', ?)", (origin,))

    def restored(self, origin: str) -> bool:
        """Did a restore with this origin commit? (Its marker is in the log.)"""
        conn = self.connect()
        row = conn.execute(
            f"SELECT 1 FROM {self.log} WHERE op = 'M' AND origin = ? LIMIT 1", (origin,)
        ).fetchone()
        return row is not None

    def _hash_in(self, conn: sqlite3.Connection) -> tuple[str, int]:
        return self._hash(conn)

    def _revert(self, conn: sqlite3.Connection, c: int, origin: str) -> list[str]:
        info = self.info()
        kc = [_q("k__" + k) for k in info.key]
        oc = [_q("o__" + c) for c in info.columns]
        firsts = conn.execute(
            f"SELECT op, {', '.join(kc + oc)} FROM (SELECT op, {', '.join(kc + oc)}, "
            f"row_number() OVER (PARTITION BY {', '.join(kc)} ORDER BY seq) AS rn "
            f"FROM {self.log} WHERE seq > ? AND op NOT IN ('R', 'M')) WHERE rn = 1",
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
