"""The prediction log: what the gateway served, written in batches, read as windows.

One writer (the gateway) and many readers (Dagster sensors in other processes). The embedded
default is a SQLite file in WAL mode next to, but separate from, the registry, so a busy
gateway never contends with registry transactions; PostgreSQL (same schema, chosen by URL)
is the production store and may share the registry's database, because the log keeps its
own Alembic history under its own version table.

The writer never makes the user's request wait: `submit` appends to a bounded in-memory
queue, or drops and counts when it is full. A background thread drains the queue, one
transaction per batch (multi-row INSERTs on SQLite, COPY on PostgreSQL), so a row costs a row
of a bulk insert rather than a commit of its own.

What a crash costs: a row is committed at most `flush_interval_s` after `submit` accepted
it, while the writer keeps up with the traffic (`lag_s` says whether it does). So after the
process dies (`kill -9`, OOM) every row accepted more than `flush_interval_s` before is in
the log; rows of the last interval may be lost. `close()` (SIGTERM, atexit) writes everything
queued, so an orderly stop loses nothing. A power cut is another matter: SQLite in WAL mode
with synchronous=NORMAL (the embedded default) may lose commits since its last checkpoint.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, event, func, inspect, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DataError, OperationalError, StatementError

from modelops.errors import BackendUnavailable, SchemaOutOfDate
from modelops.evidence import TIMEOUT_ERROR, OutcomeStats, TokenStats, WindowStats
from modelops.store import db
from serving.records import GatewayEvent, Outcome, PredictionRecord

__all__ = [
    "HEAD_REVISION",
    "VERSION_TABLE",
    "metadata",
    "predictions",
    "outcomes",
    "events",
    "default_predlog_url",
    "resolve_predlog_url",
    "upgrade",
    "current_revision",
    "ensure_schema",
    "PredictionLog",
    "PredictionLogReader",
]

log = logging.getLogger(__name__)

HEAD_REVISION = "predlog_0002"
VERSION_TABLE = "predlog_alembic_version"
_MIGRATIONS = Path(__file__).resolve().parent / "predlog_migrations"
# What a bad value raises (wrapped or not, depending on where the driver notices): the batch
# is retried cleaned, then row by row, so one bad row cannot take its batch down with it.
_REJECTED = (StatementError, DataError, TypeError, ValueError, ArithmeticError)


# ----------------------------------------------------------------------------- schema


class _Json(sa.types.TypeDecorator[Any]):
    """JSONB on PostgreSQL (queryable), JSON text on SQLite; None is SQL NULL, not 'null'."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(sa.JSON(none_as_null=True))


_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The query-side mirror of the migrations; they, not this, create the tables.
metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(), nullable=False),
    sa.Column("ts", sa.Double(), nullable=False),
    sa.Column("model_id", sa.String(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("arm", sa.String(), nullable=False),
    sa.Column("slice", sa.String(), nullable=False),
    sa.Column("user_bucket", sa.Integer(), nullable=True),
    sa.Column("latency_ms", sa.Double(), nullable=False),
    sa.Column("error", sa.String(), nullable=True),
    sa.Column("outputs", _Json(), nullable=True),
    sa.Column("inputs", _Json(), nullable=True),
    sa.Column("features", _Json(), nullable=True),
    sa.Column("prompt_tokens", sa.Integer(), nullable=True),
    sa.Index(
        "ix_predictions_window",
        *("model_id", "ts", "version", "arm", "slice", "latency_ms", "error", "prompt_tokens"),
    ),
)
outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(), nullable=False),
    sa.Column("ts", sa.Double(), nullable=False),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("value", sa.Double(), nullable=False),
    # One outcome per (request, name): a replayed post cannot count twice (predlog_0002).
    sa.Index("uq_outcomes_request_name", "request_id", "name", unique=True),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Double(), nullable=False),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("model_id", sa.String(), nullable=False),
    sa.Column("slice", sa.String(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=True),
    sa.Column("detail", _Json(), nullable=True),
    sa.Index("ix_events_model_ts", "model_id", "ts"),
)


# ------------------------------------------------------------------- engines, migrations


def default_predlog_url() -> str:
    return f"sqlite:///{db.default_home() / 'predictions.db'}"


def resolve_predlog_url(url: str | None) -> str:
    """An explicit URL beats MODELOPS_PREDLOG_URL beats $MODELOPS_HOME/predictions.db."""
    return db.resolve_url(
        url or os.environ.get("MODELOPS_PREDLOG_URL") or default_predlog_url(),
        what="prediction log",
    )


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Apply the log's migrations: the only way its schema is created or changed."""
    from alembic import command
    from alembic.config import Config

    engine = db.make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    try:
        # Several processes may open a fresh embedded log at once (gateway, sensors): one
        # migrates, the others then find it at head.
        with db._upgrade_lock(engine), engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if isinstance(engine_or_url, str):
            engine.dispose()


def ensure_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    """Embedded SQLite migrates itself on first use; PostgreSQL must be upgraded explicitly."""
    rev = current_revision(engine)
    if rev == HEAD_REVISION:
        return
    if auto_upgrade:
        upgrade(engine)
        return
    where = engine.url.render_as_string(hide_password=True)
    raise SchemaOutOfDate(
        f"prediction log {where} is at schema {rev or 'none'}, code needs {HEAD_REVISION}; "
        "run serving.predlog.upgrade(URL) against it"
    )


def _open(url: str | None, auto_upgrade: bool | None) -> Engine:
    engine = db.make_engine(resolve_predlog_url(url), what="prediction log")
    if auto_upgrade is None:
        auto_upgrade = engine.dialect.name == "sqlite"
    try:
        ensure_schema(engine, auto_upgrade=auto_upgrade)
    except OperationalError as exc:
        engine.dispose()
        # Named here: a caller that also holds a registry must not blame the registry.
        where = engine.url.render_as_string(hide_password=True)
        raise BackendUnavailable(
            f"cannot use the prediction log database {where}: {exc.orig}"
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return engine


# ------------------------------------------------------------------------------ writer


def _jsonable(value: Any) -> Any:
    """Coerce what a model returns (numpy scalars and arrays, NaN) into strict JSON values.

    Only used once a batch was rejected, so the common path pays nothing for it.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return _jsonable(value.tolist())
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


_PRED_COLS = (
    "request_id", "ts", "model_id", "version", "arm", "slice", "user_bucket",
    "latency_ms", "error", "outputs", "inputs", "features", "prompt_tokens",
)  # fmt: skip
_OUTCOME_COLS = ("request_id", "ts", "name", "value")
_JSON_COLS = frozenset({"outputs", "inputs", "features"})
# Strict JSON: NaN would be accepted by SQLite but rejected by PostgreSQL's jsonb, so both
# backends take the same cleaning path and store the same thing (null).
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def _enc(value: Any, clean: bool) -> str | None:
    if value is None:
        return None
    return _encode(_jsonable(value) if clean else value)


def _pred_params(r: PredictionRecord, clean: bool) -> tuple[Any, ...]:
    return (
        r.request_id, r.ts, r.model_id, r.version, r.arm, r.slice, r.user_bucket,
        r.latency_ms, r.error, _enc(r.outputs, clean), _enc(r.inputs, clean),
        _enc(r.features, clean), r.prompt_tokens,
    )  # fmt: skip


def _outcome_params(o: Outcome) -> tuple[Any, ...]:
    return (o.request_id, o.ts, o.name, o.value)


def _multi_row(sql: str, rows: int) -> str:
    """The same INSERT with `rows` VALUES tuples (any prefix or ON CONFLICT suffix kept)."""
    head, tail = sql.split(" VALUES ", 1)
    end = tail.index(")") + 1
    return f"{head} VALUES {', '.join([tail[:end]] * rows)}{tail[end:]}"


# Rows per SQLite INSERT statement: at most SQLite's bound-variable limit (999 before 3.32).
_SQLITE_VARS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


_multi_row_cached = functools.lru_cache(maxsize=256)(_multi_row)


def _insert_sql(dialect: str, table: str, cols: Sequence[str]) -> str:
    """Driver-level INSERT: the writer's hot path skips per-row SQLAlchemy bind processing."""
    mark, json_mark = ("?", "?") if dialect == "sqlite" else ("%s", "%s::jsonb")
    values = ", ".join(json_mark if c in _JSON_COLS else mark for c in cols)
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({values})"


class PredictionLog:
    """The gateway's `PredictionSink`: non-blocking submit, batched background writes.

    Counters (`written`, `outcomes_written`, `dropped`, `failed`, `batches`, `queue_depth`)
    are plain ints a metrics endpoint can export; `dropped` counts records refused because
    the queue was full or the log closed, `failed` records the database rejected. `lag_s` is
    how long the latest batch's oldest row waited until its commit ended: the window a crash
    would have lost at that moment, which stays under `flush_interval_s` while the writer
    keeps up.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        max_queue: int = 50_000,
        batch_size: int = 2_000,
        flush_interval_s: float = 0.1,
        auto_upgrade: bool | None = None,
    ) -> None:
        if max_queue < 1 or batch_size < 1 or not 0 <= flush_interval_s < math.inf:
            raise ValueError("max_queue and batch_size must be >= 1 and flush_interval_s >= 0")
        self.engine = _open(url, auto_upgrade)
        self.url = self.engine.url.render_as_string(hide_password=True)
        dialect = self.engine.dialect.name
        self._copy = dialect == "postgresql"
        # The driver's own DataError too: COPY runs beneath SQLAlchemy, which wraps nothing.
        self._rejected = (*_REJECTED, self.engine.dialect.loaded_dbapi.DataError)
        self._pred_sql = _insert_sql(dialect, "predictions", _PRED_COLS)
        # The first outcome of a (request, name) wins; a later one, from any gateway process,
        # is dropped by the unique index instead of failing its batch.
        self._outcome_sql = (
            _insert_sql(dialect, "outcomes", _OUTCOME_COLS)
            + " ON CONFLICT (request_id, name) DO NOTHING"
        )
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        # How long recent commits took from when they were due to start until they ended
        # (waking up, winning the GIL and a CPU, writing), as a decaying maximum. A commit
        # starts twice that before the oldest queued row's deadline, so one that runs up to
        # twice as long as any recent one (a loaded host) still ends by it.
        self._commit_s = 0.0
        self._planned = 0.0  # when the batch being written was due to start
        self._batch_oldest = 0.0  # arrival of the oldest item in the batch being written
        self.lag_s = 0.0
        self.written = 0
        self.outcomes_written = 0
        self.events_written = 0
        self.dropped = 0
        self.failed = 0
        self.batches = 0
        self._buf: deque[PredictionRecord | Outcome] = deque()
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._accepted = 0  # items ever queued
        self._done = 0  # items taken off the queue and written or failed
        self._oldest = 0.0  # monotonic time the oldest queued item arrived
        self._urgent = 0  # flush() callers waiting: write now, don't wait out the interval
        self._closing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="predlog-writer", daemon=True)
        self._thread.start()
        # A gateway that exits without close() would otherwise lose its queued tail.
        atexit.register(self._close_at_exit)

    # ---- the gateway's side: never blocks beyond a short uncontended lock

    @property
    def queue_depth(self) -> int:
        return len(self._buf)

    def submit(self, record: PredictionRecord) -> bool:
        """Queue one prediction; False (and `dropped` += 1) when full or closed."""
        return self._put(record)

    def submit_outcome(self, outcome: Outcome) -> bool:
        """Queue one label or click; it joins its prediction by request id at read time."""
        return self._put(outcome)

    def submit_event(self, event: GatewayEvent) -> bool:
        """Queue a data-plane event (breaker trip, breaking contract) for the control plane."""
        return self._put(event)

    def _put(self, item: PredictionRecord | Outcome | GatewayEvent) -> bool:
        with self._lock:
            n = len(self._buf)
            if self._closing or n >= self.max_queue:
                self.dropped += 1
                return False
            self._buf.append(item)
            self._accepted += 1
            if n == 0:
                self._oldest = time.monotonic()
                self._has_work.notify()
            elif n + 1 == self.batch_size:
                self._has_work.notify()
            return True

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything queued before this call is written (or failed)."""
        with self._lock:
            target = self._accepted
            self._urgent += 1
            self._has_work.notify()
            try:
                return self._progress.wait_for(lambda: self._done >= target, timeout)
            finally:
                self._urgent -= 1

    def close(self, timeout: float | None = 10.0) -> None:
        """Refuse new records, write what is queued, stop the writer. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._close_at_exit)
        self.flush(timeout)
        with self._lock:
            self._closing = True
            self._has_work.notify()
        self._thread.join(timeout)
        with self._lock:
            # Only if the database stalled past the timeout: account for what never got out.
            self.dropped += len(self._buf)
            self._buf.clear()
        if not self._thread.is_alive():
            self.engine.dispose()

    def _close_at_exit(self) -> None:
        self.close(timeout=5.0)

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the writer thread

    def _take(self) -> list[PredictionRecord | Outcome] | None:
        """Block until a batch is due: full, urgent, or the oldest queued item's commit must
        start now to end within flush_interval_s of its arrival."""
        with self._lock:
            while not self._buf:
                if self._closing:
                    return None
                self._has_work.wait()
            self._planned = time.monotonic()
            while len(self._buf) < self.batch_size and not self._closing and not self._urgent:
                lead = min(2 * self._commit_s, self.flush_interval_s)
                start = self._oldest + self.flush_interval_s - lead
                if start <= time.monotonic():
                    self._planned = start  # a late wake-up counts against the next lead
                    break
                self._has_work.wait(start - time.monotonic())
                self._planned = time.monotonic()  # woken: full, urgent or closing
            self._batch_oldest = self._oldest
            take = min(self.batch_size, len(self._buf))
            # Rows left behind by a full batch are as overdue as its oldest: they keep its
            # deadline, so the next batch is taken at once.
            return [self._buf.popleft() for _ in range(take)]

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            started = time.monotonic()
            try:
                ok_p, ok_o = self._write(batch)
            except Exception:  # noqa: BLE001 - the writer must outlive any one bad batch
                log.exception("prediction log: batch of %d lost", len(batch))
                ok_p, ok_o = 0, 0
            ended = time.monotonic()
            with self._lock:
                self._commit_s = max(ended - min(started, self._planned), self._commit_s * 0.95)
                self.lag_s = ended - self._batch_oldest
                self.written += ok_p
                self.outcomes_written += ok_o
                n_ev = sum(isinstance(x, GatewayEvent) for x in batch)
                self.failed += len(batch) - ok_p - ok_o - n_ev
                self.batches += 1
                self._done += len(batch)
                self._progress.notify_all()

    def _write(self, batch: list[Any]) -> tuple[int, int]:
        """One transaction per batch; on a rejected value, clean the batch, then isolate rows."""
        evs = [x for x in batch if isinstance(x, GatewayEvent)]
        if evs:
            self._write_events(evs)
            batch = [x for x in batch if not isinstance(x, GatewayEvent)]
        preds = [x for x in batch if isinstance(x, PredictionRecord)]
        outs = [_outcome_params(x) for x in batch if isinstance(x, Outcome)]
        for clean in (False, True):
            try:
                params = [_pred_params(r, clean) for r in preds]
                self._insert(params, outs)
                return len(params), len(outs)
            except self._rejected:
                pass
        log.warning("prediction log: batch of %d rejected; writing it row by row", len(batch))
        ok_p = sum(self._insert_one(self._pred_sql, _pred_params(r, True)) for r in preds)
        ok_o = sum(self._insert_one(self._outcome_sql, o) for o in outs)
        return ok_p, ok_o

    def _insert(self, preds: list[tuple[Any, ...]], outs: list[tuple[Any, ...]]) -> None:
        with db.write_tx(self.engine) as conn:
            if self._copy:
                # PostgreSQL: COPY streams the batch in one round trip; an executemany is one
                # bind/execute per row on the server, about a third of the rate here.
                cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                if preds:
                    with cur.copy(f"COPY predictions ({', '.join(_PRED_COLS)}) FROM STDIN") as cp:
                        for row in preds:
                            cp.write_row(row)
                if outs:  # COPY has no ON CONFLICT; outcomes are few
                    cur.executemany(self._outcome_sql, outs)
                return
            # Multi-row statements, not executemany: sqlite3 releases the GIL around every
            # statement step, and a busy gateway thread holds it for a switch interval (5 ms)
            # each time, so one step per row made a batch take seconds under load.
            for sql, rows in ((self._pred_sql, preds), (self._outcome_sql, outs)):
                per = max(1, min(512, _SQLITE_VARS // len(rows[0]))) if rows else 1
                for i in range(0, len(rows), per):
                    chunk = rows[i : i + per]
                    flat = tuple(v for row in chunk for v in row)
                    conn.exec_driver_sql(_multi_row_cached(sql, len(chunk)), flat)

    def _write_events(self, evs: list[GatewayEvent]) -> None:
        """Events are rare; they are written through SQLAlchemy, outside the COPY fast path."""
        rows = [
            {
                "ts": e.ts,
                "kind": e.kind,
                "model_id": e.model_id,
                "slice": e.slice,
                "version": e.version,
                "detail": _jsonable(e.detail),
            }
            for e in evs
        ]
        try:
            with db.write_tx(self.engine) as conn:
                conn.execute(sa.insert(events), rows)
            self.events_written += len(rows)
        except self._rejected as exc:
            self.failed += len(rows)
            log.warning("prediction log: %d events rejected: %s", len(rows), exc)

    def _insert_one(self, sql: str, row: tuple[Any, ...]) -> bool:
        try:
            with db.write_tx(self.engine) as conn:
                conn.exec_driver_sql(sql, [row])
            return True
        except self._rejected as exc:
            reason = getattr(exc, "orig", None) or exc  # the driver's words, not the whole SQL
            log.warning("prediction log: row %s rejected: %s", row[0], reason)
            return False


# ------------------------------------------------------------------------------ reader


_Key = tuple[int, str, str]  # (version, arm, slice)
_SCALE = 10_000  # quantiles in ten-thousandths, so rank arithmetic stays exact
_P50, _P99 = 5_000, 9_900


class PredictionLogReader:
    """Read-only windows over the log, safe from any process while the gateway writes.

    On SQLite every connection is `query_only` and WAL lets it read a consistent snapshot
    without waiting on the writer; on PostgreSQL each read runs in a read-only REPEATABLE
    READ transaction, so the several queries behind one window agree with each other.
    """

    def __init__(self, url: str | None = None, *, auto_upgrade: bool | None = None) -> None:
        # Migrate (SQLite, first use) on a throwaway engine: the reading engine's connections
        # are query-only from the moment they open.
        _open(url, auto_upgrade).dispose()
        engine = db.make_engine(resolve_predlog_url(url))
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine, "connect")
            def _query_only(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
                dbapi_conn.execute("PRAGMA query_only=ON")

            self.engine: Engine = engine
        else:
            self.engine = engine.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        self._base = engine
        self.url = engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._base.dispose()

    def __enter__(self) -> PredictionLogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        with db.read_tx(self.engine) as conn:
            yield conn

    def latest_ts(self, model_id: str | None = None) -> float | None:
        """The newest prediction's timestamp: how far the log has got (sensor cursors)."""
        q = select(func.max(predictions.c.ts))
        if model_id is not None:
            q = q.where(predictions.c.model_id == model_id)
        with self._tx() as conn:
            ts = conn.execute(q).scalar()
        return None if ts is None else float(ts)

    def events(
        self, *, since_ts: float = 0.0, model_id: str | None = None, kind: str | None = None
    ) -> list[GatewayEvent]:
        """Data-plane events in time order (e.g. breaker trips a sensor turns into a rollback)."""
        q = select(events).where(events.c.ts >= since_ts).order_by(events.c.ts, events.c.id)
        if model_id is not None:
            q = q.where(events.c.model_id == model_id)
        if kind is not None:
            q = q.where(events.c.kind == kind)
        with self._tx() as conn:
            rows = conn.execute(q).all()
        return [
            GatewayEvent(
                ts=r.ts,
                kind=r.kind,
                model_id=r.model_id,
                slice=r.slice,
                version=r.version,
                detail=r.detail or {},
            )
            for r in rows
        ]

    def count(self, model_id: str | None = None) -> int:
        q = select(func.count()).select_from(predictions)
        if model_id is not None:
            q = q.where(predictions.c.model_id == model_id)
        with self._tx() as conn:
            return int(conn.execute(q).scalar() or 0)

    def records(
        self,
        model_id: str,
        version: int | None,
        *,
        since_ts: float = 0.0,
        until_ts: float | None = None,
        limit: int = 1_000,
        arm: str | None = None,
        slice: str | None = None,
    ) -> list[PredictionRecord]:
        """Logged requests in time order, with their inputs and point-in-time features, for
        log replay through a shadow version."""
        p = predictions
        conds = [p.c.model_id == model_id, p.c.ts >= since_ts]
        if version is not None:
            conds.append(p.c.version == version)
        if until_ts is not None:
            conds.append(p.c.ts < until_ts)
        if arm is not None:
            conds.append(p.c.arm == arm)
        if slice is not None:
            conds.append(p.c.slice == slice)
        cols = [c for c in p.c if c.name != "id"]
        q = select(*cols).where(*conds).order_by(p.c.ts, p.c.id).limit(limit)
        with self._tx() as conn:
            rows = conn.execute(q).mappings().all()
        return [PredictionRecord.model_validate(dict(r)) for r in rows]

    def window(
        self,
        model_id: str,
        *,
        since_ts: float,
        until_ts: float | None = None,
        slice: str | None = None,
        version: int | None = None,
        with_prompt_tokens: bool = False,
    ) -> list[WindowStats]:
        """Aggregates per (version, arm, slice) over predictions with since_ts <= ts < until_ts.

        Percentiles interpolate linearly between closest ranks (PostgreSQL's percentile_cont,
        numpy's default) on both backends: PostgreSQL computes them in SQL; SQLite has no
        percentile function (and its window functions are slower than sorting here), so it
        streams the window's latencies off the covering index and sorts them in Python.
        Outcomes count whenever they were posted, as long as their prediction is in the window.
        """
        p = predictions
        conds = [p.c.model_id == model_id, p.c.ts >= since_ts]
        if until_ts is not None:
            conds.append(p.c.ts < until_ts)
        if slice is not None:
            conds.append(p.c.slice == slice)
        if version is not None:
            conds.append(p.c.version == version)
        grp = (p.c.version, p.c.arm, p.c.slice)
        one = sa.literal(1)
        cols: list[Any] = [
            *grp,
            func.count().label("n"),
            func.sum(sa.case((p.c.error.is_not(None), one), else_=0)).label("errors"),
            func.sum(sa.case((p.c.error == TIMEOUT_ERROR, one), else_=0)).label("timeouts"),
            func.avg(p.c.latency_ms).label("lat_mean"),
            func.max(p.c.latency_ms).label("lat_max"),
            func.min(p.c.ts).label("first_ts"),
            func.max(p.c.ts).label("last_ts"),
            func.count(p.c.prompt_tokens).label("tok_n"),
            func.avg(p.c.prompt_tokens).label("tok_mean"),
            func.max(p.c.prompt_tokens).label("tok_max"),
        ]
        in_sql = self._base.dialect.name == "postgresql"
        if in_sql:
            for name, col in (("lat", p.c.latency_ms), ("tok", p.c.prompt_tokens)):
                for label, q in (("p50", 0.5), ("p99", 0.99)):  # NULLs are ignored
                    cols.append(func.percentile_cont(q).within_group(col).label(f"{name}_{label}"))
        agg = select(*cols).where(*conds).group_by(*grp)
        o = outcomes
        # A request counts once per series however often its id was logged (a client may
        # reuse x-request-id), and the unique index leaves one outcome per (request, name):
        # so n is the number of distinct requests with that outcome, never more.
        served = select(p.c.request_id, *grp).where(*conds).distinct().subquery()
        sgrp = (served.c.version, served.c.arm, served.c.slice)
        joined = (
            select(*sgrp, o.c.name, func.count().label("n"), func.avg(o.c.value).label("mean"))
            .select_from(served.join(o, o.c.request_id == served.c.request_id))
            .group_by(*sgrp, o.c.name)
        )
        lat: dict[_Key, list[float]] = {}
        tok: dict[_Key, list[int]] = {}
        with self._tx() as conn:  # one snapshot for every query behind this window
            groups = conn.execute(agg).all()
            if not groups:
                return []
            outs: dict[_Key, dict[str, OutcomeStats]] = {}
            for v, a, s, name, n, mean in conn.execute(joined):
                outs.setdefault((v, a, s), {})[name] = OutcomeStats(count=n, mean=float(mean))
            if not in_sql:
                lat, tok = _series_values(conn, conds)
            elif with_prompt_tokens and any(g.tok_n for g in groups):
                q = select(*grp, p.c.prompt_tokens).where(*conds, p.c.prompt_tokens.is_not(None))
                for v, a, s, t in conn.execute(q.order_by(p.c.prompt_tokens)):
                    tok.setdefault((v, a, s), []).append(int(t))
        out = []
        for g in groups:
            key: _Key = (g.version, g.arm, g.slice)
            n, errors, timeouts = int(g.n), int(g.errors), int(g.timeouts)
            if in_sql:
                lat_p50, lat_p99 = float(g.lat_p50), float(g.lat_p99)
            else:
                lat_p50, lat_p99 = _quantile(lat[key], _P50), _quantile(lat[key], _P99)
            tokens = None
            if g.tok_n:
                values = tok.get(key, [])
                tokens = TokenStats(
                    count=int(g.tok_n),
                    mean=float(g.tok_mean),
                    p50=float(g.tok_p50) if in_sql else _quantile(values, _P50),
                    p99=float(g.tok_p99) if in_sql else _quantile(values, _P99),
                    max=int(g.tok_max),
                    values=values if with_prompt_tokens else None,
                )
            out.append(
                WindowStats(
                    model_id=model_id,
                    version=g.version,
                    arm=g.arm,
                    slice=g.slice,
                    since_ts=since_ts,
                    until_ts=until_ts,
                    first_ts=float(g.first_ts),
                    last_ts=float(g.last_ts),
                    requests=n,
                    errors=errors,
                    error_rate=errors / n,
                    timeouts=timeouts,
                    timeout_rate=timeouts / n,
                    latency_mean_ms=float(g.lat_mean),
                    latency_p50_ms=lat_p50,
                    latency_p99_ms=lat_p99,
                    latency_max_ms=float(g.lat_max),
                    outcomes=outs.get(key, {}),
                    prompt_tokens=tokens,
                )
            )
        out.sort(key=lambda w: (w.version, w.arm, w.slice))
        return out


def _series_values(
    conn: Connection, conds: Sequence[Any]
) -> tuple[dict[_Key, list[float]], dict[_Key, list[int]]]:
    """Every latency and prompt length in the window, per series, sorted (SQLite's path)."""
    p = predictions
    q = select(p.c.version, p.c.arm, p.c.slice, p.c.latency_ms, p.c.prompt_tokens).where(*conds)
    lat: dict[_Key, list[float]] = {}
    tok: dict[_Key, list[int]] = {}
    # Fetched in chunks: row-at-a-time iteration costs more than the scan itself.
    for v, a, s, ms, t in conn.execute(q, execution_options={"yield_per": 20_000}):
        key = (v, a, s)
        lat.setdefault(key, []).append(ms)
        if t is not None:
            tok.setdefault(key, []).append(t)
    for xs in (*lat.values(), *tok.values()):
        xs.sort()
    return lat, tok


def _quantile(sorted_values: Sequence[float], k: int) -> float:
    """The k/10000 quantile, interpolating linearly at rank (n - 1) * k / 10000.

    Integer rank arithmetic, so p99 of 1..100 is exactly 99.01, the value percentile_cont and
    numpy give up to float rounding.
    """
    lo, rem = divmod((len(sorted_values) - 1) * k, _SCALE)
    lo_v = float(sorted_values[lo])
    if not rem:
        return lo_v
    return lo_v + (float(sorted_values[lo + 1]) - lo_v) * rem / _SCALE
