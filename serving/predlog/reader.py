"""Read-only windows over the prediction log: the evidence the sensors decide on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, event, func, select

from modelops.evidence import TIMEOUT_ERROR, OutcomeStats, TokenStats, UserSums, WindowStats
from modelops.store import db
from serving.predlog.schema import events, open_engine, outcomes, predictions, resolve_predlog_url
from serving.records import GatewayEvent, PredictionRecord

__all__ = ["PredictionLogReader"]

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
        open_engine(url, auto_upgrade).dispose()
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

    def outcome_values(self, request_ids: Sequence[str], name: str) -> dict[str, float]:
        """The outcome `name` of each of these requests that has one (one per request and
        name, by the unique index): the labels a shadow's calibration is measured on."""
        o = outcomes
        out: dict[str, float] = {}
        ids = list(dict.fromkeys(request_ids))
        with self._tx() as conn:
            for i in range(0, len(ids), 500):  # bounded IN lists on both backends
                q = select(o.c.request_id, o.c.value).where(
                    o.c.name == name, o.c.request_id.in_(ids[i : i + 500])
                )
                out.update({rid: float(v) for rid, v in conn.execute(q)})
        return out

    def window(
        self,
        model_id: str,
        *,
        since_ts: float,
        until_ts: float | None = None,
        slice: str | None = None,
        version: int | None = None,
        with_prompt_tokens: bool = False,
        by_segment: bool = False,
    ) -> list[WindowStats]:
        """Aggregates per (version, arm, slice) over predictions with since_ts <= ts < until_ts.

        Per user (requests carrying a user hash): users, and the six sums of each ratio the
        sensors test (requests and errors per user; each outcome's values and requests per
        user), computed in SQL as a GROUP BY user inside a GROUP BY series, so no row leaves
        the database (`modelops.evaluation.ratio`). `by_segment` adds the outcome sums per
        data slice (segment), for the protected-slice tests.

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
        per_user = _per_user_requests(conds)
        joined = _per_user_outcomes(conds, by_segment=False)
        lat: dict[_Key, list[float]] = {}
        tok: dict[_Key, list[int]] = {}
        with self._tx() as conn:  # one snapshot for every query behind this window
            groups = conn.execute(agg).all()
            if not groups:
                return []
            outs: dict[_Key, dict[str, OutcomeStats]] = {}
            user_outs: dict[_Key, dict[str, UserSums]] = {}
            for r in conn.execute(joined):
                key0: _Key = (r.version, r.arm, r.slice)
                n_all = int(r.n_all)
                outs.setdefault(key0, {})[r.name] = OutcomeStats(
                    count=n_all, mean=float(r.x_all) / n_all
                )
                if r.users:
                    user_outs.setdefault(key0, {})[r.name] = _sums(r)
            users: dict[_Key, Any] = {
                (r.version, r.arm, r.slice): r for r in conn.execute(per_user)
            }
            segs: dict[_Key, dict[str, dict[str, UserSums]]] = {}
            if by_segment:
                for r in conn.execute(_per_user_outcomes(conds, by_segment=True)):
                    if r.users and r.segment is not None:
                        seg = segs.setdefault((r.version, r.arm, r.slice), {})
                        seg.setdefault(r.segment, {})[r.name] = _sums(r)
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
            u = users.get(key)
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
                    users=int(u.users) if u is not None else 0,
                    unkeyed_requests=n - (int(u.sum_y) if u is not None else 0),
                    user_requests=_sums(u) if u is not None else None,
                    user_outcomes=user_outs.get(key, {}),
                    segments=segs.get(key, {}),
                )
            )
        out.sort(key=lambda w: (w.version, w.arm, w.slice))
        return out


def _sum_of_users(x: Any, y: Any, keyed: Any, *group: Any) -> list[Any]:
    """The six per-user sums over a subquery's rows (one row per user) where `keyed`."""

    def only(v: Any) -> Any:
        return func.coalesce(func.sum(sa.case((keyed, v), else_=0)), 0)

    return [
        *group,
        func.coalesce(func.sum(sa.case((keyed, 1), else_=0)), 0).label("users"),
        only(x).label("sum_x"),
        only(y).label("sum_y"),
        only(x * x).label("sum_xx"),
        only(y * y).label("sum_yy"),
        only(x * y).label("sum_xy"),
    ]


def _per_user_requests(conds: Sequence[Any]) -> Any:
    """Per series: users, and x = failed requests, y = requests, per user (index-only)."""
    p = predictions
    inner = (
        select(
            p.c.version,
            p.c.arm,
            p.c.slice,
            p.c.user_hash,
            func.count().label("req"),
            func.sum(sa.case((p.c.error.is_not(None), 1), else_=0)).label("err"),
        )
        .where(*conds, p.c.user_hash.is_not(None))
        .group_by(p.c.version, p.c.arm, p.c.slice, p.c.user_hash)
        .subquery()
    )
    grp = (inner.c.version, inner.c.arm, inner.c.slice)
    cols = _sum_of_users(inner.c.err, inner.c.req, inner.c.user_hash.is_not(None), *grp)
    return select(*cols).group_by(*grp)


def _per_user_outcomes(conds: Sequence[Any], *, by_segment: bool) -> Any:
    """Per series (and segment) and outcome name: every request with that outcome (the plain
    OutcomeStats), and the six per-user sums over the requests that carry a user hash.

    A request counts once per series however often its id was logged (a client may reuse
    x-request-id), and the unique index leaves one outcome per (request, name): so a count is
    the number of distinct requests with that outcome, never more. Requests without a user
    hash form one group (SQL groups NULLs together); it counts toward n_all and x_all only.
    """
    p, o = predictions, outcomes
    seg = (p.c.segment,) if by_segment else ()
    served = (
        select(p.c.request_id, p.c.version, p.c.arm, p.c.slice, p.c.user_hash, *seg)
        .where(*conds)
        .distinct()
        .subquery()
    )
    sgrp = (served.c.version, served.c.arm, served.c.slice)
    if by_segment:
        sgrp += (served.c.segment,)
    inner = (
        select(
            *sgrp,
            served.c.user_hash,
            o.c.name,
            func.count().label("y"),
            func.sum(o.c.value).label("x"),
        )
        .select_from(served.join(o, o.c.request_id == served.c.request_id))
        .group_by(*sgrp, served.c.user_hash, o.c.name)
        .subquery()
    )
    igrp = (inner.c.version, inner.c.arm, inner.c.slice)
    if by_segment:
        igrp += (inner.c.segment,)
    cols = _sum_of_users(inner.c.x, inner.c.y, inner.c.user_hash.is_not(None), *igrp)
    cols += [
        inner.c.name,
        func.sum(inner.c.y).label("n_all"),
        func.sum(inner.c.x).label("x_all"),
    ]
    return select(*cols).group_by(*igrp, inner.c.name)


def _sums(r: Any) -> UserSums:
    return UserSums(
        users=int(r.users),
        sum_x=float(r.sum_x),
        sum_y=float(r.sum_y),
        sum_xx=float(r.sum_xx),
        sum_yy=float(r.sum_yy),
        sum_xy=float(r.sum_xy),
    )


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
