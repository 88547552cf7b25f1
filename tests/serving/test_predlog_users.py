"""Per-user windows: the log keeps a keyed hash of the user key (never the raw id), and the
reader's per-user sums equal a direct numpy computation over the same requests."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serving.gateway.metrics import GatewayMetrics
from serving.gateway.recorder import PendingRecord, RecordQueue
from serving.predlog import PredictionLog, PredictionLogReader, upgrade
from serving.predlog.userhash import SALT_ENV, SALT_FILE, hash_user, resolve_user_salt
from serving.records import Outcome, PredictionRecord
from serving.routing import BackendKind, Endpoint, RouteTable

T0 = 1_700_000_000.0
RAW_USER = "alice.smith@example.com"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'predictions.db'}"
    pg = request.getfixturevalue("pg_url")
    upgrade(pg)
    return pg


def _table() -> RouteTable:
    ep = Endpoint(version=1, backend=BackendKind.triton, url="http://x", backend_model="m_1")
    return RouteTable(model_id="m", slice="global", generation=1, prod=ep)


def _pending(rid: str, user: str | None) -> PendingRecord:
    return PendingRecord(
        rid, T0, "m", 1, "prod", "global", user, None, _table(), 5.0, None, 200, b"", None
    )


def test_the_log_stores_a_salted_hash_and_never_the_raw_user_id(tmp_path: Path) -> None:
    db_path = tmp_path / "predictions.db"
    sink = PredictionLog(f"sqlite:///{db_path}")
    queue = RecordQueue(sink, GatewayMetrics(), 100, user_salt="s3cret-salt")
    for i in range(3):
        assert queue.put(_pending(f"r{i}", RAW_USER))
    assert queue.put(_pending("anon", None))
    queue.drain()
    sink.close()

    con = sqlite3.connect(db_path)
    try:
        rows = con.execute("SELECT request_id, user_hash FROM predictions ORDER BY id").fetchall()
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    assert RAW_USER not in dump and "alice" not in dump  # in no column of any table
    want = hash_user(RAW_USER, b"s3cret-salt")
    assert rows == [("r0", want), ("r1", want), ("r2", want), ("anon", None)]
    assert len(want) == 32 and int(want, 16) >= 0
    # Keyed: another salt gives another hash, and the bare sha256 of the id is not it.
    assert hash_user(RAW_USER, b"other-salt") != want
    import hashlib

    assert hashlib.sha256(RAW_USER.encode()).hexdigest()[:32] != want


def test_the_salt_comes_from_the_environment_or_a_private_file_in_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(SALT_ENV, raising=False)
    first = resolve_user_salt()
    path = tmp_path / "home" / SALT_FILE
    assert path.exists() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert resolve_user_salt() == first  # every process on the machine shares it
    monkeypatch.setenv(SALT_ENV, "from-env")
    assert resolve_user_salt() == b"from-env"
    assert resolve_user_salt("explicit") == b"explicit"
    with pytest.raises(ValueError, match="must not be empty"):
        resolve_user_salt("")


@pytest.fixture
def traffic(url: str) -> Iterator[dict[str, object]]:
    """Two arms, users with correlated clicks, some requests without a user, two segments,
    and a user who spans both segments."""
    rng = np.random.default_rng(7)
    truth: dict[str, object] = {}
    with PredictionLog(url) as log:
        for arm, n_users, ctr in (("prod", 120, 0.2), ("canary", 40, 0.15)):
            per_user: list[tuple[float, float, float, float]] = []  # clicks, with, reqs, errs
            seg_users: dict[str, dict[str, list[float]]] = {}
            for u in range(n_users):
                uh = hash_user(f"{arm}-user-{u}", b"salt")
                p = rng.beta(2, 2 / ctr - 2)
                reqs = 1 + int(rng.poisson(3))
                clicks = with_o = errs = 0.0
                for j in range(reqs):
                    rid = f"{arm}-{u}-{j}"
                    err = "backend_5xx" if rng.random() < 0.05 else None
                    seg = "de" if (u % 3 == 0 or (u == 1 and j == 0)) else "us"
                    log.submit(
                        PredictionRecord(
                            request_id=rid, ts=T0 + j, model_id="m", version=1, arm=arm,
                            slice="global", user_hash=uh, segment=seg, latency_ms=5.0, error=err,
                        )
                    )  # fmt: skip
                    errs += err is not None
                    if err is None and rng.random() < 0.9:  # some requests get no outcome
                        c = float(rng.random() < p)
                        o = Outcome(request_id=rid, ts=T0 + 9, name="click", value=c)
                        log.submit_outcome(o)
                        clicks, with_o = clicks + c, with_o + 1
                        s = seg_users.setdefault(seg, {}).setdefault(uh, [0.0, 0.0])
                        s[0], s[1] = s[0] + c, s[1] + 1
                per_user.append((clicks, with_o, reqs, errs))
            # Requests without a user: counted in the plain window, in no per-user sum.
            for j in range(7):
                rid = f"{arm}-anon-{j}"
                log.submit(
                    PredictionRecord(
                        request_id=rid, ts=T0 + j, model_id="m", version=1, arm=arm,
                        slice="global", latency_ms=5.0,
                    )
                )  # fmt: skip
                log.submit_outcome(Outcome(request_id=rid, ts=T0 + 9, name="click", value=1.0))
            truth[arm] = (np.array(per_user), seg_users)
        assert log.flush()
    yield truth


def _numpy_sums(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {
        "users": float(x.size),
        "sum_x": float(x.sum()),
        "sum_y": float(y.sum()),
        "sum_xx": float(x @ x),
        "sum_yy": float(y @ y),
        "sum_xy": float(x @ y),
    }


def _as_dict(s: object) -> dict[str, float]:
    return {k: float(v) for k, v in s.model_dump().items()}  # type: ignore[attr-defined]


def test_per_user_sums_match_a_direct_numpy_computation(
    url: str, traffic: dict[str, object]
) -> None:
    with PredictionLogReader(url) as reader:
        windows = {w.arm: w for w in reader.window("m", since_ts=T0 - 1, by_segment=True)}
    for arm in ("prod", "canary"):
        arr, seg_users = traffic[arm]  # type: ignore[misc]
        w = windows[arm]
        clicks, with_o, reqs, errs = arr.T
        assert w.users == arr.shape[0]
        assert w.unkeyed_requests == 7
        assert w.requests == int(reqs.sum()) + 7
        has = with_o > 0  # a user with no click outcome is not in the click ratio
        got = _as_dict(w.user_outcomes["click"])
        assert got == pytest.approx(_numpy_sums(clicks[has], with_o[has]), rel=1e-12)
        assert _as_dict(w.user_requests) == pytest.approx(_numpy_sums(errs, reqs), rel=1e-12)
        # The plain outcome count still counts every request with an outcome, keyed or not.
        assert w.outcomes["click"].count == int(with_o.sum()) + 7
        assert w.outcomes["click"].mean == pytest.approx((clicks.sum() + 7) / (with_o.sum() + 7))
        # Per segment: each user's requests in that segment only (user 1 spans both).
        assert set(w.segments) == {"de", "us"}
        for seg, users in seg_users.items():
            xy = np.array(list(users.values()))
            want = _numpy_sums(xy[:, 0], xy[:, 1])
            assert _as_dict(w.segments[seg]["click"]) == pytest.approx(want, rel=1e-12)


def test_a_window_without_user_hashes_has_no_per_user_figures(url: str) -> None:
    with PredictionLog(url) as log:
        for i in range(5):
            log.submit(
                PredictionRecord(
                    request_id=f"r{i}", ts=T0, model_id="m", version=1, arm="prod",
                    slice="global", latency_ms=1.0,
                )
            )  # fmt: skip
            log.submit_outcome(Outcome(request_id=f"r{i}", ts=T0, name="click", value=1.0))
        assert log.flush()
    with PredictionLogReader(url) as reader:
        [w] = reader.window("m", since_ts=T0 - 1)
    assert (w.users, w.unkeyed_requests, w.user_requests, w.user_outcomes) == (0, 5, None, {})
    assert w.outcomes["click"].count == 5


def test_predlog_0003_adds_the_columns_to_a_log_with_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "predlog_0002")
    con = sqlite3.connect(tmp_path / "old.db")
    con.execute(
        "INSERT INTO predictions (request_id, ts, model_id, version, arm, slice, latency_ms) "
        "VALUES ('old', ?, 'm', 1, 'prod', 'global', 3.0)",
        (T0,),
    )
    con.commit()
    con.close()
    upgrade(url)
    with PredictionLogReader(url) as reader:
        [w] = reader.window("m", since_ts=T0 - 1)
    assert (w.requests, w.users, w.unkeyed_requests) == (1, 0, 1)
