"""The PostgreSQL side of the SQL table store: a trigger function feeding the change log,
a COPY dump taken in a REPEATABLE READ transaction, and restore by backward replay or reload.

PostgreSQL hands out sequence numbers before commit, so a transaction in flight at the
snapshot can hold a seq below a visible one. The snapshot records its MVCC snapshot's
in-flight transaction ids next to max(seq); "after the cursor" is seq > cursor or written by
one of those transactions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelops.artifacts import CHUNK_SIZE
from modelops.errors import SpecError
from modelops.state_stores.base import StoreRestoreReport, timer
from modelops.state_stores.sql_base import (
    WRITE_OPS,
    _Fallback,
    _LogStats,
    _mismatch,
    _q,
    _Sink,
    _TableInfo,
)

if TYPE_CHECKING:
    from modelops.state_stores.sql_table import SqlTableStore


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
        return (
            "jsonb_build_object(" + ", ".join(f"'{k}', {pre}{_q(k)}" for k in self.info().key) + ")"
        )

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
                f"SELECT op, count(*) FROM {self.log} WHERE {pred} AND origin IS NULL GROUP BY op",
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
            resets=int(resets),
            app_writes=writes,
            by_op={k: int(v) for k, v in by_op.items()},
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
        mark: bool = False,
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
                    if mark:
                        self._mark(conn, origin)
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
            if mark:
                self._mark(conn, origin)
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

    def _mark(self, conn: Any, origin: str) -> None:
        """The restore's commit marker, in its own transaction: present iff it committed."""
        conn.execute(f"INSERT INTO {self.log} (op, origin) VALUES ('M', %s)", (origin,))

    def restored(self, origin: str) -> bool:
        """Did a restore with this origin commit? (Its marker is in the log.)"""
        conn = self.connect()
        with conn.transaction():
            row = conn.execute(
                f"SELECT 1 FROM {self.log} WHERE op = 'M' AND origin = %s LIMIT 1", (origin,)
            ).fetchone()
        return row is not None

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
            f"FROM {self.log} WHERE {pred} AND op NOT IN ('R', 'M') ORDER BY key, seq",
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
