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
import functools
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DataError, StatementError

from modelops.store import db
from serving.predlog.schema import events, open_engine
from serving.records import GatewayEvent, Outcome, PredictionRecord

__all__ = ["PredictionLog"]

log = logging.getLogger("serving.predlog")

# What a bad value raises (wrapped or not, depending on where the driver notices): the batch
# is retried cleaned, then row by row, so one bad row cannot take its batch down with it.
_REJECTED = (StatementError, DataError, TypeError, ValueError, ArithmeticError)


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
    "user_hash", "segment",
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
        _enc(r.features, clean), r.prompt_tokens, r.user_hash, r.segment,
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
        self.engine = open_engine(url, auto_upgrade)
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
